//! Persistence on SQLite (rusqlite, bundled), in WAL mode: identities and desired assignments,
//! synchronised resources, orders and their history, job runs.
//!
//! **Architecture invariant**: every state change is written together with its history row, in
//! one transaction, after [`crate::machine::apply`] allowed it. Orders are never deleted and
//! history rows never change (the schema's triggers refuse it).
//!
//! Hot paths take slices and write them in one transaction with cached prepared statements: one
//! transaction per write caps SQLite at a few thousand writes per second, one per batch reaches
//! well over a hundred thousand.

mod attempts;
mod changes;
pub(crate) mod db;
mod desired;
mod events;
mod health;
mod jobs;
mod notifications;
mod operators;
mod orders;
mod pace;
mod postgres_schema;
mod resources;
mod schema;
mod server_clock;
mod status;
#[cfg(test)]
mod tests;
mod tokens;
mod units;

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

pub use db::Backend;
use db::{Db, OptionalExtension, Tx, params};

use crate::config::Config;
use crate::machine::Refused;
use crate::model::{Clock, SystemClock};

pub use attempts::Attempt;
pub use changes::{Applied, AssignmentRecord, DesiredBatch, DesiredChange, DesiredRecord, Expect, IdentityRecord};
pub use desired::{ActualResource, Assignment, Identity, IdentitySlot, IdentityView, Slot, SlotOrder};
pub use events::{SubscriberClaim, SubscriberState};
pub use health::Health;
pub use jobs::{Hold, JobRun};
pub use notifications::{Delivery, NewNotification, Notification, Queued, Recipient};
pub use operators::{Profile, User, UserSpec};
pub use orders::{AuditRow, NewOrder, OrderFilter, Transition};
pub use pace::{BACKOFF_MAX_MS, BACKOFF_MIN_MS, BatchOutcome, DEFER_AFTER_MS, MAX_PAUSE_MS, Pace};
pub use status::{Counts, DatabaseStatus, status};
pub use tokens::{Session, TokenInfo, random_secret};
pub use units::{
    Claim, Fence, MAX_CLAIMS, PhaseProgress, ReadOn, Renewer, RunEnd, Running, Started, Unit, UnitKind, UnitResults,
    UnitSpec,
};

/// What can go wrong in the store. Callers decide by [`StoreError::kind`], never by the text,
/// and no variant names the backend's own types: a second backend maps its errors to the same
/// kinds.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed (its own message; [`StoreError::kind`] says which kind).
    #[error("database error: {0}")]
    Database(DatabaseError),
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database schema: {0}")]
    Migration(String),
    /// The database cannot be reached or opened (a missing directory, a schema too old to read).
    #[error("{0}")]
    Unavailable(String),
    /// The state machine refused a transition; the order is untouched.
    #[error("order {order}: {refused}")]
    Refused {
        /// The order.
        order: i64,
        /// Why.
        refused: Refused,
    },
    /// No order has this id.
    #[error("there is no order {0}")]
    NoSuchOrder(i64),
    /// Something named does not exist (a user, a run, a token, an identity): the text names it.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts what is stored (a duplicate, a reference another row holds).
    #[error("{0}")]
    Conflict(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Input that refers to what the store does not know (an entity type, an identity) or is
    /// otherwise unusable; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// Data over a limit of `crate::limits` (an identity, an assignment); nothing was written.
    #[error("{0}")]
    OverLimit(String),
    /// A text over its limit (`crate::limits`); nothing was written.
    #[error(transparent)]
    TooLong(#[from] crate::limits::TooLong),
    /// A change's precondition failed: the row is not at the version the writer read (or
    /// exists, or not, against what it expected); nothing was written.
    #[error("{0}")]
    Stale(String),
    /// The change at `index` of a request failed (the whole request wrote nothing).
    #[error("changes[{index}]: {source}")]
    AtChange {
        /// Its place in the request, from 0.
        index: usize,
        /// What went wrong with it.
        source: Box<StoreError>,
    },
    /// This worker's lease on its work unit lapsed (it was paused or stalled past the expiry)
    /// or was taken over: it may write nothing more; the unit's next claimant redoes it.
    #[error("this worker's lease on its work unit lapsed or was taken over; nothing more was written")]
    LeaseLost,
}

/// The kinds of [`StoreError`] callers match on, the same for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// What was asked for does not exist.
    NotFound,
    /// The change conflicts with what is stored (or with another writer): nothing changed.
    Conflict,
    /// The state machine (or a limit) refused it: nothing changed.
    Refused,
    /// The database is busy, locked or unreachable: the same request may succeed later.
    Unavailable,
    /// This worker lost its claim: it must stop the unit.
    LeaseLost,
    /// A precondition on a row's version failed: read it again, then decide.
    Stale,
    /// Anything else: a bug or a damaged database.
    Internal,
}

