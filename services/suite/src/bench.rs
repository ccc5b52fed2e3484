//! `crm bench`: drives one RPC against a running suite and reports throughput and latency
//! percentiles from HDR histograms. Closed loop (`--concurrency` calls always in flight) or open
//! loop (`--rate` calls per second, latency measured from each call's scheduled start so
//! queueing is not hidden). For the reliability targets it can also write every call (start,
//! latency, gRPC code) and every health change to CSV files, and hold idle connections open.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{
    CreateCustomerRequest, Customer, GetCustomerRequest, ListCustomersRequest,
};
use crm_proto::identity_v1::LoginRequest;
use crm_proto::identity_v1::auth_service_client::AuthServiceClient;
use hdrhistogram::Histogram;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The RPC `crm bench` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    /// CustomerService/GetCustomer of the organization's first customer.
    GetCustomer,
    /// CustomerService/CreateCustomer, a new request_id per call.
    CreateCustomer,
    /// AuthService/Login with `--email` and `--password`.
    Login,
    /// grpc.health.v1.Health/Check (no database, no authentication).
    Health,
}

/// Options of `crm bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server to call.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// What to call.
    #[arg(long, value_enum, default_value_t = Rpc::GetCustomer)]
    pub rpc: Rpc,
    /// Bearer token (as printed by `crm up --demo`); needed by the customer RPCs.
    #[arg(long, env = "TOKEN", hide_env_values = true, default_value = "")]
    pub token: String,
    /// Organization of the token (or of the login): `organizations/{id}`.
    #[arg(long, default_value = "")]
    pub parent: String,
    /// Email to sign in with (`--rpc login`).
    #[arg(long, default_value = "")]
    pub email: String,
    /// Password to sign in with (`--rpc login`).
    #[arg(
        long,
        env = "CRM_BENCH_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub password: String,
    /// Calls in flight (closed loop).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Calls per second (open loop); overrides --concurrency.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Open loop: most calls outstanding at once; a call due while this many are outstanding
    /// is not sent and counts as `skipped` (the generator's own memory stays bounded when the
    /// server falls behind).
    #[arg(long, default_value_t = 4096)]
    pub max_outstanding: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up before measuring, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub warmup_ms: u64,
    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Deadline of each call, in milliseconds (none when 0).
    #[arg(long, default_value_t = 0)]
    pub deadline_ms: u64,
    /// Writes every measured call as `start_unix_us,latency_us,code` (code 0 is OK).
    #[arg(long)]
    pub calls_csv: Option<PathBuf>,
    /// Polls the server's overall health every 20 ms and writes each change as
    /// `unix_us,status` (SERVING, NOT_SERVING or the error reaching it).
    #[arg(long)]
    pub health_csv: Option<PathBuf>,
    /// Instead of load: opens this many connections, makes one health check on each, holds them
    /// idle for `--seconds` and reports how many were open.
    #[arg(long)]
    pub idle_connections: Option<usize>,
    /// Instead of load: signs in once with `--email`, `--password` and `--parent` and prints
    /// `token=<access token>`.
    #[arg(long)]
    pub print_token: bool,
}

/// One measured call: when it started (µs since the Unix epoch), how long it took, its code.
#[derive(Clone, Copy)]
struct Sample {
    start_us: u64,
    latency_us: u64,
    code: u8,
}

struct Outcome {
    ok: Histogram<u64>,
    failed: Histogram<u64>,
    /// Failed calls by gRPC code.
    codes: std::collections::BTreeMap<i32, u64>,
    samples: Vec<Sample>,
    /// Open loop: calls not sent because too many were outstanding.
    skipped: u64,
}

