//! `crm bench`: drives GetCustomer against a running suite and reports throughput and latency
//! percentiles from an HDR histogram. Closed loop (`--concurrency` calls always in flight) or
//! open loop (`--rate` calls per second, latency measured from each call's scheduled start so
//! queueing is not hidden).

use std::time::{Duration, Instant};

use anyhow::Context;
use crm_proto::core_v1::customer_service_client::CustomerServiceClient;
use crm_proto::core_v1::{GetCustomerRequest, ListCustomersRequest};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

/// Options of `crm bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Server to call.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Bearer token (as printed by `crm up --demo`).
    #[arg(long, env = "TOKEN", hide_env_values = true)]
    pub token: String,
    /// Organization of the token: `organizations/{id}`.
    #[arg(long)]
    pub parent: String,
    /// Calls in flight (closed loop).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Calls per second (open loop); overrides --concurrency.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
}

struct Outcome {
    histogram: Histogram<u64>,
    errors: u64,
    /// Failed calls by gRPC code (`ResourceExhausted`, `Unavailable`...).
    codes: std::collections::BTreeMap<String, u64>,
}

impl Outcome {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: histogram()?,
            errors: 0,
            codes: std::collections::BTreeMap::new(),
        })
    }

    fn failed(&mut self, code: String) {
        self.errors += 1;
        *self.codes.entry(code).or_default() += 1;
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram")
}

fn request(token: &str, name: &str) -> anyhow::Result<tonic::Request<GetCustomerRequest>> {
    let mut req = tonic::Request::new(GetCustomerRequest {
        name: name.to_owned(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// One GetCustomer; the gRPC code of a failure.
async fn call(
    client: &mut CustomerServiceClient<Channel>,
    token: &str,
    name: &str,
) -> Result<(), String> {
    let req = request(token, name).map_err(|e| format!("Request({e})"))?;
    client
        .get_customer(req)
        .await
        .map(|_| ())
        .map_err(|status| format!("{:?}", status.code()))
}

async fn closed_loop(
    clients: &[CustomerServiceClient<Channel>],
    args: &BenchArgs,
    name: &str,
    until: Instant,
    from: Instant,
) -> anyhow::Result<Outcome> {
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let mut client = clients[i % clients.len()].clone();
        let token = args.token.clone();
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::new()?;
            while Instant::now() < until {
                let started = Instant::now();
                let result = call(&mut client, &token, &name).await;
                if started >= from {
                    match result {
                        Ok(()) => outcome.histogram.saturating_record(
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        ),
                        Err(code) => outcome.failed(code),
                    }
                }
            }
            Ok::<_, anyhow::Error>(outcome)
        }));
    }
    merge(tasks).await
}

async fn open_loop(
    clients: &[CustomerServiceClient<Channel>],
    args: &BenchArgs,
    rate: u64,
    name: &str,
    until: Instant,
    from: Instant,
) -> anyhow::Result<Outcome> {
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    // One collector; each call reports its latency (from its scheduled start) or an error.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, String>>();
    let collector = tokio::spawn(async move {
        let mut outcome = Outcome::new()?;
        while let Some(sample) = rx.recv().await {
            match sample {
                Ok(us) => outcome.histogram.saturating_record(us),
                Err(code) => outcome.failed(code),
            }
        }
        Ok::<_, anyhow::Error>(outcome)
    });
    let mut next = Instant::now();
    let mut i = 0usize;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        let scheduled = next;
        let mut client = clients[i % clients.len()].clone();
        let token = args.token.clone();
        let name = name.to_owned();
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = call(&mut client, &token, &name).await;
            if scheduled >= from {
                let sample = result
                    .map(|()| u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX));
                let _ = tx.send(sample);
            }
        });
        next += interval;
        i += 1;
    }
    drop(tx);
    collector.await?
}

async fn merge(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Outcome>>>,
) -> anyhow::Result<Outcome> {
    let mut total = Outcome::new()?;
    for t in tasks {
        let o = t.await??;
        total
            .histogram
            .add(&o.histogram)
            .context("merging histograms")?;
        total.errors += o.errors;
        for (code, n) in o.codes {
            *total.codes.entry(code).or_default() += n;
        }
    }
    Ok(total)
}

/// Runs the benchmark and prints one line of `key=value` results.
///
/// # Errors
/// When the target cannot be reached or has no customer to read.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = tonic::transport::Endpoint::from_shared(args.target.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.target))?;
        clients.push(CustomerServiceClient::new(channel));
    }
    let mut list = tonic::Request::new(ListCustomersRequest {
        parent: args.parent.clone(),
        page_size: 1,
        ..Default::default()
    });
    list.metadata_mut()
        .insert("authorization", format!("Bearer {}", args.token).parse()?);
    let name = clients[0]
        .clone()
        .list_customers(list)
        .await?
        .into_inner()
        .customers
        .into_iter()
        .next()
        .map(|c| c.name)
        .context("the organization has no customer to read; run `crm up --demo`")?;

    let from = Instant::now() + Duration::from_secs(1);
    let until = from + Duration::from_secs(args.seconds);
    let outcome = match args.rate {
        Some(rate) => open_loop(&clients, &args, rate, &name, until, from).await?,
        None => closed_loop(&clients, &args, &name, until, from).await?,
    };
    let h = &outcome.histogram;
    #[expect(clippy::cast_precision_loss, reason = "a rate for a report")]
    let rps = h.len() as f64 / args.seconds as f64;
    let codes: Vec<String> = outcome
        .codes
        .iter()
        .map(|(code, n)| format!("{code}:{n}"))
        .collect();
    println!(
        "mode={} calls={} errors={} rps={rps:.0} p50_us={} p99_us={} p999_us={} max_us={} \
         error_codes={}",
        args.rate.map_or_else(
            || format!("closed/{}", args.concurrency),
            |r| format!("open/{r}")
        ),
        h.len(),
        outcome.errors,
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        if codes.is_empty() {
            "none".to_owned()
        } else {
            codes.join(",")
        },
    );
    Ok(())
}
