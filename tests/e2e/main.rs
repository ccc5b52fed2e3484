//! End-to-end tests: real PostgreSQL (through crm-testkit), real servers on 127.0.0.1:0, the
//! generated clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm,
    reason = "test code"
)]

mod billing;
mod calls;
mod conformance;
mod core_tenancy;
mod customers;
mod escalation;
mod events;
mod every_rpc;
mod feeds;
mod fieldops;
mod gateway;
mod health;
mod identity;
mod marketing;
mod members;
mod messaging;
mod metrics;
mod migrations;
mod operations;
mod outbox;
mod pagination;
mod platform;
mod prepared;
mod pricing;
mod purge;
mod quotes;
mod records;
mod signatures;
mod support;
mod tenancy;
mod tenant_read;
