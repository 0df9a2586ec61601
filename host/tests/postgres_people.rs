//! People's actions (review, manual provisioning, users and profiles) through the `provision`
//! binary again, the demo on a database of the tests' PostgreSQL server: the same file as
//! `people.rs` (a test binary named `postgres_…` puts the demo there).

#[path = "people.rs"]
mod people;
