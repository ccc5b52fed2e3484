//! RED metrics through the OpenTelemetry metrics SDK: every RPC a server answers is one
//! measurement of `rpc.server.call.duration` (seconds; attributes `rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`, as the RPC semantic conventions name them), so rate,
//! errors and duration all come from one histogram. A periodic reader exports the process's
//! metrics (every 15 s, and on demand) to a snapshot in the Prometheus text format:
//! [`prometheus_text`] flushes and returns it, and [`serve_admin`] serves it at `/metrics` on
//! an admin address. With an OTLP endpoint ([`init`], called by the telemetry set-up) a second
//! periodic reader exports the same instruments over OTLP/gRPC.
//!
//! Besides the calls, the process reports gauges read when an export runs:
//! - `db.client.connection.count` by `db.client.connection.pool.name` (the schema) and
//!   `db.client.connection.state` (`idle`, `used`), and `db.client.connection.timeouts`
//!   (checkouts that gave up), for every pool an assembly registered ([`observe_pool`]);
//! - `rpc.server.active_requests` and `rpc.server.concurrency_limit` (load shedding admits
//!   calls while the first is below the second), and `rpc.server.shed` counting refused calls;
//! - `crm.events.consumer.lag` (seconds) by `messaging.consumer.group.name` and
//!   `messaging.destination.name`: for each event consumer ([`ConsumerLag`]), a bound on the
//!   age of the oldest event it has not processed yet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use crm_db::DbPool;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    AsyncInstrument, Counter, Histogram, MeterProvider as _, ObservableCounter, ObservableGauge,
};
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

/// How often the readers export.
const EXPORT_EVERY: Duration = Duration::from_secs(15);

/// The instruments of one meter provider.
struct Instruments {
    rpc_duration: Histogram<f64>,
    http_duration: Histogram<f64>,
    shed: Counter<u64>,
    _pool_connections: ObservableGauge<i64>,
    _pool_timeouts: ObservableCounter<u64>,
    _active: ObservableGauge<i64>,
    _limit: ObservableGauge<i64>,
    _lag: ObservableGauge<f64>,
}

/// Two providers, so that a scrape of `/metrics` (which exports the snapshot on demand) never
/// waits on the OTLP collector, and the OTLP export keeps its own pace. Each measurement is
/// recorded in both.
struct Metrics {
    snapshot: Snapshot,
    local: (SdkMeterProvider, Instruments),
    otlp: Option<(SdkMeterProvider, Instruments)>,
}

impl Metrics {
    fn each(&self) -> impl Iterator<Item = &Instruments> {
        std::iter::once(&self.local.1).chain(self.otlp.as_ref().map(|o| &o.1))
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Sets up the process's metrics, exporting over OTLP/gRPC to `endpoint` too when given (with
/// `service_name` as the resource's). Only the first set-up counts: a later call, or one after
/// the first measurement, changes nothing. Call it inside a Tokio runtime (the OTLP client
/// spawns its connection there).
pub fn init(service_name: &str, endpoint: Option<&str>) {
    let otlp = endpoint.filter(|e| !e.is_empty()).and_then(|endpoint| {
        use opentelemetry_otlp::WithExportConfig;
        opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.to_owned())
            .build()
            .map_err(|e| eprintln!("OTLP metrics exporter disabled: {e}"))
            .ok()
    });
    let _ = METRICS.get_or_init(|| build(service_name, otlp));
}

fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| build("crm", None))
}

fn provider<E: PushMetricExporter>(service_name: &str, exporter: E) -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(EXPORT_EVERY)
                .build(),
        )
        .build()
}

fn build(service_name: &str, otlp: Option<opentelemetry_otlp::MetricExporter>) -> Metrics {
    let snapshot = Snapshot::default();
    let local = provider(service_name, snapshot.clone());
    let local_instruments = instruments(&local);
    Metrics {
        snapshot,
        local: (local, local_instruments),
        otlp: otlp.map(|exporter| {
            let p = provider(service_name, exporter);
            let i = instruments(&p);
            (p, i)
        }),
    }
}