impl StoreError {
    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Database(error) => error.kind(),
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::Refused { .. } | StoreError::Invalid(_) | StoreError::OverLimit(_) | StoreError::TooLong(_) => {
                ErrorKind::Refused
            }
            StoreError::NoSuchOrder(_) | StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::LeaseLost => ErrorKind::LeaseLost,
            StoreError::Stale(_) => ErrorKind::Stale,
            StoreError::AtChange { source, .. } => source.kind(),
            StoreError::Migration(_) | StoreError::Corrupt(_) => ErrorKind::Internal,
        }
    }
}

/// An error of the database engine, kept opaque so that no caller depends on the backend.
#[derive(Debug)]
pub enum DatabaseError {
    /// SQLite's.
    Sqlite(rusqlite::Error),
    /// PostgreSQL's.
    Postgres(postgres::Error),
    /// A query for one row found none.
    NoRows,
}

impl DatabaseError {
    fn kind(&self) -> ErrorKind {
        match self {
            DatabaseError::Sqlite(error) => match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => ErrorKind::Unavailable,
                Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly) => ErrorKind::Unavailable,
                Some(rusqlite::ErrorCode::ConstraintViolation) => ErrorKind::Conflict,
                _ if matches!(error, rusqlite::Error::QueryReturnedNoRows) => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
            DatabaseError::Postgres(error) => match error.code().map(postgres::error::SqlState::code) {
                // Integrity constraints (unique, foreign key, check, not null).
                Some(code) if code.starts_with("23") => ErrorKind::Conflict,
                // Serialization failures and deadlocks, connection failures, the server
                // shutting down or out of resources, a read-only server, a session ended
                // for idling in a transaction: the same request may succeed later.
                Some(code)
                    if ["40", "08", "57", "53"].iter().any(|class| code.starts_with(class))
                        || code == "25006"
                        || code == "25P03" =>
                {
                    ErrorKind::Unavailable
                }
                // The session ended, or the network failed under it.
                None if error.is_closed()
                    || std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>()) =>
                {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Internal,
            },
            DatabaseError::NoRows => ErrorKind::NotFound,
        }
    }
}

impl std::fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseError::Sqlite(error) => error.fmt(f),
            DatabaseError::Postgres(error) => match error.as_db_error() {
                // The server's own words, without the client's "db error: ERROR:" wrapping.
                Some(db) => f.write_str(db.message()),
                None => error.fmt(f),
            },
            DatabaseError::NoRows => f.write_str("the query found no row"),
        }
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DatabaseError::Sqlite(error) => error.source(),
            DatabaseError::Postgres(error) => error.source(),
            DatabaseError::NoRows => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error {
            rusqlite::Error::QueryReturnedNoRows => StoreError::Database(DatabaseError::NoRows),
            error => StoreError::Database(DatabaseError::Sqlite(error)),
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        StoreError::Database(DatabaseError::Postgres(error))
    }
}

impl From<rusqlite_migration::Error> for StoreError {
    fn from(error: rusqlite_migration::Error) -> Self {
        StoreError::Migration(error.to_string())
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a store's database is.
#[derive(Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// SQLite in memory (tests, dry runs): nothing to share.
    Memory,
    /// A PostgreSQL database, shared by several hosts.
    Postgres(Box<postgres::Config>),
}

impl Location {
    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        if self.is_postgres() { "postgres" } else { "sqlite" }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }

    /// Where the config's `[database]` is, its password read (from its environment variable or
    /// file) now.
    pub fn of(database: &crate::config::Database) -> Result<Location> {
        match database {
            crate::config::Database::Sqlite(path) => Ok(Location::Sqlite(path.clone())),
            crate::config::Database::Postgres(pg) => {
                let mut settings = pg.settings.clone();
                if let Some(secret) = &pg.password {
                    let password =
                        secret.resolve().map_err(|e| StoreError::Unavailable(format!("database.password: {e}")))?;
                    settings.password(password);
                }
                if settings.get_application_name().is_none() {
                    settings.application_name("provision");
                }
                Ok(Location::Postgres(Box::new(settings)))
            }
        }
    }
}

