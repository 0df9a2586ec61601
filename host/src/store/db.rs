//! One connection to the host's database, SQLite or PostgreSQL, behind one small interface: the
//! store's modules write their SQL once (SQLite's `?N` placeholders, translated to `$N` for
//! PostgreSQL) and read rows through [`Row::get`], whichever backend answers.
//!
//! Write transactions keep SQLite's rule on both: one writer at a time. SQLite has it from
//! `BEGIN IMMEDIATE`; on PostgreSQL every write transaction first takes one transaction-scoped
//! advisory lock, so that the store's read-then-write steps (a claim counting what is in flight,
//! a phase ending when no unit is open) see exactly what they decide on, on every host. The
//! lock ends with the transaction, and with the session if its host dies; a host paused in the
//! middle of one loses its session to `idle_in_transaction_session_timeout`, so nobody waits
//! for it for long.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{Result, StoreError};

/// The advisory lock key of the store's write transactions on PostgreSQL (any fixed number:
/// "provisio" in ASCII).
const WRITE_LOCK: i64 = 0x7072_6f76_6973_696f;

/// Which database engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (one file, one host).
    Sqlite,
    /// PostgreSQL (several hosts).
    Postgres,
}

impl Backend {
    /// Its name, as `db status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Any integer (and booleans, stored as 0 and 1).
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

/// A value borrowed for binding.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// SQL NULL.
    Null,
    /// Any integer.
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// What can be bound to a placeholder.
pub trait Param {
    /// The value to bind.
    fn value(&self) -> ValueRef<'_>;
}

macro_rules! integer_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> ValueRef<'_> {
                ValueRef::Integer(i64::from(*self))
            }
        }
    )*};
}
integer_param!(i64, i32, i16, i8, u32, u16, u8, bool);

impl Param for usize {
    fn value(&self) -> ValueRef<'_> {
        // No count the store binds comes near i64::MAX; saturate rather than wrap.
        ValueRef::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl Param for u64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl Param for f64 {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Real(*self)
    }
}

impl Param for str {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Text(self)
    }
}

impl Param for [u8] {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> ValueRef<'_> {
        ValueRef::Blob(self)
    }
}

impl Param for Value {
    fn value(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> ValueRef<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> ValueRef<'_> {
        self.as_ref().map_or(ValueRef::Null, Param::value)
    }
}

/// A statement's parameters: `()`, an array, [`params!`] or [`params_from_iter`].
pub trait Params {
    /// The values, in placeholder order.
    fn values(&self) -> Vec<ValueRef<'_>>;
}

impl Params for () {
    fn values(&self) -> Vec<ValueRef<'_>> {
        Vec::new()
    }
}

impl<T: Param, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(Param::value).collect()
    }
}

impl Params for &[&dyn Param] {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.iter().map(|p| p.value()).collect()
    }
}

/// Parameters built at run time (a filter's conditions).
pub struct ParamsFromIter(Vec<Value>);

impl Params for ParamsFromIter {
    fn values(&self) -> Vec<ValueRef<'_>> {
        self.0.iter().map(Param::value).collect()
    }
}

/// Parameters from values built at run time.
pub fn params_from_iter(values: impl IntoIterator<Item = Value>) -> ParamsFromIter {
    ParamsFromIter(values.into_iter().collect())
}

/// A statement's parameters, each anything that is a [`Param`].
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::db::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::db::Param),+] as &[&dyn $crate::store::db::Param] };
}
pub(crate) use params;

/// What can be read from a column.
pub trait FromValue: Sized {
    /// Converts the column's value, or says what it found instead.
    fn from_value(value: Value) -> std::result::Result<Self, String>;
}

impl FromValue for Value {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        Ok(value)
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Integer(i) => Ok(i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! narrow_integer {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> std::result::Result<Self, String> {
                let wide = i64::from_value(value)?;
                <$t>::try_from(wide).map_err(|_| format!("{wide} is out of range for {}", stringify!($t)))
            }
        }
    )*};
}
narrow_integer!(i32, u8, u16, u32, u64, usize);

