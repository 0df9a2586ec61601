//! The database schema, as migrations (rusqlite_migration keeps the version in SQLite's
//! `user_version`). Append a migration; never edit one that has shipped.
//!
//! Times are Unix milliseconds. Orders are never deleted and history rows never change:
//! triggers refuse both, so not even a bug in the host can lose an order.

use rusqlite_migration::{M, Migrations};

const STEPS: &[M<'static>] = &[
    M::up(
        r#"
CREATE TABLE installation (
    id         TEXT NOT NULL,              -- random, prefixes idempotency keys
    created_at INTEGER NOT NULL
);
INSERT INTO installation (id, created_at)
    VALUES (lower(hex(randomblob(16))), CAST(unixepoch('subsec') * 1000 AS INTEGER));

-- Ids handed out before rows exist (an order's id is shown to its review rule first).
CREATE TABLE sequences (
    name TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
INSERT INTO sequences (name, next) VALUES ('orders', 1);

CREATE TABLE entity_types (
    name         TEXT PRIMARY KEY,
    display_name TEXT NOT NULL
);

CREATE TABLE resource_types (
    name           TEXT PRIMARY KEY,
    entity_type    TEXT NOT NULL REFERENCES entity_types (name),
    connection     TEXT NOT NULL,
    classification TEXT NOT NULL,
    review_rule    TEXT
);

CREATE TABLE identities (
    id           INTEGER PRIMARY KEY,
    entity_type  TEXT NOT NULL REFERENCES entity_types (name),
    key          TEXT NOT NULL,
    display_name TEXT NOT NULL,
    attributes   TEXT NOT NULL DEFAULT '{}',   -- JSON object
    UNIQUE (entity_type, key)
);

-- Desired state: identity X should have a resource of type T with this content.
-- No row: X should not have one.
CREATE TABLE assignments (
    identity_id   INTEGER NOT NULL REFERENCES identities (id),
    resource_type TEXT NOT NULL REFERENCES resource_types (name),
    content       TEXT NOT NULL,               -- JSON: attributes, entitlements
    valid_from    INTEGER,
    valid_until   INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (identity_id, resource_type)
);
CREATE INDEX assignments_by_type ON assignments (resource_type, identity_id);

-- Actual state: the managed systems as last synchronised.
CREATE TABLE resources (
    resource_type TEXT NOT NULL REFERENCES resource_types (name),
    id            TEXT NOT NULL,               -- the id in the managed system
    owner         TEXT,                        -- owner key reported by the connector
    identity_id   INTEGER REFERENCES identities (id),  -- the owner, when known to the host
    content       TEXT NOT NULL,
    synced_at     INTEGER NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resources_by_owner ON resources (resource_type, identity_id);

CREATE TABLE job_runs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,                 -- complete, compute, fulfil, synchronise
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT NOT NULL,                 -- running, succeeded, failed
    counters    TEXT NOT NULL DEFAULT '{}',    -- JSON
    message     TEXT
);

CREATE TABLE orders (
    id            INTEGER PRIMARY KEY,
    identity_id   INTEGER NOT NULL REFERENCES identities (id),
    resource_type TEXT NOT NULL REFERENCES resource_types (name),
    change_kind   INTEGER NOT NULL CHECK (change_kind BETWEEN 0 AND 2),
    resource_id   TEXT,
    change        TEXT NOT NULL,               -- JSON: what to write
    fingerprint   TEXT NOT NULL,               -- digest of change_kind + change
    state         INTEGER NOT NULL CHECK (state BETWEEN 0 AND 8),
    closed        TEXT,                        -- declined, blocked, superseded
    message       TEXT,                        -- reason of the last state change
    attempts      INTEGER NOT NULL DEFAULT 0,
    valid_until   INTEGER,
    job_run       INTEGER REFERENCES job_runs (id),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX orders_by_state ON orders (state, resource_type);
CREATE INDEX orders_by_slot ON orders (identity_id, resource_type, id);

CREATE TABLE order_history (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders (id),
    at         INTEGER NOT NULL,
    from_state INTEGER CHECK (from_state BETWEEN 0 AND 8),   -- NULL: the order's creation
    to_state   INTEGER NOT NULL CHECK (to_state BETWEEN 0 AND 8),
    event      TEXT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX order_history_by_order ON order_history (order_id, id);

CREATE TRIGGER order_history_is_append_only_update BEFORE UPDATE ON order_history
BEGIN SELECT RAISE(ABORT, 'order history is append-only'); END;
CREATE TRIGGER order_history_is_append_only_delete BEFORE DELETE ON order_history
BEGIN SELECT RAISE(ABORT, 'order history is append-only'); END;
CREATE TRIGGER orders_are_never_deleted BEFORE DELETE ON orders
BEGIN SELECT RAISE(ABORT, 'orders are never deleted'); END;
"#,
    ),
    M::up(
        r#"
-- Operators: who may review and provision by hand, and who is notified.
CREATE TABLE users (
    login                TEXT PRIMARY KEY,
    display_name         TEXT NOT NULL,
    email                TEXT,
    identity_entity_type TEXT,          -- the identity this user is (nobody reviews their own orders)
    identity_key         TEXT,
    created_at           INTEGER NOT NULL
);
CREATE TABLE profiles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE profile_permissions (
    profile TEXT NOT NULL REFERENCES profiles (name) ON DELETE CASCADE,
    path    TEXT NOT NULL,
    PRIMARY KEY (profile, path)
);
CREATE TABLE user_profiles (
    login   TEXT NOT NULL REFERENCES users (login) ON DELETE CASCADE,
    profile TEXT NOT NULL REFERENCES profiles (name) ON DELETE CASCADE,
    PRIMARY KEY (login, profile)
);

-- Notification intents, written in the transaction of the state change that causes them,
-- then routed (grouped per entity type and kind) through the entity type's router.
CREATE TABLE notification_queue (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,              -- manual-orders-transmitted, orders-awaiting-approval, orders-errored
    order_id   INTEGER NOT NULL REFERENCES orders (id),
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    routed_at  INTEGER                     -- NULL: not routed yet
);
CREATE INDEX notification_queue_unrouted ON notification_queue (id) WHERE routed_at IS NULL;

-- The outbox: every notification a router produced, kept forever.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    router      TEXT NOT NULL,
    recipients  TEXT NOT NULL,             -- JSON: [{login, display_name, email}]
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    orders      TEXT NOT NULL              -- JSON: [order id]
);
-- One delivery per notification and configured channel (email, webhook:NAME).
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    outbox_id       INTEGER NOT NULL REFERENCES outbox (id),
    channel         TEXT NOT NULL,
    status          TEXT NOT NULL,         -- pending, sent, failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    sent_at         INTEGER
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TRIGGER outbox_is_kept BEFORE DELETE ON outbox
BEGIN SELECT RAISE(ABORT, 'notifications are never deleted'); END;
CREATE TRIGGER deliveries_are_kept BEFORE DELETE ON deliveries
BEGIN SELECT RAISE(ABORT, 'notifications are never deleted'); END;
"#,
    ),
    M::up(
        r#"
-- Retries: when an Errored order with a transient error is due again.
ALTER TABLE orders ADD COLUMN next_attempt_at INTEGER;
CREATE INDEX orders_retry_due ON orders (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

-- Thresholds: orders of a run held until an operator resumes or cancels the run.
ALTER TABLE orders ADD COLUMN held_run INTEGER REFERENCES job_runs (id);
CREATE INDEX orders_held ON orders (held_run) WHERE held_run IS NOT NULL;
CREATE TABLE job_holds (
    run           INTEGER NOT NULL REFERENCES job_runs (id),
    resource_type TEXT NOT NULL,
    counters      TEXT NOT NULL,           -- JSON: orders per change kind
    limits        TEXT NOT NULL,           -- JSON: effective limit per change kind
    status        TEXT NOT NULL,           -- held, resumed, cancelled
    decided_by    TEXT,
    decided_at    INTEGER,
    PRIMARY KEY (run, resource_type)
);

-- Crash safety: an attempt is recorded before the connector is called; one without an
-- outcome after a restart was interrupted, and its order (still Pending) is sent again.
CREATE TABLE order_attempts (
    id          INTEGER PRIMARY KEY,
    order_id    INTEGER NOT NULL REFERENCES orders (id),
    job_run     INTEGER REFERENCES job_runs (id),
    connection  TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT                       -- the event that ended it, or `interrupted`
);
CREATE INDEX order_attempts_open ON order_attempts (order_id) WHERE finished_at IS NULL;

-- Plugin health: a plugin failing too many calls in a row is disabled until an operator
-- enables it again.
CREATE TABLE plugin_health (
    name                 TEXT PRIMARY KEY,
    calls                INTEGER NOT NULL DEFAULT 0,
    failures             INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    disabled_at          INTEGER,
    last_call_at         INTEGER
);
"#,
    ),
    M::up(
        r#"
-- Look resources up by owner and id in one index: "the owner's resource with the lowest id"
-- without scanning every resource of the type.
DROP INDEX resources_by_owner;
CREATE INDEX resources_by_owner ON resources (resource_type, identity_id, id);
"#,
    ),
    M::up(
        r#"
-- API tokens (created from the CLI) and web sessions: only their sha256 is stored.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    login        TEXT NOT NULL REFERENCES users (login) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER
);
CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    login      TEXT NOT NULL REFERENCES users (login) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#,
    ),
    M::up(
        r#"
-- Work lists and filtered listings page through one state in id order: with the id in the
-- index, a page is a range read instead of a scan of every order below it.
CREATE INDEX orders_by_state_id ON orders (state, id);
"#,
    ),
    M::up(
        r#"
-- Compute walks one entity type's identities in id order, a chunk at a time. The (entity_type,
-- key) unique index made each chunk a scan and sort of the whole type: O(n²) over a run.
CREATE INDEX identities_by_type_id ON identities (entity_type, id);
"#,
    ),
    M::up(
        r#"
-- The job lock: at most one row, the process running a job on this database. Taken in an
-- immediate transaction; its holder refreshes the heartbeat; past expires_at without one, the
-- holder is taken for dead and the next run takes over (marking the dead run interrupted).
CREATE TABLE job_lock (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    token        TEXT NOT NULL,            -- random per acquisition; writes check it
    run          INTEGER REFERENCES job_runs (id),   -- none for resume/cancel
    kind         TEXT NOT NULL,            -- complete, compute, fulfil, synchronise, resume, cancel
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
"#,
    ),
    M::up(
        r#"
-- Work is claimed, not locked: a job run is a plan of phases (its steps, in order), each a set
-- of work units. A worker claims a unit with a lease (owner, expiry) and a fencing token that
-- every claim increments; its writes check the token, so a worker whose lease lapsed and was
-- taken over writes nothing more. A phase's next begins once all its units are done.
DROP TABLE job_lock;
-- A run of the job lock's time still `running` has no units: nobody can finish it.
UPDATE job_runs SET status = 'interrupted', finished_at = CAST(unixepoch('subsec') * 1000 AS INTEGER),
    message = 'interrupted: it was running when the host was upgraded to work units'
    WHERE status = 'running';
ALTER TABLE job_runs ADD COLUMN plan TEXT NOT NULL DEFAULT '[]';   -- JSON: the steps, in order
ALTER TABLE job_runs ADD COLUMN phase INTEGER NOT NULL DEFAULT 0;  -- the step at work
CREATE TABLE work_units (
    id          INTEGER PRIMARY KEY,
    run         INTEGER NOT NULL REFERENCES job_runs (id),
    phase       INTEGER NOT NULL,
    kind        TEXT NOT NULL,       -- synchronise, compute-plan, compute, fulfil-plan, fulfil, notify
    target      TEXT NOT NULL,       -- a resource type or a connection ('' for notify)
    lo          INTEGER,             -- an id range (lo, hi]: identities for compute, orders for fulfil
    hi          INTEGER,
    held        INTEGER NOT NULL DEFAULT 0,   -- compute: a threshold holds this type's new orders
    state       TEXT NOT NULL DEFAULT 'ready', -- ready, claimed, done, given-up (after too many claims)
    owner       TEXT,                -- host, pid and worker of the claim
    fence       INTEGER NOT NULL DEFAULT 0,   -- incremented by every claim
    expires_at  INTEGER,             -- the lease: past it, the claim is taken for dead
    calling     INTEGER NOT NULL DEFAULT 0,   -- fulfil: a batch in flight to the managed system
    claims      INTEGER NOT NULL DEFAULT 0,
    counters    TEXT,                -- JSON, when done
    problems    TEXT,                -- JSON list, when done
    notes       TEXT,                -- JSON list, when done
    started_at  INTEGER,
    finished_at INTEGER
);
CREATE INDEX work_units_open ON work_units (run, phase, state);
ALTER TABLE order_attempts ADD COLUMN unit INTEGER REFERENCES work_units (id);
"#,
    ),
    M::up(
        r#"
-- A read in pages is a chain of synchronise units: each goes on from `cursor` (the connector's
-- cursor of its next page) with the read's `stamp`; `partial`: a page had a resource whose id
-- was unusable, so the read removes nothing when it ends; `pages`: pages read before it.
ALTER TABLE work_units ADD COLUMN cursor TEXT;
ALTER TABLE work_units ADD COLUMN stamp INTEGER;
ALTER TABLE work_units ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;
ALTER TABLE work_units ADD COLUMN pages INTEGER NOT NULL DEFAULT 0;
"#,
    ),
    M::up(
        r#"
-- How fast the host may go to one managed system, shared by every worker and process (see
-- store/pace.rs): no batch goes out before `paused_until` (Unix ms); at most `allowed` batches
-- are in flight (within the configured concurrency); `backoff_ms` the current backoff after
-- transient errors in `failures` batches in a row; `decreased_at` when `allowed` was last
-- halved. No row: full speed.
CREATE TABLE connection_pace (
    connection TEXT PRIMARY KEY,
    paused_until INTEGER NOT NULL DEFAULT 0,
    allowed INTEGER NOT NULL,
    backoff_ms INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    decreased_at INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    updated_at INTEGER NOT NULL
);
"#,
    ),
    M::up(
        r#"
-- A claim finds a phase's ready units per target and kind, and counts the batches in flight per
-- connection, by index lookups however many units a run has: a scan per claim made a run of
-- 1 000 000 orders (10 000 batches) quadratic.
DROP INDEX work_units_open;
CREATE INDEX work_units_open ON work_units (run, phase, state, target, kind);
CREATE INDEX work_units_calling ON work_units (target) WHERE calling = 1;
"#,
    ),
    M::up(
        r#"
-- Desired state changes from the API, feeds and imports. Every effective change is a history
-- row (append-only) whose id becomes the changed row's version: a writer sends back the version
-- it read (If-Match) and a change made meanwhile makes its write fail instead of vanishing.
-- Versions come from one sequence, so a row withdrawn and set again never repeats a version.
-- A removed identity keeps its row (orders name it), hidden by removed_at.
ALTER TABLE identities ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE identities ADD COLUMN removed_at INTEGER;
ALTER TABLE assignments ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE desired_history (
    id            INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,          -- user:rita, import:data.csv
    request       TEXT,                   -- the client's request id, if any
    entity_type   TEXT NOT NULL,
    identity_key  TEXT NOT NULL,
    resource_type TEXT,                   -- NULL: the identity itself
    action        TEXT NOT NULL,          -- created, replaced, removed, withdrawn
    before        TEXT,                   -- JSON
    after         TEXT                    -- JSON
);
CREATE INDEX desired_history_by_identity ON desired_history (entity_type, identity_key, id);
CREATE TRIGGER desired_history_is_append_only_update BEFORE UPDATE ON desired_history
BEGIN SELECT RAISE(ABORT, 'desired-state history is append-only'); END;
CREATE TRIGGER desired_history_is_append_only_delete BEFORE DELETE ON desired_history
BEGIN SELECT RAISE(ABORT, 'desired-state history is append-only'); END;
-- A client's request id with what it asked (a digest) and what it did: a retry under the same
-- id gets the outcome back and changes nothing twice.
CREATE TABLE desired_requests (
    actor   TEXT NOT NULL,
    id      TEXT NOT NULL,
    digest  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    outcome TEXT NOT NULL,                -- JSON
    PRIMARY KEY (actor, id)
);
"#,
    ),
    M::up(
        r#"
-- Subscribers of order state changes (config [events.subscribers]). The outbox is the order
-- history itself: every state change is a history row written in the transaction of the change,
-- so an event can be neither lost nor published for a change that did not happen. A subscriber
-- has a cursor, the last history id it has had (or that its filters passed over), moved on only
-- after the receiver acknowledged; a delivery pass claims the subscriber with a lease first, so
-- two processes do not deliver to one subscriber at once.
CREATE TABLE event_subscribers (
    name            TEXT PRIMARY KEY,
    cursor          INTEGER NOT NULL,
    delivered       INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,   -- in a row; 0 after a success
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_success_at INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL
);
"#,
    ),
    M::up(
        r#"
-- What decided the run's orders (plugins' sha256, resource types, connections), as the host that
-- started it had it: a process whose config differs takes none of its units.
ALTER TABLE job_runs ADD COLUMN decides TEXT;
"#,
    ),
];

pub(super) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(STEPS);

/// The schema version this host writes (the number of migrations).
pub(super) const VERSION: usize = STEPS.len();

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::MIGRATIONS.validate().unwrap();
    }
}