fn instruments(provider: &SdkMeterProvider) -> Instruments {
    let meter = provider.meter("crm");
    Instruments {
        rpc_duration: meter
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("Duration of RPCs answered, by method and status code")
            .with_boundaries(BOUNDS.to_vec())
            .build(),
        http_duration: meter
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description(
                "Duration of HTTP requests answered (the gateway), by route and status",
            )
            .with_boundaries(BOUNDS.to_vec())
            .build(),
        shed: meter
            .u64_counter("rpc.server.shed")
            .with_unit("{call}")
            .with_description("Calls refused at the concurrency limit (load shedding)")
            .build(),
        _pool_connections: meter
            .i64_observable_gauge("db.client.connection.count")
            .with_unit("{connection}")
            .with_description("Connections of each pool, by state")
            .with_callback(observe_pool_connections)
            .build(),
        _pool_timeouts: meter
            .u64_observable_counter("db.client.connection.timeouts")
            .with_unit("{timeout}")
            .with_description("Checkouts that gave up waiting for a connection")
            .with_callback(|o| {
                for_each_pool(|name, state| {
                    o.observe(
                        state.statistics.get_timed_out,
                        &[KeyValue::new("db.client.connection.pool.name", name)],
                    );
                });
            })
            .build(),
        _active: meter
            .i64_observable_gauge("rpc.server.active_requests")
            .with_unit("{call}")
            .with_description("Calls running now (load shedding counts these)")
            .with_callback(|o| o.observe(limits().0, &[]))
            .build(),
        _limit: meter
            .i64_observable_gauge("rpc.server.concurrency_limit")
            .with_unit("{call}")
            .with_description("Calls admitted at once; the next is refused RESOURCE_EXHAUSTED")
            .with_callback(|o| o.observe(limits().1, &[]))
            .build(),
        _lag: meter
            .f64_observable_gauge("crm.events.consumer.lag")
            .with_unit("s")
            .with_description(
                "Bound on the age of the oldest event each consumer has not processed yet",
            )
            .with_callback(observe_lags)
            .build(),
    }
}

/// The RPC attributes of a call of `path` (`/package.Service/Method`), with its status code
/// when given.
fn rpc_attributes(path: &str, code: Option<&str>) -> Vec<KeyValue> {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", path));
    let mut attributes = vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ];
    if let Some(code) = code {
        attributes.push(KeyValue::new("rpc.grpc.status_code", code.to_owned()));
    }
    attributes
}

/// Records one HTTP request answered: `route` is the template that matched (none for a
/// request no route answers, so unknown paths do not each make a series).
pub fn record_http(method: &str, route: Option<&str>, status: u16, took: Duration) {
    let mut attributes = vec![
        KeyValue::new("http.request.method", method.to_owned()),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    if let Some(r) = route {
        attributes.push(KeyValue::new("http.route", r.to_owned()));
    }
    for i in metrics().each() {
        i.http_duration.record(took.as_secs_f64(), &attributes);
    }
}

/// Records one call refused at the concurrency limit.
pub fn record_shed(path: &str) {
    let attributes = rpc_attributes(path, None);
    for i in metrics().each() {
        i.shed.add(1, &attributes);
    }
}

// --- what the gauges read ---

/// Entries the gauges read at each export, each kept while its [`Registration`] lives.
struct Registry<T: 'static> {
    entries: Mutex<Vec<(u64, T)>>,
    next: AtomicU64,
}

impl<T: Clone + Send + 'static> Registry<T> {
    const fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        }
    }

    fn add(&'static self, entry: T) -> Registration<T> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.entries.lock() {
            all.push((id, entry));
        }
        // The instruments exist from here on.
        let _ = metrics();
        Registration { registry: self, id }
    }

    /// The entries now (copied: the gauges' reads run without the lock).
    fn entries(&self) -> Vec<T> {
        self.entries
            .lock()
            .map(|all| all.iter().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default()
    }
}

/// Removes its entry from the registry when dropped.
struct Registration<T: 'static> {
    registry: &'static Registry<T>,
    id: u64,
}

impl<T> Drop for Registration<T> {
    fn drop(&mut self) {
        if let Ok(mut all) = self.registry.entries.lock() {
            all.retain(|(id, _)| *id != self.id);
        }
    }
}

// --- pools ---

