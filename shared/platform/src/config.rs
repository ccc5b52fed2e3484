//! Configuration from flags and environment (clap). No global settings: every value is
//! passed down explicitly, so tests build their own.

use std::net::SocketAddr;
use std::time::Duration;

use crate::server::ServerSettings;

/// Serving options shared by every command that serves.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "CRM_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Calls admitted at once before load shedding.
    #[arg(long, env = "CRM_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Largest message in bytes.
    #[arg(long, env = "CRM_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// HTTP/2 streams one connection may have open at once; a client past it waits on its own
    /// side instead of costing the server a refusal (under a 10x overload, 32 per connection
    /// kept 0.73 of peak goodput against 0.48 at 1024, where most calls were refused).
    #[arg(long, env = "CRM_MAX_STREAMS_PER_CONNECTION", default_value_t = 128)]
    pub max_streams_per_connection: u32,
    /// Seconds in-flight calls get to finish on shutdown.
    #[arg(long, env = "CRM_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// Token issuer to accept.
    #[arg(long, env = "CRM_TOKEN_ISSUER", default_value = "crm-identity")]
    pub token_issuer: String,
    /// Token audience of this deployment.
    #[arg(long, env = "CRM_TOKEN_AUDIENCE", default_value = "crm")]
    pub token_audience: String,
    /// Secret that signs page tokens. Required by `crm serve` (every replica must share it);
    /// `crm up` without it keeps one in its data directory.
    #[arg(long, env = "CRM_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,
    /// Connections per service pool.
    #[arg(long, env = "CRM_POOL_SIZE", default_value_t = 8)]
    pub pool_size: u32,
    /// Hours an idempotency key (a `request_id`) is remembered.
    #[arg(long, env = "CRM_RETAIN_IDEMPOTENCY_HOURS", default_value_t = 24)]
    pub retain_idempotency_hours: u64,
    /// Days outbox events are kept for consumers to resume from.
    #[arg(long, env = "CRM_RETAIN_OUTBOX_DAYS", default_value_t = 7)]
    pub retain_outbox_days: u64,
    /// Hours expired revocations, codes, reset tokens and idle throttles are kept.
    #[arg(long, env = "CRM_RETAIN_EXPIRED_HOURS", default_value_t = 24)]
    pub retain_expired_hours: u64,
    /// Minutes between purge runs.
    #[arg(long, env = "CRM_PURGE_INTERVAL_MINUTES", default_value_t = 60)]
    pub purge_interval_minutes: u64,
    /// Identity: sign-in attempts per minute per account (burst of the same size).
    #[arg(long, env = "CRM_LOGIN_RATE_PER_ACCOUNT", default_value_t = 20)]
    pub login_rate_per_account: u32,
    /// Identity: sign-in, refresh and reset attempts per minute per client address (raise it
    /// when many users share one address, e.g. behind a NAT).
    #[arg(long, env = "CRM_CREDENTIAL_RATE_PER_ADDRESS", default_value_t = 120)]
    pub credential_rate_per_address: u32,
    /// Identity: password hashes computed at once (each takes one core for about 15 ms); a
    /// sign-in finding none free is refused at once with RESOURCE_EXHAUSTED. Default: the
    /// number of cores.
    #[arg(long, env = "CRM_PASSWORD_HASH_SLOTS")]
    pub password_hash_slots: Option<usize>,
}

impl ServeArgs {
    /// The retention these options give.
    #[must_use]
    pub fn retention(&self) -> crm_db::purge::Retention {
        let hours = |h: u64| Duration::from_secs(h.saturating_mul(3600));
        crm_db::purge::Retention {
            idempotency: hours(self.retain_idempotency_hours),
            outbox: hours(self.retain_outbox_days.saturating_mul(24)),
            expired: hours(self.retain_expired_hours),
            every: Duration::from_secs(self.purge_interval_minutes.max(1).saturating_mul(60)),
        }
    }

    /// The server settings these options give.
    #[must_use]
    pub fn server_settings(&self) -> ServerSettings {
        ServerSettings {
            max_in_flight: self.max_in_flight,
            max_message_bytes: self.max_message_bytes,
            max_concurrent_streams: self.max_streams_per_connection,
            drain_timeout: Duration::from_secs(self.drain_seconds),
            ..ServerSettings::default()
        }
    }
}