impl Outcome {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ok: histogram()?,
            failed: histogram()?,
            codes: std::collections::BTreeMap::new(),
            samples: Vec::new(),
            skipped: 0,
        })
    }

    fn record(
        &mut self,
        keep: bool,
        start: SystemTime,
        latency: Duration,
        result: Result<(), tonic::Code>,
    ) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let code = match result {
            Ok(()) => {
                self.ok.saturating_record(latency_us);
                0
            }
            Err(code) => {
                self.failed.saturating_record(latency_us);
                *self.codes.entry(i32::from(code)).or_default() += 1;
                u8::try_from(i32::from(code)).unwrap_or(u8::MAX)
            }
        };
        if keep {
            self.samples.push(Sample {
                start_us: unix_us(start),
                latency_us,
                code,
            });
        }
    }

    fn add(&mut self, other: Self) -> anyhow::Result<()> {
        self.ok.add(&other.ok).context("merging histograms")?;
        self.failed
            .add(&other.failed)
            .context("merging histograms")?;
        for (code, n) in other.codes {
            *self.codes.entry(code).or_default() += n;
        }
        self.samples.extend(other.samples);
        self.skipped += other.skipped;
        Ok(())
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")
}

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What every call needs: the clients of one connection and the request's constant parts.
#[derive(Clone)]
struct Caller {
    customers: CustomerServiceClient<Channel>,
    auth: AuthServiceClient<Channel>,
    health: HealthClient<Channel>,
    shared: Arc<Shared>,
}

struct Shared {
    rpc: Rpc,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    customer: String,
    parent: String,
    email: String,
    password: String,
    deadline: Option<Duration>,
}

impl Caller {
    fn new(channel: Channel, shared: Arc<Shared>) -> Self {
        Self {
            customers: CustomerServiceClient::new(channel.clone()),
            auth: AuthServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            shared,
        }
    }

    fn request<T>(&self, body: T, authorized: bool) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        if let Some(deadline) = self.shared.deadline {
            req.set_timeout(deadline);
        }
        if authorized {
            req.metadata_mut()
                .insert("authorization", self.shared.authorization.clone());
        }
        req
    }

    /// One call; the gRPC code of a failure.
    async fn call(&mut self) -> Result<(), tonic::Code> {
        let s = Arc::clone(&self.shared);
        let result = match s.rpc {
            Rpc::GetCustomer => {
                let req = self.request(
                    GetCustomerRequest {
                        name: s.customer.clone(),
                    },
                    true,
                );
                self.customers.get_customer(req).await.map(drop)
            }
            Rpc::CreateCustomer => {
                let id = uuid::Uuid::new_v4();
                let req = self.request(
                    CreateCustomerRequest {
                        parent: s.parent.clone(),
                        customer: Some(Customer {
                            display_name: format!(
                                "Bench customer {}",
                                &id.simple().to_string()[..8]
                            ),
                            email: format!("bench-{}@example.com", id.simple()),
                            ..Default::default()
                        }),
                        customer_id: String::new(),
                        request_id: id.to_string(),
                    },
                    true,
                );
                self.customers.create_customer(req).await.map(drop)
            }
            Rpc::Login => {
                let req = self.request(
                    LoginRequest {
                        email: s.email.clone(),
                        password: s.password.clone(),
                        organization: s.parent.clone(),
                        ..Default::default()
                    },
                    false,
                );
                self.auth.login(req).await.map(drop)
            }
            Rpc::Health => {
                let req = self.request(HealthCheckRequest::default(), false);
                self.health.check(req).await.map(drop)
            }
        };
        result.map_err(|status| status.code())
    }
}

struct Window {
    from: Instant,
    until: Instant,
    keep: bool,
}

async fn closed_loop(
    callers: &[Caller],
    concurrency: usize,
    w: &Window,
) -> anyhow::Result<Outcome> {
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut caller = callers[i % callers.len()].clone();
        let (from, until, keep) = (w.from, w.until, w.keep);
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::new()?;
            while Instant::now() < until {
                let (started, wall) = (Instant::now(), SystemTime::now());
                let result = caller.call().await;
                if started >= from {
                    outcome.record(keep, wall, started.elapsed(), result);
                }
            }
            Ok::<_, anyhow::Error>(outcome)
        }));
    }
    let mut total = Outcome::new()?;
    for t in tasks {
        total.add(t.await??)?;
    }
    Ok(total)
}