static POOLS: Registry<(&'static str, DbPool)> = Registry::new();

/// Keeps a pool reported while held; dropping it stops the reports (and releases the pool).
#[must_use = "the pool is reported only while the handle lives"]
pub struct PoolGauge(Registration<(&'static str, DbPool)>);

impl std::fmt::Debug for PoolGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PoolGauge").field(&self.0.id).finish()
    }
}

/// Reports `pool`'s connections under `name` (its schema) until the returned handle drops.
pub fn observe_pool(name: &'static str, pool: DbPool) -> PoolGauge {
    PoolGauge(POOLS.add((name, pool)))
}

fn for_each_pool(mut f: impl FnMut(&'static str, bb8::State)) {
    for (name, pool) in POOLS.entries() {
        f(name, pool.state());
    }
}

fn observe_pool_connections(o: &dyn AsyncInstrument<i64>) {
    for_each_pool(|name, state| {
        let idle = i64::from(state.idle_connections);
        let used = i64::from(state.connections.saturating_sub(state.idle_connections));
        for (value, which) in [(idle, "idle"), (used, "used")] {
            o.observe(
                value,
                &[
                    KeyValue::new("db.client.connection.pool.name", name),
                    KeyValue::new("db.client.connection.state", which),
                ],
            );
        }
    });
}

// --- load shedding ---

static LIMITERS: Mutex<Vec<(Weak<tokio::sync::Semaphore>, usize)>> = Mutex::new(Vec::new());

/// Reports a call layer's permits (`limit` in all) while the semaphore lives.
pub(crate) fn observe_limiter(permits: &Arc<tokio::sync::Semaphore>, limit: usize) {
    if let Ok(mut all) = LIMITERS.lock() {
        all.retain(|(w, _)| w.strong_count() > 0);
        all.push((Arc::downgrade(permits), limit));
    }
    let _ = metrics();
}

/// Calls running and the limit, summed over the process's live servers.
fn limits() -> (i64, i64) {
    let Ok(all) = LIMITERS.lock() else {
        return (0, 0);
    };
    let (mut active, mut limit) = (0usize, 0usize);
    for (permits, n) in all.iter() {
        if let Some(p) = permits.upgrade() {
            active += n.saturating_sub(p.available_permits());
            limit += n;
        }
    }
    (
        i64::try_from(active).unwrap_or(i64::MAX),
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
}

// --- event consumers ---

#[derive(Debug, Clone, Copy)]
struct Reading {
    polled: SystemTime,
    /// The newest event processed, when more were waiting.
    behind_at: Option<SystemTime>,
}

#[derive(Debug)]
struct Lag {
    /// How often the consumer polls when all is well.
    every: Duration,
    reading: Mutex<Reading>,
}

/// The lag of one event consumer, reported while any clone lives.
///
/// After each poll the consumer says whether it has caught up ([`ConsumerLag::caught_up`]) or
/// stopped short of the end at an event ([`ConsumerLag::behind`]). The gauge is then a bound on
/// the age of the oldest event not processed yet: behind, the age of the last event processed
/// (every later one is younger); caught up, zero while it keeps polling on time and the time
/// since its last poll once it is late (a stuck consumer shows a growing lag).
#[derive(Debug, Clone)]
pub struct ConsumerLag(Arc<(Lag, LagGauge)>);

impl ConsumerLag {
    /// A consumer named `group` reading `destination` (for example `core.outbox`), polling at
    /// least every `every`.
    #[must_use]
    pub fn new(group: &'static str, destination: &'static str, every: Duration) -> Self {
        Self(Arc::new_cyclic(|me: &Weak<(Lag, LagGauge)>| {
            let me = me.clone();
            let gauge = observe_lag(group, destination, move || {
                let lag = me.upgrade()?;
                Some(lag.0.seconds_at(SystemTime::now()))
            });
            let lag = Lag {
                every,
                reading: Mutex::new(Reading {
                    polled: SystemTime::now(),
                    behind_at: None,
                }),
            };
            (lag, gauge)
        }))
    }

    /// The last poll reached the end of the events.
    pub fn caught_up(&self) {
        self.set(None);
    }

    /// The last poll stopped short of the end; `last` is the occur time of the last event it
    /// processed.
    pub fn behind(&self, last: SystemTime) {
        self.set(Some(last));
    }

    fn set(&self, behind_at: Option<SystemTime>) {
        if let Ok(mut r) = self.0.0.reading.lock() {
            *r = Reading {
                polled: SystemTime::now(),
                behind_at,
            };
        }
    }

    /// The gauge's value at `now`, in seconds.
    #[must_use]
    pub fn seconds_at(&self, now: SystemTime) -> f64 {
        self.0.0.seconds_at(now)
    }
}

impl Lag {
    fn seconds_at(&self, now: SystemTime) -> f64 {
        let Ok(r) = self.reading.lock().map(|r| *r) else {
            return 0.0;
        };
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        match r.behind_at {
            Some(at) => age(at).as_secs_f64(),
            None => {
                let since = age(r.polled);
                if since > self.every * 2 {
                    since.as_secs_f64()
                } else {
                    0.0
                }
            }
        }
    }
}

/// A lag read when an export runs.
type LagReader = Arc<dyn Fn() -> Option<f64> + Send + Sync>;

static LAGS: Registry<(&'static str, &'static str, LagReader)> = Registry::new();

/// Keeps a lag reported while held.
#[must_use = "the lag is reported only while the handle lives"]
pub struct LagGauge(Registration<(&'static str, &'static str, LagReader)>);

impl std::fmt::Debug for LagGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LagGauge").field(&self.0.id).finish()
    }
}

/// Reports `read` (seconds, `None` for nothing to report) as the lag of consumer `group` of
/// `destination` until the handle drops (for a consumer whose loop lives where the metrics do
/// not; [`ConsumerLag`] for one that reports after each poll).
pub fn observe_lag(
    group: &'static str,
    destination: &'static str,
    read: impl Fn() -> Option<f64> + Send + Sync + 'static,
) -> LagGauge {
    LagGauge(LAGS.add((group, destination, Arc::new(read))))
}

/// The lag of a service's copy of identity's revocations: the time since the feed last
/// delivered a batch or heartbeat (every revocation older than that is applied).
pub fn observe_revocation_feed(set: &Arc<crm_auth::revocation::RevocationSet>) -> LagGauge {
    let set = Arc::downgrade(set);
    observe_lag("revocation-follower", "identity.revocations", move || {
        set.upgrade()?.since_last_batch().map(|d| d.as_secs_f64())
    })
}

/// The largest lag of each (group, destination) among live consumers.
fn observe_lags(o: &dyn AsyncInstrument<f64>) {
    let mut worst: Vec<(&'static str, &'static str, f64)> = Vec::new();
    for (group, destination, read) in LAGS.entries() {
        let Some(seconds) = read() else {
            continue;
        };
        match worst
            .iter_mut()
            .find(|w| w.0 == group && w.1 == destination)
        {
            Some(w) => w.2 = w.2.max(seconds),
            None => worst.push((group, destination, seconds)),
        }
    }
    for (group, destination, seconds) in worst {
        o.observe(
            seconds,
            &[
                KeyValue::new("messaging.consumer.group.name", group),
                KeyValue::new("messaging.destination.name", destination),
            ],
        );
    }
}

/// Records one answered call of `path` (`/package.Service/Method`) with its gRPC status code.
pub fn record_call(path: &str, code: &str, took: Duration) {
    let attributes = rpc_attributes(path, Some(code));
    for i in metrics().each() {
        i.rpc_duration.record(took.as_secs_f64(), &attributes);
    }
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
        // `{call}` and the like are annotations, not units.
        u if u.is_empty() || u == "1" || u.starts_with('{') => {}
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

/// Exports what was measured over OTLP now (at shutdown, say). It blocks until the collector
/// answers or the export times out, and the export needs the Tokio runtime: call it from
/// `spawn_blocking`, never on a runtime's thread.
pub fn flush_otlp() {
    if let Some((p, _)) = METRICS.get().and_then(|m| m.otlp.as_ref()) {
        let _ = p.force_flush();
    }
}

/// Everything measured so far, in the Prometheus text exposition format (exported now, which
/// never involves the OTLP collector).
#[must_use]
pub fn prometheus_text() -> String {
    let m = metrics();
    let _ = m.local.0.force_flush();
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
                    let _ = writeln!(out, "# HELP {name}_total {}", m.description());
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
                    let _ = writeln!(out, "# HELP {name} {}", m.description());
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    for p in g.data_points() {
                        let _ =
                            writeln!(out, "{name}{} {}", labels(p.attributes(), None), p.value());
                    }
                }
                AggregatedMetrics::F64(MetricData::Gauge(g)) => {
                    let _ = writeln!(out, "# HELP {name} {}", m.description());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_lag_bounds_the_age_of_the_oldest_unprocessed_event() {
        let lag = ConsumerLag::new("test", "test.outbox", Duration::from_secs(60));
        let now = SystemTime::now();
        lag.caught_up();
        assert!(lag.seconds_at(now + Duration::from_secs(1)) < f64::EPSILON);
        // Stopped short at an event ten seconds old: at least that old is waiting.
        lag.behind(now - Duration::from_secs(10));
        let behind = lag.seconds_at(now);
        assert!((9.0..11.0).contains(&behind), "{behind}");
        // Caught up, then silent for longer than two intervals: the silence is the bound.
        lag.caught_up();
        let silent = lag.seconds_at(now + Duration::from_secs(300));
        assert!(silent >= 299.0, "{silent}");
    }

    #[test]
    fn annotations_are_not_units_in_prometheus_names() {
        assert_eq!(
            prometheus_name("rpc.server.shed", "{call}"),
            "rpc_server_shed"
        );
        assert_eq!(
            prometheus_name("crm.events.consumer.lag", "s"),
            "crm_events_consumer_lag_seconds"
        );
    }
}
