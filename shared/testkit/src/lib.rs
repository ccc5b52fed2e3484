//! Test harness of the CRM suite, for tests against real components only.
//!
//! - [`postgres`]: finds a PostgreSQL (`TEST_DATABASE_URL`, else the local server, else a
//!   private cluster from the installed binaries), migrates a template database once per test
//!   binary, and clones a fresh database per test. Tests connect as the `_app` roles, so
//!   row-level security is really enforced.
//! - [`server`]: the real server on `127.0.0.1:0` with a connected channel and a test signer.
//! - [`proxy`]: a TCP proxy in front of PostgreSQL that a test can cut and restore.

pub mod postgres;
pub mod proxy;
pub mod server;

pub use postgres::TestDb;
pub use server::TestServer;