impl FromValue for bool {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Real(r) => Ok(r),
            // Precision is not at stake: the store's reals are sizes and durations.
            #[allow(clippy::cast_precision_loss)]
            Value::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(t) => Ok(t),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            Value::Text(t) => Ok(t.into_bytes()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A column's index (only positions: the store names columns in its SQL).
pub trait RowIndex {
    /// The position, from 0.
    fn index(&self) -> usize;
}

impl RowIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

/// One row of a result, whichever backend read it.
pub enum Row<'a> {
    /// SQLite's.
    Sqlite(&'a rusqlite::Row<'a>),
    /// PostgreSQL's.
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    /// The value of column `index`, converted.
    pub fn get<I: RowIndex, T: FromValue>(&self, index: I) -> Result<T> {
        let index = index.index();
        let value = match self {
            Row::Sqlite(row) => match row.get_ref(index)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(i) => Value::Integer(i),
                rusqlite::types::ValueRef::Real(r) => Value::Real(r),
                rusqlite::types::ValueRef::Text(t) => Value::Text(
                    String::from_utf8(t.to_vec()).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))?,
                ),
                rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            },
            Row::Postgres(row) => row.try_get::<usize, PgValue>(index)?.0,
        };
        T::from_value(value).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
    }
}

/// Rows read by [`Statement::query`], one at a time.
pub enum Rows<'s> {
    /// SQLite's, read as they are asked for.
    Sqlite(rusqlite::Rows<'s>),
    /// PostgreSQL's, all read, handed out in order.
    Postgres {
        /// Those not yet handed out.
        rest: std::vec::IntoIter<postgres::Row>,
        /// The one handed out last.
        current: Option<postgres::Row>,
    },
}

impl Rows<'_> {
    /// The next row, if any.
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres { rest, current } => {
                *current = rest.next();
                Ok(current.as_ref().map(Row::Postgres))
            }
        }
    }
}

enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<PgConnection>>),
}

/// A PostgreSQL session with its prepared statements.
pub struct PgConnection {
    client: PgClient,
    /// Prepared statements by their SQLite text.
    statements: HashMap<String, postgres::Statement>,
    /// A transaction is open (so a single write needs no transaction of its own).
    in_transaction: bool,
}

/// A connection to the host's database.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// A connection to SQLite.
    pub fn sqlite(conn: rusqlite::Connection) -> Db {
        Db { conn: Connection::Sqlite(conn) }
    }

    /// A connection to PostgreSQL.
    pub fn postgres(client: PgClient) -> Db {
        Db {
            conn: Connection::Postgres(Box::new(RefCell::new(PgConnection {
                client,
                statements: HashMap::new(),
                in_transaction: false,
            }))),
        }
    }

    /// On PostgreSQL, a session that broke (the server restarted, the network dropped, the
    /// session was ended) is replaced by a new one before the next statement, outside a
    /// transaction: the statement that met the break failed (unavailable), the next goes on.
    fn ready(&self) -> Result<()> {
        let Connection::Postgres(pg) = &self.conn else { return Ok(()) };
        let mut pg = pg.borrow_mut();
        if pg.client.is_broken() && !pg.in_transaction {
            tracing::info!("the PostgreSQL session broke; connecting again");
            pg.client = PgClient::connect(&pg.client.config)?;
            pg.statements.clear();
        }
        Ok(())
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self.conn {
            Connection::Sqlite(_) => Backend::Sqlite,
            Connection::Postgres(_) => Backend::Postgres,
        }
    }

    /// SQLite's connection, for tests of what only SQLite has (its busy handler).
    #[cfg(test)]
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.conn {
            Connection::Sqlite(conn) => Some(conn),
            Connection::Postgres(_) => None,
        }
    }

    /// Runs statements with no parameters and no result (schema changes, session settings).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.ready()?;
        match &self.conn {
            Connection::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Connection::Postgres(pg) => pg.borrow().client.batch_execute(sql),
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Runs one write that needs no other writer kept out: it changes one row under a condition
    /// that makes it right whatever commits beside it (a lease renewal, which only extends a
    /// claim still held under its fence). On PostgreSQL it does not wait for the write lock, so
    /// a host paused inside a transaction holds up no lease; on SQLite it is [`Db::execute`].
    pub fn execute_alone<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        match self.prepare_cached(sql)? {
            Statement::Postgres { db, statement, .. } => {
                let changed = db.borrow().client.execute(&statement, owned(&params.values()), false)?;
                Ok(usize::try_from(changed).unwrap_or(usize::MAX))
            }
            mut sqlite => sqlite.execute(params),
        }
    }

    /// The first row of a query, or a not-found error when there is none (see
    /// [`OptionalExtension::optional`]).
    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(&self, sql: &str, params: P, f: F) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement, prepared once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.ready()?;
        match &self.conn {
            Connection::Sqlite(conn) => Ok(Statement::Sqlite(conn.prepare_cached(sql)?)),
            Connection::Postgres(pg) => {
                let mut pg_conn = pg.borrow_mut();
                let statement = match pg_conn.statements.get(sql) {
                    Some(statement) => statement.clone(),
                    None => {
                        let statement = pg_conn.client.prepare(translate(sql)).inspect_err(|e| {
                            // The store's SQL is fixed: a statement PostgreSQL cannot prepare
                            // is a bug, and its text is what a developer needs.
                            tracing::error!(%sql, "PostgreSQL cannot prepare a statement: {e}");
                        })?;
                        pg_conn.statements.insert(sql.to_string(), statement.clone());
                        statement
                    }
                };
                let write = is_write(sql);
                Ok(Statement::Postgres { db: pg, statement, write })
            }
        }
    }

    /// Begins a write transaction: one writer at a time on the whole database (see the module's
    /// documentation). It rolls back unless committed.
    pub fn write_transaction(&self) -> Result<Tx<'_>> {
        self.ready()?;
        match &self.conn {
            Connection::Sqlite(conn) => conn.execute_batch("BEGIN IMMEDIATE")?,
            Connection::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
                pg.in_transaction = true;
            }
        }
        Ok(Tx { db: self, done: false })
    }

    fn end_transaction(&self, sql: &str) -> Result<()> {
        match &self.conn {
            Connection::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Connection::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                pg.in_transaction = false;
                pg.client.batch_execute(sql)
            }
        }
    }
}

