//! Tracing and OpenTelemetry, initialised once per process as a library.
//!
//! Logs go to stderr (`RUST_LOG` filters, default `info`). When `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, spans are also exported over OTLP/gRPC with the service name as a resource
//! attribute. W3C trace context is the propagation format in both cases.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the exporter alive; flushes spans when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (what log collectors expect).
    Json,
    /// Human-readable text, coloured only when `ansi`.
    Text {
        /// Colour codes (only on a terminal).
        ansi: bool,
    },
}

impl LogFormat {
    /// `CRM_LOG_FORMAT=json` gives JSON; otherwise text, coloured only when writing to a
    /// terminal (never into files or pipes).
    #[must_use]
    pub fn choose(setting: Option<&str>, terminal: bool) -> Self {
        match setting.map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Text { ansi: terminal },
        }
    }
}

/// Installs the global subscriber and propagator. Safe to call more than once (later calls
/// only return a guard).
#[must_use]
pub fn init(service_name: &str) -> TelemetryGuard {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    init_with_endpoint(service_name, endpoint.as_deref())
}

/// [`init`] exporting spans to the OTLP/gRPC `endpoint` when given (not read from the
/// environment).
#[must_use]
pub fn init_with_endpoint(service_name: &str, endpoint: Option<&str>) -> TelemetryGuard {
    use std::io::IsTerminal;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = LogFormat::choose(
        std::env::var("CRM_LOG_FORMAT").ok().as_deref(),
        std::io::stderr().is_terminal(),
    );
    let (text, json) = match format {
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            ),
        ),
        LogFormat::Text { ansi } => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi)
                    .with_target(false)
                    .with_filter(filter()),
            ),
            None,
        ),
    };

    let provider = endpoint
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .and_then(|endpoint| {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| eprintln!("OTLP exporter disabled: {e}"))
                .ok()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(service_name.to_owned())
                            .build(),
                    )
                    .build(),
            )
        });

    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("crm"))
            .with_filter(EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    crate::metrics::init(service_name, endpoint);
    TelemetryGuard { provider }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_json_when_asked() {
        assert_eq!(
            LogFormat::choose(None, false),
            LogFormat::Text { ansi: false }
        );
        assert_eq!(
            LogFormat::choose(None, true),
            LogFormat::Text { ansi: true }
        );
        assert_eq!(LogFormat::choose(Some("JSON"), true), LogFormat::Json);
        assert_eq!(
            LogFormat::choose(Some("text"), false),
            LogFormat::Text { ansi: false }
        );
    }
}