async fn open_loop(
    callers: &[Caller],
    rate: u64,
    max_outstanding: usize,
    w: &Window,
) -> anyhow::Result<Outcome> {
    let outstanding = Arc::new(tokio::sync::Semaphore::new(max_outstanding.max(1)));
    let mut skipped = 0u64;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    type Report = (SystemTime, Duration, Result<(), tonic::Code>);
    // One collector; each call reports its latency from its scheduled start.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Report>();
    let keep = w.keep;
    let collector = tokio::spawn(async move {
        let mut outcome = Outcome::new()?;
        while let Some((wall, latency, result)) = rx.recv().await {
            outcome.record(keep, wall, latency, result);
        }
        Ok::<_, anyhow::Error>(outcome)
    });
    let start = Instant::now();
    let wall_start = SystemTime::now();
    let mut next = start;
    let mut i = 0usize;
    while next < w.until {
        tokio::time::sleep_until(next.into()).await;
        let scheduled = next;
        next += interval;
        i += 1;
        let Ok(permit) = Arc::clone(&outstanding).try_acquire_owned() else {
            if scheduled >= w.from {
                skipped += 1;
            }
            continue;
        };
        let mut caller = callers[i % callers.len()].clone();
        let tx = tx.clone();
        let from = w.from;
        tokio::spawn(async move {
            let result = caller.call().await;
            drop(permit);
            if scheduled >= from {
                let wall = wall_start + (scheduled - start);
                let _ = tx.send((wall, scheduled.elapsed(), result));
            }
        });
    }
    drop(tx);
    let mut outcome = collector.await??;
    outcome.skipped = skipped;
    Ok(outcome)
}