/// A transaction: reads and writes through it as through the [`Db`]; rolled back when dropped
/// uncommitted.
pub struct Tx<'a> {
    db: &'a Db,
    done: bool,
}

impl Tx<'_> {
    /// Makes its writes durable.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.db.end_transaction("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A failed rollback leaves nothing to undo: the transaction is gone with the
            // connection, and the next BEGIN says so.
            let _ = self.db.end_transaction("ROLLBACK");
        }
    }
}

/// A prepared statement.
pub enum Statement<'a> {
    /// SQLite's (from its statement cache).
    Sqlite(rusqlite::CachedStatement<'a>),
    /// PostgreSQL's.
    Postgres {
        /// Its connection.
        db: &'a RefCell<PgConnection>,
        /// The prepared statement.
        statement: postgres::Statement,
        /// It changes rows (outside a transaction, it takes the write lock).
        write: bool,
    },
}

impl Statement<'_> {
    /// Runs it; the number of rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        let values = params.values();
        match self {
            Statement::Sqlite(stmt) => {
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(|v| SqliteParam(*v))))?)
            }
            Statement::Postgres { db, statement, write } => {
                let pg = db.borrow();
                let changed = pg.client.execute(statement, owned(&values), *write && !pg.in_transaction)?;
                Ok(usize::try_from(changed).unwrap_or(usize::MAX))
            }
        }
    }

    /// Its rows, one at a time.
    pub fn query<P: Params>(&mut self, params: P) -> Result<Rows<'_>> {
        let values = params.values();
        match self {
            Statement::Sqlite(stmt) => {
                Ok(Rows::Sqlite(stmt.query(rusqlite::params_from_iter(values.into_iter().map(SqliteParam)))?))
            }
            Statement::Postgres { db, statement, write } => {
                let rows = pg_query(db, statement, *write, &values)?;
                Ok(Rows::Postgres { rest: rows.into_iter(), current: None })
            }
        }
    }

    /// Its rows, each converted by `f`.
    pub fn query_map<T, P: Params, F: FnMut(&Row<'_>) -> Result<T>>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut rows = self.query(params)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let item = f(&row);
            let failed = item.is_err();
            out.push(item);
            if failed {
                break;
            }
        }
        Ok(out.into_iter())
    }

    /// Its first row, converted by `f`; a not-found error when there is none.
    pub fn query_row<T, P: Params, F: FnOnce(&Row<'_>) -> Result<T>>(&mut self, params: P, f: F) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => f(&row),
            None => Err(StoreError::Database(super::DatabaseError::NoRows)),
        }
    }
}

