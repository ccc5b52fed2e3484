//! The one mapping from domain errors to `tonic::Status` (AIP-193).
//!
//! Every error carries an `ErrorInfo` (reason, domain `<service>.crm`, metadata); validation
//! errors carry `BadRequest` field violations naming every bad field. Database and internal
//! details are logged here and never returned: the client sees a generic message.

use std::collections::HashMap;
use std::time::Duration;

use crm_db::etag::EtagError;
use crm_db::filter::FilterError;
use crm_db::outbox::MalformedCursor;
use crm_db::page::PageError;
use crm_db::{DbError, DbErrorClass};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field path in the request, e.g. `customer.email`.
    pub field: String,
    /// What is wrong, for a developer.
    pub description: String,
    /// Stable machine-readable reason, e.g. `INVALID_EMAIL`.
    pub reason: &'static str,
}

impl Violation {
    /// A new violation.
    #[must_use]
    pub fn new(
        field: impl Into<String>,
        reason: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
            reason,
        }
    }
}

/// An error a handler returns; converted to `Status` by [`ApiError::into_status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is invalid; every bad field is listed.
    #[error("invalid argument")]
    InvalidArgument(Vec<Violation>),
    /// The named resource does not exist (or is not visible to the caller).
    #[error("{resource_type} not found")]
    NotFound {
        /// e.g. `core.crm/Customer`.
        resource_type: &'static str,
        /// The resource name asked for.
        name: String,
    },
    /// A resource with the same identity exists.
    #[error("already exists")]
    AlreadyExists {
        /// What exists.
        resource_type: &'static str,
        /// Constraint or field that collided.
        detail: String,
    },
    /// The caller's credentials are missing, wrong or no longer valid.
    #[error("{message}")]
    Unauthenticated {
        /// Stable reason.
        reason: &'static str,
        /// Developer message.
        message: String,
    },
    /// The caller may not do this.
    #[error("{message}")]
    PermissionDenied {
        /// Stable reason.
        reason: &'static str,
        /// Developer message.
        message: String,
    },
    /// The system is not in a state that allows this.
    #[error("{message}")]
    FailedPrecondition {
        /// Stable reason.
        reason: &'static str,
        /// Developer message.
        message: String,
    },
    /// Concurrency conflict: re-read and retry.
    #[error("{message}")]
    Aborted {
        /// Stable reason.
        reason: &'static str,
        /// Developer message.
        message: String,
    },
    /// Too much load or a quota: retry after the delay.
    #[error("{message}")]
    ResourceExhausted {
        /// Stable reason.
        reason: &'static str,
        /// Developer message.
        message: String,
        /// When to retry.
        retry_after: Option<Duration>,
    },
    /// A dependency is unreachable: retry with backoff.
    #[error("service unavailable")]
    Unavailable {
        /// Stable reason.
        reason: &'static str,
    },
    /// The deadline passed before the work finished.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// A bug or unexpected state; the detail is logged only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A single-field validation error.
    #[must_use]
    pub fn invalid(
        field: impl Into<String>,
        reason: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, reason, description)])
    }

    /// Converts to a `Status` with `ErrorInfo` in `domain` (e.g. `core.crm`).
    #[must_use]
    pub fn into_status(self, domain: &str) -> Status {
        let info = |reason: &str, metadata: HashMap<String, String>| {
            ErrorDetails::with_error_info(reason, domain, metadata)
        };
        match self {
            Self::InvalidArgument(violations) => {
                let mut details = info("INVALID_ARGUMENT", HashMap::new());
                let message = match violations.as_slice() {
                    [one] => format!("{}: {}", one.field, one.description),
                    many => format!("{} fields are invalid", many.len()),
                };
                details.set_bad_request(
                    violations
                        .into_iter()
                        .map(|v| {
                            let mut fv = FieldViolation::new(v.field, v.description);
                            fv.reason = v.reason.to_owned();
                            fv
                        })
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Self::NotFound {
                resource_type,
                name,
            } => {
                let mut details = info(
                    "RESOURCE_NOT_FOUND",
                    HashMap::from([("resource".to_owned(), name.clone())]),
                );
                details.set_resource_info(resource_type, name, "", "not found");
                Status::with_error_details(
                    Code::NotFound,
                    format!("{resource_type} not found"),
                    details,
                )
            }
            Self::AlreadyExists {
                resource_type,
                detail,
            } => Status::with_error_details(
                Code::AlreadyExists,
                format!("{resource_type} already exists"),
                info(
                    "ALREADY_EXISTS",
                    HashMap::from([("constraint".to_owned(), detail)]),
                ),
            ),
            Self::Unauthenticated { reason, message } => Status::with_error_details(
                Code::Unauthenticated,
                message,
                info(reason, HashMap::new()),
            ),
            Self::PermissionDenied { reason, message } => Status::with_error_details(
                Code::PermissionDenied,
                message,
                info(reason, HashMap::new()),
            ),
            Self::FailedPrecondition { reason, message } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                info(reason, HashMap::new()),
            ),
            Self::Aborted { reason, message } => {
                Status::with_error_details(Code::Aborted, message, info(reason, HashMap::new()))
            }
            Self::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                let mut details = info(reason, HashMap::new());
                if let Some(d) = retry_after {
                    details.set_retry_info(Some(d));
                }
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            Self::Unavailable { reason } => Status::with_error_details(
                Code::Unavailable,
                "the service is temporarily unavailable; retry with backoff",
                info(reason, HashMap::new()),
            ),
            Self::DeadlineExceeded => Status::with_error_details(
                Code::DeadlineExceeded,
                "the deadline expired before the operation finished",
                info("DEADLINE_EXCEEDED", HashMap::new()),
            ),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    "internal error",
                    info("INTERNAL", HashMap::new()),
                )
            }
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        let class = error.class();
        match class {
            DbErrorClass::AlreadyExists(constraint) => Self::AlreadyExists {
                resource_type: "resource",
                detail: constraint.unwrap_or_default(),
            },
            DbErrorClass::FailedPrecondition(constraint) => {
                tracing::info!(%error, "constraint refused a write");
                Self::FailedPrecondition {
                    reason: "CONSTRAINT_VIOLATED",
                    message: format!(
                        "the change violates constraint {}",
                        constraint.unwrap_or_else(|| "of the data model".to_owned())
                    ),
                }
            }
            DbErrorClass::Aborted => Self::Aborted {
                reason: "CONCURRENT_TRANSACTION",
                message: "the transaction conflicted with a concurrent one; retry".to_owned(),
            },
            DbErrorClass::Unavailable => {
                tracing::warn!(%error, "database unavailable");
                Self::Unavailable {
                    reason: "DATABASE_UNAVAILABLE",
                }
            }
            DbErrorClass::DeadlineExceeded => Self::DeadlineExceeded,
            DbErrorClass::PermissionDenied => {
                tracing::warn!(%error, "database refused access");
                Self::PermissionDenied {
                    reason: "TENANT_ISOLATION",
                    message: "access to another organization's data is refused".to_owned(),
                }
            }
            DbErrorClass::NotFound => Self::NotFound {
                resource_type: "resource",
                name: String::new(),
            },
            DbErrorClass::Internal => Self::Internal(error.to_string()),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        DbError::from(error).into()
    }
}

