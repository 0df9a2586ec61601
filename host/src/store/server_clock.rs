//! The database server's clock, for every host on PostgreSQL: leases, expiries and every other
//! time the store decides on come from one clock, whichever host reads it, so a host whose own
//! clock is off (or jumps) neither keeps a lease past its end nor takes one over early.
//!
//! The server's time is read on a connection of the clock's own, then advanced by this
//! process's monotonic clock (which a wall-clock jump does not move, and which keeps counting
//! while the process is stopped), and read again every [`RESYNC`], so the drift between two
//! crystals stays far below any lease.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::db::Db;

/// How often the server's time is read again.
const RESYNC: Duration = Duration::from_secs(30);

/// The server's clock (see the module's documentation).
pub struct ServerClock {
    config: postgres::Config,
    state: Mutex<State>,
}

struct State {
    conn: Option<Db>,
    /// The server's time at `at`, Unix ms.
    base: Option<(i64, Instant)>,
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerClock")
    }
}

impl ServerClock {
    /// A clock that connects on first use.
    pub fn new(config: postgres::Config) -> ServerClock {
        ServerClock { config, state: Mutex::new(State { conn: None, base: None }) }
    }

    fn read_server(&self, state: &mut State) -> Option<i64> {
        if state.conn.is_none() {
            state.conn = super::postgres_schema::connect(&self.config).ok();
        }
        let conn = state.conn.as_ref()?;
        let read = conn.query_row("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT", (), |r| r.get(0));
        match read {
            Ok(now) => Some(now),
            Err(error) => {
                tracing::warn!("cannot read the database server's clock (this host's meanwhile): {error}");
                state.conn = None;
                None
            }
        }
    }
}

impl crate::model::Clock for ServerClock {
    fn now_ms(&self) -> i64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stale = state.base.is_none_or(|(_, at)| at.elapsed() >= RESYNC);
        if stale && let Some(server) = self.read_server(&mut state) {
            state.base = Some((server, Instant::now()));
        }
        match state.base {
            Some((server, at)) => {
                server.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX / 2))
            }
            // The server cannot be reached: nothing can be written either, so this host's own
            // clock decides nothing lasting.
            None => crate::model::now_ms(),
        }
    }
}