fn pg_query(
    db: &RefCell<PgConnection>,
    statement: &postgres::Statement,
    write: bool,
    values: &[ValueRef<'_>],
) -> Result<Vec<postgres::Row>> {
    let pg = db.borrow();
    pg.client.query(statement, owned(values), write && !pg.in_transaction)
}

fn owned(values: &[ValueRef<'_>]) -> Vec<Value> {
    values
        .iter()
        .map(|v| match *v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(t.to_string()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
        .collect()
}

/// A PostgreSQL client on a thread of its own. The `postgres` crate drives its connection with a
/// runtime of its own, which must not be entered from inside another (serve's handlers and
/// tasks run on tokio): every call is sent to the connection's thread and waited for there, so
/// the store can be used from any thread. The thread ends, closing the session, when the
/// client is dropped.
pub struct PgClient {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Where it connected (to connect again).
    config: postgres::Config,
    /// The session is gone (see [`Db::ready`]).
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type Job = Box<dyn FnOnce(&mut postgres::Client) + Send>;

/// Every session's settings: a session idle inside a transaction (its host paused or hung
/// mid-write) is ended by the server, so the write lock it holds is freed; a lock is waited
/// for at most a minute; times are UTC.
const SESSION: &str = "SET idle_in_transaction_session_timeout = '10s'; SET lock_timeout = '60s'; SET TIME ZONE 'UTC'";

impl PgClient {
    /// Connects on a new thread; a failure says where to and why (never the password).
    pub fn connect(config: &postgres::Config) -> Result<PgClient> {
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        let (connected, answer) = std::sync::mpsc::sync_channel(1);
        let (config, config_for_errors) = (config.clone(), config.clone());
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                match config.connect(postgres::NoTls).and_then(|mut client| {
                    client.batch_execute(SESSION)?;
                    Ok(client)
                }) {
                    Ok(mut client) => {
                        let _ = connected.send(Ok(()));
                        for job in inbox {
                            job(&mut client);
                        }
                    }
                    Err(error) => {
                        let _ = connected.send(Err(error));
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start a PostgreSQL connection's thread: {e}")))?;
        match answer.recv() {
            Ok(Ok(())) => Ok(PgClient { jobs, config: config_for_errors, broken: Default::default() }),
            Ok(Err(error)) => {
                Err(StoreError::Unavailable(super::postgres_schema::describe(&config_for_errors, &error)))
            }
            Err(_) => Err(StoreError::Unavailable("the PostgreSQL connection's thread ended while connecting".into())),
        }
    }

    /// Runs `f` with the client on its thread and waits for the result.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let ended = || {
            self.broken.store(true, std::sync::atomic::Ordering::Relaxed);
            StoreError::Unavailable("the PostgreSQL connection's thread has ended".into())
        };
        let broken = self.broken.clone();
        self.jobs
            .send(Box::new(move |client| {
                let answer = f(client);
                // However the session ended (the server ended it, the network dropped it): an
                // error that is not the server's answer to the statement, or the server saying
                // it is shutting the session down (57P..) or that the connection failed (08...).
                let ended = match &answer {
                    Err(error) => error.code().is_none_or(|code| {
                        let code = code.code();
                        code.starts_with("57P") || code.starts_with("08")
                    }),
                    Ok(_) => false,
                };
                if ended || client.is_closed() {
                    broken.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = done.send(answer);
            }))
            .map_err(|_| ended())?;
        let answer = result.recv().map_err(|_| ended())?;
        Ok(answer?)
    }

    fn is_broken(&self) -> bool {
        self.broken.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn batch_execute(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.run(move |client| client.batch_execute(&sql))
    }

    fn prepare(&self, sql: String) -> Result<postgres::Statement> {
        self.run(move |client| client.prepare(&sql))
    }

    /// Runs a statement; `locked`: in a transaction of its own under the write lock.
    fn execute(&self, statement: &postgres::Statement, values: Vec<Value>, locked: bool) -> Result<u64> {
        let statement = statement.clone();
        self.run(move |client| {
            let params: Vec<PgParam<'_>> = values.iter().map(|v| PgParam(v.value())).collect();
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
            if locked {
                under_lock(client, |c| c.execute(&statement, &refs))
            } else {
                client.execute(&statement, &refs)
            }
        })
    }

    /// A statement's rows; `locked` as for [`PgClient::execute`].
    fn query(&self, statement: &postgres::Statement, values: Vec<Value>, locked: bool) -> Result<Vec<postgres::Row>> {
        let statement = statement.clone();
        self.run(move |client| {
            let params: Vec<PgParam<'_>> = values.iter().map(|v| PgParam(v.value())).collect();
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
            if locked { under_lock(client, |c| c.query(&statement, &refs)) } else { client.query(&statement, &refs) }
        })
    }
}

/// Runs one write in a transaction of its own under the write lock (see the module's
/// documentation): a lone UPDATE must not slip between another host's read and write.
fn under_lock<T>(
    client: &mut postgres::Client,
    f: impl FnOnce(&mut postgres::Client) -> std::result::Result<T, postgres::Error>,
) -> std::result::Result<T, postgres::Error> {
    client.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
    match f(client) {
        Ok(value) => {
            client.batch_execute("COMMIT")?;
            Ok(value)
        }
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK");
            Err(error)
        }
    }
}

/// A statement that changes rows (a query that only reads begins with SELECT, or WITH … SELECT
/// with no data-modifying part, which the store does not write).
fn is_write(sql: &str) -> bool {
    let head = sql.trim_start();
    let word: String = head.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    !word.eq_ignore_ascii_case("SELECT") && !word.eq_ignore_ascii_case("VALUES")
}

/// SQLite's placeholders as PostgreSQL's `$N` (outside quoted text): `?N` is `$N`, and a bare
/// `?` is one more than the largest number before it, as SQLite numbers it. SQLite's index hints
/// (`INDEXED BY name`) are left out: PostgreSQL's planner takes none.
fn translate(sql: &str) -> String {
    let sql = without_index_hints(sql);
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quoted: Option<char> = None;
    let mut largest = 0usize;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quoted {
            Some(q) => {
                if c == q {
                    quoted = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quoted = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let number = if digits.is_empty() { largest + 1 } else { digits.parse().unwrap_or(largest + 1) };
                largest = largest.max(number);
                out.push('$');
                out.push_str(&number.to_string());
            }
            None => out.push(c),
        }
    }
    out
}

fn without_index_hints(sql: &str) -> String {
    const HINT: &str = " INDEXED BY ";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(HINT) {
        out.push_str(&rest[..at]);
        let after = &rest[at + HINT.len()..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// A value bound for SQLite, borrowed (no copy of its text).
struct SqliteParam<'a>(ValueRef<'a>);

impl rusqlite::ToSql for SqliteParam<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as Sqlite};
        Ok(ToSqlOutput::Borrowed(match self.0 {
            ValueRef::Null => Sqlite::Null,
            ValueRef::Integer(i) => Sqlite::Integer(i),
            ValueRef::Real(r) => Sqlite::Real(r),
            ValueRef::Text(t) => Sqlite::Text(t.as_bytes()),
            ValueRef::Blob(b) => Sqlite::Blob(b),
        }))
    }
}

/// A value bound for PostgreSQL, converted to the type the server inferred for its placeholder.
#[derive(Debug)]
struct PgParam<'a>(ValueRef<'a>);

impl postgres::types::ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self.0 {
            ValueRef::Null => Ok(postgres::types::IsNull::Yes),
            ValueRef::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                // Precision is not at stake: integers bound where a real is expected are small.
                #[allow(clippy::cast_precision_loss)]
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound as {ty}").into()),
            },
            ValueRef::Real(r) => r.to_sql(ty, out),
            ValueRef::Text(t) => t.to_sql(ty, out),
            ValueRef::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        // Checked per value in to_sql, with a message naming the type.
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column read from PostgreSQL, as one of the store's plain values.
struct PgValue(Value);

impl<'a> postgres::types::FromSql<'a> for PgValue {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        Ok(PgValue(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::OID => Value::Integer(i64::from(u32::from_sql(ty, raw)?)),
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::BYTEA => Value::Blob(Vec::from_sql(ty, raw)?),
            _ => Value::Text(String::from_sql(ty, raw)?),
        }))
    }

    fn from_sql_null(_: &postgres::types::Type) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(PgValue(Value::Null))
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        use postgres::types::{FromSql, Type};
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::INT2 | Type::OID | Type::BOOL | Type::FLOAT8 | Type::FLOAT4 | Type::BYTEA
        ) || <String as FromSql>::accepts(ty)
    }
}

