//! One classification of database failures.
//!
//! Every service maps [`DbErrorClass`] to a gRPC code in exactly one place (`crm-platform`). The
//! database's own message can name tables, constraints and values: it is logged, never sent.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::PoolError;

/// A failure of the data layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had from the pool in time, or establishing one failed.
    #[error("database pool: {0}")]
    Pool(#[from] bb8::RunError<PoolError>),
    /// A statement failed.
    #[error("database query: {0}")]
    Query(#[from] DieselError),
    /// A dedicated (non-pooled) connection could not be established.
    #[error("database connection: {0}")]
    Connection(#[from] diesel::ConnectionError),
}

/// What kind of failure a [`DbError`] is, for the caller to choose a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbErrorClass {
    /// A unique constraint was violated; carries the constraint name when known.
    AlreadyExists(Option<String>),
    /// A foreign-key, check, not-null or exclusion constraint was violated.
    FailedPrecondition(Option<String>),
    /// A serialization failure or deadlock: the whole transaction may be retried.
    Aborted,
    /// The database could not be reached, or the pool had no connection in time.
    Unavailable,
    /// `statement_timeout` cancelled a statement.
    DeadlineExceeded,
    /// Row-level security or a privilege check refused the statement.
    PermissionDenied,
    /// A query that expected one row found none.
    NotFound,
    /// Anything else: a bug or an unexpected state.
    Internal,
}

impl DbError {
    /// Classifies the failure.
    #[must_use]
    pub fn class(&self) -> DbErrorClass {
        match self {
            Self::Pool(_) | Self::Connection(_) => DbErrorClass::Unavailable,
            Self::Query(e) => classify_diesel(e),
        }
    }
}

/// Classifies a diesel error. SQLSTATEs that diesel-async does not map to a kind (deadlock,
/// query cancelled, insufficient privilege) are recognised by PostgreSQL's message text, which is
/// stable for the server's default `lc_messages`.
#[must_use]
pub fn classify_diesel(error: &DieselError) -> DbErrorClass {
    match error {
        DieselError::NotFound => DbErrorClass::NotFound,
        DieselError::DatabaseError(kind, info) => {
            let constraint = info.constraint_name().map(str::to_owned);
            let message = info.message();
            match kind {
                DatabaseErrorKind::UniqueViolation => DbErrorClass::AlreadyExists(constraint),
                DatabaseErrorKind::ForeignKeyViolation
                | DatabaseErrorKind::RestrictViolation
                | DatabaseErrorKind::NotNullViolation
                | DatabaseErrorKind::CheckViolation
                | DatabaseErrorKind::ExclusionViolation => {
                    DbErrorClass::FailedPrecondition(constraint)
                }
                DatabaseErrorKind::SerializationFailure => DbErrorClass::Aborted,
                DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection => {
                    DbErrorClass::Unavailable
                }
                DatabaseErrorKind::ReadOnlyTransaction | DatabaseErrorKind::Unknown | _ => {
                    classify_message(message)
                }
            }
        }
        DieselError::BrokenTransactionManager => DbErrorClass::Unavailable,
        DieselError::InvalidCString(_)
        | DieselError::QueryBuilderError(_)
        | DieselError::DeserializationError(_)
        | DieselError::SerializationError(_)
        | DieselError::RollbackErrorOnCommit { .. }
        | DieselError::RollbackTransaction
        | DieselError::AlreadyInTransaction
        | DieselError::NotInTransaction
        | _ => DbErrorClass::Internal,
    }
}

fn classify_message(message: &str) -> DbErrorClass {
    if message.starts_with("deadlock detected") {
        DbErrorClass::Aborted
    } else if message.contains("statement timeout") || message.contains("canceling statement") {
        DbErrorClass::DeadlineExceeded
    } else if message.contains("row-level security") || message.starts_with("permission denied") {
        DbErrorClass::PermissionDenied
    } else if message.contains("connection") && message.contains("closed")
        || message.starts_with("terminating connection")
    {
        DbErrorClass::Unavailable
    } else {
        DbErrorClass::Internal
    }
}
