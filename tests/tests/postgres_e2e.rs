//! The end-to-end tests of jobs, notifications and events again, every deployment on a database
//! of the tests' PostgreSQL server (a test binary named `postgres_…` puts deployments there; see
//! `provision_tests::Deployment`): the same files, so both backends pass the same tests.

#[path = "events.rs"]
mod events;
#[path = "fulfilment.rs"]
mod fulfilment;
#[path = "notifications.rs"]
mod notifications;
#[path = "several_hosts.rs"]
mod several_hosts;
