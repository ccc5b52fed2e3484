//! The server platform of the CRM suite: configuration, telemetry, the server builder, the
//! per-call layer, the error-to-`Status` mapping, request helpers and outbound channels.

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod layers;
pub mod metrics;
pub mod module;
pub mod mutation;
pub mod server;
pub mod streams;
pub mod telemetry;

pub use error::{ApiError, Violation};
pub use server::{GrpcServer, ServerSettings};