impl From<PageError> for ApiError {
    fn from(error: PageError) -> Self {
        match error {
            PageError::NegativePageSize => {
                Self::invalid("page_size", "NEGATIVE_PAGE_SIZE", error.to_string())
            }
            PageError::MalformedToken => {
                Self::invalid("page_token", "INVALID_PAGE_TOKEN", error.to_string())
            }
            PageError::QueryMismatch => {
                Self::invalid("page_token", "PAGE_TOKEN_MISMATCH", error.to_string())
            }
        }
    }
}

impl From<FilterError> for ApiError {
    fn from(error: FilterError) -> Self {
        Self::invalid("filter", "INVALID_FILTER", error.message)
    }
}

impl From<MalformedCursor> for ApiError {
    fn from(error: MalformedCursor) -> Self {
        Self::invalid("cursor", "INVALID_CURSOR", error.to_string())
    }
}

/// Maps an etag check failure: a malformed etag is INVALID_ARGUMENT on `field`, a stale one
/// ABORTED.
#[must_use]
pub fn etag_error(field: &str, error: EtagError) -> ApiError {
    match error {
        EtagError::Malformed => ApiError::invalid(field, "INVALID_ETAG", error.to_string()),
        EtagError::Stale => ApiError::Aborted {
            reason: "ETAG_MISMATCH",
            message: "the resource changed since it was read; re-read it and retry".to_owned(),
        },
    }
}
