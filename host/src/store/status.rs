//! What the database is: its backend, where, its schema version against the host's, and how
//! much it holds (`provision db status`), read without changing it.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{Result, schema};

/// A database as `provision db status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseStatus {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The file, or PostgreSQL's URL.
    pub location: String,
    /// Whether it exists yet (the first `db migrate`, import or job creates it; on PostgreSQL,
    /// the schema in a database that exists).
    pub exists: bool,
    /// Its schema version: the migrations applied.
    pub version: usize,
    /// The version this host writes.
    pub latest: usize,
    /// Migrations this host would apply (`provision db migrate`, or any command that writes).
    pub pending: usize,
    /// A database written by a newer host than this one, which this one must not use.
    pub newer: bool,
    /// The file's size in bytes (with its write-ahead log), or PostgreSQL's database size.
    pub bytes: u64,
    /// Rows of the main tables (none before the schema has them).
    pub counts: Option<Counts>,
}

/// How much the database holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Identities.
    pub identities: i64,
    /// Assignments.
    pub assignments: i64,
    /// Orders.
    pub orders: i64,
    /// Order history rows.
    pub history: i64,
    /// Job runs.
    pub job_runs: i64,
}

/// The status of the config's database, read without changing it (nothing is created or
/// migrated).
pub fn status(database: &crate::config::Database) -> Result<DatabaseStatus> {
    match database {
        crate::config::Database::Sqlite(path) => sqlite_status(path),
        crate::config::Database::Postgres(pg) => postgres_status(&pg.url, &super::Location::of(database)?),
    }
}

/// Rows of the main tables.
fn counts(db: &super::db::Db) -> Result<Counts> {
    db.query_row(
        "SELECT (SELECT COUNT(*) FROM identities), (SELECT COUNT(*) FROM assignments),
            (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM order_history), (SELECT COUNT(*) FROM job_runs)",
        (),
        |r| {
            Ok(Counts {
                identities: r.get(0)?,
                assignments: r.get(1)?,
                orders: r.get(2)?,
                history: r.get(3)?,
                job_runs: r.get(4)?,
            })
        },
    )
}

fn postgres_status(url: &str, location: &super::Location) -> Result<DatabaseStatus> {
    let super::Location::Postgres(config) = location else {
        return Err(super::StoreError::Unavailable("not a PostgreSQL database".into()));
    };
    let db = super::postgres_schema::connect(config)?;
    db.execute_batch("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")?;
    let latest = super::postgres_schema::VERSION;
    let found = super::postgres_schema::version(&db)?;
    let bytes: i64 = db.query_row("SELECT pg_database_size(current_database())", (), |r| r.get(0))?;
    let counts = found.map(|_| counts(&db)).transpose()?;
    let version = found.unwrap_or(0);
    Ok(DatabaseStatus {
        backend: "postgres",
        location: url.to_string(),
        exists: found.is_some(),
        version,
        latest,
        pending: if found.is_some() { latest.saturating_sub(version) } else { latest },
        newer: version > latest,
        bytes: u64::try_from(bytes).unwrap_or(0),
        counts,
    })
}

fn sqlite_status(path: &Path) -> Result<DatabaseStatus> {
    let location = path.display().to_string();
    let latest = schema::VERSION;
    if !path.exists() {
        return Ok(DatabaseStatus {
            backend: "sqlite",
            location,
            exists: false,
            version: 0,
            latest,
            pending: latest,
            newer: false,
            bytes: 0,
            counts: None,
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // rusqlite_migration keeps the version in SQLite's user_version.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    let wal = path.with_extension(format!("{}-wal", path.extension().and_then(|e| e.to_str()).unwrap_or_default()));
    let bytes = [path.to_path_buf(), wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    // The tables counted exist from the first migration on.
    let db = super::db::Db::sqlite(conn);
    let counts = (version >= 1).then(|| counts(&db)).transpose()?;
    Ok(DatabaseStatus {
        backend: "sqlite",
        location,
        exists: true,
        version,
        latest,
        pending: latest.saturating_sub(version),
        newer: version > latest,
        bytes,
        counts,
    })
}
