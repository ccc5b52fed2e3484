//! The data layer every CRM service shares.
//!
//! Policy, in one place:
//! - services connect as their schema's `<svc>_app` role, which is neither the owner nor a
//!   superuser, so PostgreSQL row-level security really applies;
//! - every tenant query runs inside [`tenant::transaction`], which sets `app.org_id`
//!   transaction-locally before anything else;
//! - database errors are classified once ([`DbError::class`]); their text is logged by the caller
//!   and never returned to a client.

pub mod chain;
pub mod embedded;
pub mod error;
pub mod etag;
pub mod filter;
pub mod fixed;
pub mod id;
pub mod idempotency;
pub mod migrate;
pub mod notify;
pub mod outbox;
pub mod page;
pub mod pool;
pub mod purge;
pub mod schema;
pub mod tenant;

pub use diesel_async::AsyncPgConnection;
pub use error::{DbError, DbErrorClass};
pub use id::OrgId;
pub use pool::{DbPool, PoolSettings};
