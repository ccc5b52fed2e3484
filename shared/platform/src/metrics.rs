//! RED metrics through the OpenTelemetry metrics SDK: every RPC a server answers is one
//! measurement of `rpc.server.call.duration` (seconds; attributes `rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`, as the RPC semantic conventions name them), so rate,
//! errors and duration all come from one histogram. A periodic reader exports the process's
//! metrics (every 15 s, and on demand) to a snapshot in the Prometheus text format:
//! [`prometheus_text`] flushes and returns it, and [`serve_admin`] serves it at `/metrics` on
//! an admin address.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

/// Bucket bounds for call durations in seconds (the semantic conventions' advice).
const BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Keeps the latest export, rendered as Prometheus text.
#[derive(Debug, Clone, Default)]
struct Snapshot(Arc<Mutex<String>>);

impl PushMetricExporter for Snapshot {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let text = render(metrics);
        if let Ok(mut kept) = self.0.lock() {
            *kept = text;
        }
        Ok(())
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

struct Metrics {
    snapshot: Snapshot,
    provider: SdkMeterProvider,
    rpc_duration: Histogram<f64>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let snapshot = Snapshot::default();
        let reader = PeriodicReader::builder(snapshot.clone())
            .with_interval(Duration::from_secs(15))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let meter = provider.meter("crm");
        let rpc_duration = meter
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("Duration of RPCs answered, by method and status code")
            .with_boundaries(BOUNDS.to_vec())
            .build();
        Metrics {
            snapshot,
            provider,
            rpc_duration,
        }
    })
}

/// Records one answered call of `path` (`/package.Service/Method`) with its gRPC status code.
pub fn record_call(path: &str, code: &str, took: Duration) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", path));
    metrics().rpc_duration.record(
        took.as_secs_f64(),
        &[
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.grpc.status_code", code.to_owned()),
        ],
    );
}

/// A Prometheus name of an OpenTelemetry one: dots and other marks as `_`, the unit as suffix.
fn prometheus_name(name: &str, unit: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match unit {
        "s" => out.push_str("_seconds"),
        "By" => out.push_str("_bytes"),
        "" | "1" => {}
        other => {
            out.push('_');
            out.extend(other.chars().filter(char::is_ascii_alphanumeric));
        }
    }
    out
}

fn labels<'a>(
    attributes: impl Iterator<Item = &'a KeyValue>,
    extra: Option<(&str, String)>,
) -> String {
    let escape = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut parts: Vec<String> = attributes
        .map(|kv| {
            let key: String = kv
                .key
                .as_str()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{key}=\"{}\"", escape(&kv.value.to_string()))
        })
        .collect();
    parts.sort();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Everything measured so far, in the Prometheus text exposition format (exported now).
#[must_use]
pub fn prometheus_text() -> String {
    let m = metrics();
    let _ = m.provider.force_flush();
    m.snapshot.0.lock().map(|t| t.clone()).unwrap_or_default()
}

fn render(rm: &ResourceMetrics) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for scope in rm.scope_metrics() {
        for m in scope.metrics() {
            let name = prometheus_name(m.name(), m.unit());
            match m.data() {
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    let _ = writeln!(out, "# HELP {name} {}", m.description());
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    for p in h.data_points() {
                        let mut cumulative = 0u64;
                        let bounds: Vec<f64> = p.bounds().collect();
                        for (i, n) in p.bucket_counts().enumerate() {
                            cumulative += n;
                            let le = bounds
                                .get(i)
                                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                labels(p.attributes(), Some(("le", le)))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_sum{} {}",
                            labels(p.attributes(), None),
                            p.sum()
                        );
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            labels(p.attributes(), None),
                            p.count()
                        );
                    }
                }
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    let _ = writeln!(out, "# TYPE {name}_total counter");
                    for p in s.data_points() {
                        let _ = writeln!(
                            out,
                            "{name}_total{} {}",
                            labels(p.attributes(), None),
                            p.value()
                        );
                    }
                }
                AggregatedMetrics::I64(MetricData::Gauge(g)) => {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    for p in g.data_points() {
                        let _ =
                            writeln!(out, "{name}{} {}", labels(p.attributes(), None), p.value());
                    }
                }
                AggregatedMetrics::F64(_)
                | AggregatedMetrics::U64(_)
                | AggregatedMetrics::I64(_) => {}
            }
        }
    }
    out
}

/// Serves `/metrics` (Prometheus text) on `listener` until `shutdown` completes.
///
/// # Errors
/// The server's I/O error.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            // The flush waits for the reader's thread: off the async workers.
            let text = tokio::task::spawn_blocking(prometheus_text)
                .await
                .unwrap_or_default();
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