/// Polls health until `stop` and returns each change with its time.
async fn watch_health(
    mut client: HealthClient<Channel>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(u64, String)> {
    let mut changes = Vec::new();
    let mut last = String::new();
    loop {
        let mut req = tonic::Request::new(HealthCheckRequest::default());
        req.set_timeout(Duration::from_millis(200));
        let now = SystemTime::now();
        let status = match client.check(req).await {
            Ok(r) => match r.into_inner().status {
                1 => "SERVING".to_owned(),
                2 => "NOT_SERVING".to_owned(),
                other => format!("STATUS_{other}"),
            },
            Err(s) => format!("ERROR_{:?}", s.code()),
        };
        if status != last {
            changes.push((unix_us(now), status.clone()));
            last = status;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => return changes,
        }
    }
}

async fn connect(target: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(target.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {target}"))
}

/// Opens `n` connections, checks health once on each, and holds them for `hold`.
async fn idle_connections(target: &str, n: usize, hold: Duration) -> anyhow::Result<()> {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0usize;
    for _ in 0..n {
        match connect(target).await {
            Ok(channel) => {
                let mut client = HealthClient::new(channel);
                if client.check(HealthCheckRequest::default()).await.is_ok() {
                    open.push(client);
                } else {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    println!(
        "idle_connections={} failed={failed} hold_s={}",
        open.len(),
        hold.as_secs()
    );
    tokio::time::sleep(hold).await;
    drop(open);
    Ok(())
}

/// The organization's first customer, for GetCustomer.
async fn first_customer(channel: Channel, shared: &Shared) -> anyhow::Result<String> {
    let mut list = tonic::Request::new(ListCustomersRequest {
        parent: shared.parent.clone(),
        page_size: 1,
        ..Default::default()
    });
    list.metadata_mut()
        .insert("authorization", shared.authorization.clone());
    CustomerServiceClient::new(channel)
        .list_customers(list)
        .await?
        .into_inner()
        .customers
        .into_iter()
        .next()
        .map(|c| c.name)
        .context("the organization has no customer to read; run `crm up --demo`")
}

fn write_calls(path: &std::path::Path, samples: &[Sample]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "start_unix_us,latency_us,code")?;
    for s in samples {
        writeln!(out, "{},{},{}", s.start_us, s.latency_us, s.code)?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the benchmark and prints one line of `key=value` results.
///
/// # Errors
/// When the target cannot be reached, has no customer to read, or a file cannot be written.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(n) = args.idle_connections {
        return idle_connections(&args.target, n, Duration::from_secs(args.seconds)).await;
    }
    if args.print_token {
        let mut auth = AuthServiceClient::new(connect(&args.target).await?);
        let token = auth
            .login(LoginRequest {
                email: args.email.clone(),
                password: args.password.clone(),
                organization: args.parent.clone(),
                ..Default::default()
            })
            .await
            .context("signing in")?
            .into_inner()
            .access_token;
        println!("token={token}");
        return Ok(());
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(connect(&args.target).await?);
    }
    let mut shared = Shared {
        rpc: args.rpc,
        authorization: format!("Bearer {}", args.token)
            .parse()
            .context("the token is not valid metadata")?,
        customer: String::new(),
        parent: args.parent.clone(),
        email: args.email.clone(),
        password: args.password.clone(),
        deadline: (args.deadline_ms > 0).then(|| Duration::from_millis(args.deadline_ms)),
    };
    if args.rpc == Rpc::GetCustomer {
        shared.customer = first_customer(channels[0].clone(), &shared).await?;
    }
    let shared = Arc::new(shared);
    let callers: Vec<Caller> = channels
        .iter()
        .map(|c| Caller::new(c.clone(), Arc::clone(&shared)))
        .collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = args.health_csv.as_ref().map(|_| {
        tokio::spawn(watch_health(
            HealthClient::new(channels[0].clone()),
            stop_rx,
        ))
    });

    let from = Instant::now() + Duration::from_millis(args.warmup_ms);
    let window = Window {
        from,
        until: from + Duration::from_secs(args.seconds),
        keep: args.calls_csv.is_some(),
    };
    let outcome = match args.rate {
        Some(rate) => open_loop(&callers, rate, args.max_outstanding, &window).await?,
        None => closed_loop(&callers, args.concurrency, &window).await?,
    };
    let _ = stop_tx.send(true);
    if let (Some(path), Some(watcher)) = (&args.health_csv, watcher) {
        use std::io::Write;
        let changes = watcher.await?;
        let mut out = std::fs::File::create(path)?;
        writeln!(out, "unix_us,status")?;
        for (at, status) in changes {
            writeln!(out, "{at},{status}")?;
        }
    }
    if let Some(path) = &args.calls_csv {
        let mut samples = outcome.samples.clone();
        samples.sort_by_key(|s| s.start_us);
        write_calls(path, &samples)?;
    }
    print_summary(&args, &outcome);
    Ok(())
}

fn print_summary(args: &BenchArgs, outcome: &Outcome) {
    let (ok, failed) = (&outcome.ok, &outcome.failed);
    #[expect(clippy::cast_precision_loss, reason = "a rate for a report")]
    let rps = ok.len() as f64 / args.seconds as f64;
    let codes: Vec<String> = outcome
        .codes
        .iter()
        .map(|(code, n)| format!("{:?}:{n}", tonic::Code::from(*code)))
        .collect();
    println!(
        "rpc={:?} mode={} calls={} errors={} rps={rps:.0} p50_us={} p99_us={} p999_us={} \
         max_us={} fail_p50_us={} fail_p99_us={} fail_max_us={} skipped={} error_codes={}",
        args.rpc,
        args.rate.map_or_else(
            || format!("closed/{}", args.concurrency),
            |r| format!("open/{r}")
        ),
        ok.len(),
        failed.len(),
        ok.value_at_quantile(0.50),
        ok.value_at_quantile(0.99),
        ok.value_at_quantile(0.999),
        ok.max(),
        failed.value_at_quantile(0.50),
        failed.value_at_quantile(0.99),
        failed.max(),
        outcome.skipped,
        if codes.is_empty() {
            "none".to_owned()
        } else {
            codes.join(",")
        },
    );
}