/// A connection to the host's database.
pub struct Store {
    conn: Db,
    location: Location,
    installation: String,
    /// While this connection works on a unit: its claim's fencing token, which every write
    /// transaction checks (see [`Store::write_tx`]).
    fence: Option<Fence>,
    /// Where every time the store writes or compares comes from.
    clock: Arc<dyn Clock>,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create the database directory {}: {e}", dir.display()))
            })?;
        }
        Store::from_connection(Connection::open(path)?, Location::Sqlite(path.to_path_buf()))
    }

    /// Opens the config's database and brings its schema up to date.
    pub fn connect(database: &crate::config::Database) -> Result<Store> {
        Store::open_at(&Location::of(database)?)
    }

    /// Opens the config's database read-only (see [`Store::open_read_only_at`]).
    pub fn connect_read_only(database: &crate::config::Database) -> Result<Store> {
        Store::open_read_only_at(&Location::of(database)?)
    }

    /// Opens the database at `location` and brings its schema up to date.
    pub fn open_at(location: &Location) -> Result<Store> {
        match location {
            Location::Sqlite(path) => Store::open(path),
            Location::Memory => Store::open_in_memory(),
            Location::Postgres(config) => {
                let db = postgres_schema::connect(config)?;
                postgres_schema::migrate(&db)?;
                Store::from_db(db, location.clone())
            }
        }
    }

    /// Opens the database at `location` without ever writing to it (for simulations and
    /// listings): no migration, and the database refuses any write.
    pub fn open_read_only_at(location: &Location) -> Result<Store> {
        match location {
            Location::Sqlite(path) => Store::open_read_only(path),
            Location::Memory => Err(StoreError::Unavailable("an in-memory database has no second connection".into())),
            Location::Postgres(config) => {
                let db = postgres_schema::connect(config)?;
                db.execute_batch("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
                postgres_schema::check_current(&db)?;
                Store::from_db(db, location.clone())
            }
        }
    }

    /// Opens an existing SQLite database without ever writing to it (for simulations): no
    /// migration, and SQLite refuses any write.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(64);
        let current = schema::MIGRATIONS.current_version(&conn)?;
        if current
            != rusqlite_migration::SchemaVersion::Inside(
                std::num::NonZeroUsize::new(schema::VERSION).expect("versions start at 1"),
            )
        {
            return Err(StoreError::Unavailable(format!(
                "the database schema is {current}, this host needs version {}: run a job (not a simulation) first",
                schema::VERSION
            )));
        }
        Store::from_db(Db::sqlite(conn), Location::Sqlite(path.to_path_buf()))
    }

    /// An in-memory database, for tests and dry runs.
    pub fn open_in_memory() -> Result<Store> {
        Store::from_connection(Connection::open_in_memory()?, Location::Memory)
    }

    fn from_connection(mut conn: Connection, location: Location) -> Result<Store> {
        // WAL lets readers (listings, the web pages) run beside a job; NORMAL sync is durable
        // across process crashes, which is what an order must survive.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::MIGRATIONS.to_latest(&mut conn)?;
        Store::from_db(Db::sqlite(conn), location)
    }

    fn from_db(conn: Db, location: Location) -> Result<Store> {
        let installation = conn.query_row("SELECT id FROM installation", (), |row| row.get(0))?;
        // On PostgreSQL every host reads the server's clock (a sibling or reader shares its
        // host's: see `Host::sibling`, `Store::reader`).
        let clock: Arc<dyn Clock> = match &location {
            Location::Postgres(config) => Arc::new(server_clock::ServerClock::new((**config).clone())),
            Location::Sqlite(_) | Location::Memory => Arc::new(SystemClock),
        };
        Ok(Store { conn, location, installation, fence: None, clock })
    }

    /// Where this store's database is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Which engine the database is.
    pub fn backend(&self) -> Backend {
        self.conn.backend()
    }

    /// A second, read-only connection to the same database, for reading beside this one's
    /// writes (it sees what was committed when each of its reads began). None for an
    /// in-memory database, which has no file to share.
    pub fn reader(&self) -> Result<Option<Store>> {
        if matches!(self.location, Location::Memory) {
            return Ok(None);
        }
        let mut reader = Store::open_read_only_at(&self.location)?;
        reader.clock = self.clock.clone();
        Ok(Some(reader))
    }

    /// Reads the time from `clock` from now on (tests move a manual clock instead of sleeping).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// The time by this store's clock, in Unix milliseconds: what callers pass to the store's
    /// functions that take a time (claims, a batch's end), so one clock rules every decision.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The clock this store reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// A connection of its own for renewing leases beside this one's work (none in memory).
    pub fn renewer(&self) -> Result<Option<Renewer>> {
        let conn = match &self.location {
            Location::Memory => return Ok(None),
            Location::Sqlite(path) => {
                let conn = Connection::open(path)?;
                conn.busy_timeout(std::time::Duration::from_secs(2))?;
                Db::sqlite(conn)
            }
            Location::Postgres(config) => postgres_schema::connect(config)?,
        };
        Ok(Some(Renewer { conn, clock: self.clock.clone() }))
    }

    /// The SQLite database file; none in memory or on PostgreSQL.
    pub fn path(&self) -> Option<std::path::PathBuf> {
        match &self.location {
            Location::Sqlite(path) => Some(path.clone()),
            Location::Memory | Location::Postgres(_) => None,
        }
    }

    /// Begins a write transaction: it waits for the database's one writer up front (SQLite's
    /// IMMEDIATE; the write lock on PostgreSQL, see `db`), so that what it reads cannot go stale
    /// before its writes, and so that the check below holds until it commits. While this connection works on a unit, the unit must still be claimed under its
    /// fence and unexpired: a worker paused past its lease, or taken over, fails here.
    fn write_tx(&mut self) -> Result<Tx<'_>> {
        let tx = self.conn.write_transaction()?;
        if let Some(fence) = self.fence
            && !units::holds(&tx, fence, self.clock.now_ms())?
        {
            return Err(StoreError::LeaseLost);
        }
        Ok(tx)
    }

    /// The random id of this database, prefix of every idempotency key it hands out.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// Writes the config's entity types and resource types, so orders can refer to them.
    /// Types removed from the config are kept: old orders still refer to them. While a job run
    /// is unfinished, types it knows are left as they are (only new ones are added): the run's
    /// workers read them (a review rule sees the classification), and a host opening with
    /// another config must not change them under it; the next run to start writes its own.
    pub fn sync_catalog(&mut self, config: &Config) -> Result<()> {
        let tx = self.write_tx()?;
        let unfinished = units::running_run_exists(&tx)?;
        write_catalog(&tx, config, !unfinished)?;
        tx.commit()?;
        Ok(())
    }

    /// Reserves `count` consecutive order ids. Ids are handed out before the rows exist because
    /// a new order is shown to its review rule before it is stored; a crash in between only
    /// leaves a gap.
    pub fn allocate_order_ids(&mut self, count: usize) -> Result<i64> {
        let count = i64::try_from(count).map_err(|_| StoreError::OverLimit("too many order ids at once".into()))?;
        let first = self.conn.query_row(
            "UPDATE sequences SET next = next + ?1 WHERE name = 'orders' RETURNING next - ?1",
            [count],
            |row| row.get(0),
        )?;
        Ok(first)
    }

    /// The number of orders in each state.
    pub fn count_by_state(&self) -> Result<Vec<(crate::model::ProvisioningState, i64)>> {
        let mut stmt = self.conn.prepare_cached("SELECT state, COUNT(*) FROM orders GROUP BY state ORDER BY state")?;
        let rows = stmt.query_map((), |row| Ok((row.get::<_, u8>(0)?, row.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (state, count) = row?;
            let state = crate::model::ProvisioningState::from_number(state)
                .ok_or_else(|| StoreError::Corrupt(format!("order state {state}")))?;
            counts.push((state, count));
        }
        Ok(counts)
    }

    /// The entity type of a resource type, if the store knows the resource type.
    pub fn entity_type_of(&self, resource_type: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT entity_type FROM resource_types WHERE name = ?1", [resource_type], |row| row.get(0))
            .optional()
    }
}

/// Writes the config's types; `update` changes the ones already there too.
fn write_catalog(tx: &Db, config: &Config, update: bool) -> Result<()> {
    let (entity_sql, resource_sql) = if update {
        (
            "INSERT INTO entity_types (name, display_name) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET display_name = excluded.display_name",
            "INSERT INTO resource_types (name, entity_type, connection, classification, review_rule)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET entity_type = excluded.entity_type,
                connection = excluded.connection, classification = excluded.classification,
                review_rule = excluded.review_rule",
        )
    } else {
        (
            "INSERT INTO entity_types (name, display_name) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            "INSERT INTO resource_types (name, entity_type, connection, classification, review_rule)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
        )
    };
    for et in config.entity_types.values() {
        tx.execute(entity_sql, params![et.name, et.display_name])?;
    }
    for rt in config.resource_types.values() {
        tx.execute(resource_sql, params![rt.name, rt.entity_type, rt.connection, rt.classification, rt.review_rule])?;
    }
    Ok(())
}

fn json<T: serde::Serialize>(value: &T) -> String {
    // The stored types serialise to JSON without fail (string keys, no floats).
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