/// `.optional()` on a query's result: no row is `None`, not an error.
pub trait OptionalExtension<T> {
    /// `Ok(None)` when the query found no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(StoreError::Database(super::DatabaseError::NoRows)) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_translated_outside_quoted_text() {
        assert_eq!(
            translate("SELECT ?1, '?2', \"a?\" FROM t WHERE x = ?12"),
            "SELECT $1, '?2', \"a?\" FROM t WHERE x = $12"
        );
        assert_eq!(
            translate("SELECT a FROM t WHERE a IN (?, ?) AND b = ?"),
            "SELECT a FROM t WHERE a IN ($1, $2) AND b = $3"
        );
        assert_eq!(translate("UPDATE t SET a = ?2 WHERE b = ?"), "UPDATE t SET a = $2 WHERE b = $3");
        assert_eq!(
            translate("SELECT i.id FROM identities i INDEXED BY identities_by_type_id WHERE i.x = ?1"),
            "SELECT i.id FROM identities i WHERE i.x = $1"
        );
    }

    #[test]
    fn writes_are_told_from_reads() {
        assert!(!is_write("  select 1"));
        assert!(!is_write("SELECT x FROM t"));
        assert!(is_write("UPDATE t SET x = 1 RETURNING x"));
        assert!(is_write("INSERT INTO t VALUES (1)"));
        assert!(is_write("DELETE FROM t"));
    }
}
