//! One trace across services, checked with a real OTLP/gRPC receiver started here: an HTTP call
//! through the gateway into fieldops, which asks core about the work order's customer, is one
//! trace whose spans chain gateway → fieldops → core, under the caller's `traceparent`; the
//! same receiver gets the process's metrics over OTLP. Its own test binary: the process's
//! tracing subscriber and exporters are global.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::wildcard_enum_match_arm,
    reason = "test code"
)]

#[path = "../e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Keeps every span exported to it.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                kept.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Keeps every metrics export sent to it.
#[derive(Clone, Default)]
struct MetricsReceiver(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_call_through_the_gateway_into_fieldops_and_core_is_one_trace() {
    let receiver = Receiver::default();
    let metrics = MetricsReceiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(metrics.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The platform's own telemetry, exporting to the receiver.
    let telemetry = crm_platform::telemetry::init_with_endpoint(
        "crm-trace-test",
        Some(&format!("http://{otlp}")),
    );

    let env = support::Env::new().await;
    let customer = env.create("Traced Diner").await.name;
    let router = crm_gateway::router(env.server.channel.clone()).unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw = http.local_addr().unwrap();
    tokio::spawn(crm_gateway::serve(http, router, std::future::pending()));

    let trace_id = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let caller_span = "00f067aa0ba902b7";
    let body = serde_json::json!({"jobType": "JOB_TYPE_GREASE_TRAP", "summary": "Traced",
        "customer": customer,
        "property": format!("{}/properties/{}", env.parent(), uuid::Uuid::now_v7())})
    .to_string();
    let request = format!(
        "POST /v1/{}/workOrders HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\ntraceparent: 00-{trace_id}-{caller_span}-01\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        env.parent(),
        env.token,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    // The property does not exist: fieldops learns so from core.
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Flushes the batch exporter, and the metrics (off the runtime's thread: the export needs it).
    drop(telemetry);
    tokio::task::spawn_blocking(crm_platform::metrics::flush_otlp)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let spans = loop {
        let spans: Vec<Span> = receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        let methods: Vec<String> = spans.iter().map(|s| attribute(s, "rpc.method")).collect();
        if methods.iter().any(|m| m.starts_with("/crm.core.v1."))
            || tokio::time::Instant::now() > deadline
        {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let find = |pred: &dyn Fn(&Span) -> bool, what: &str| {
        spans
            .iter()
            .find(|s| pred(s))
            .unwrap_or_else(|| {
                panic!(
                    "no {what} span in {:#?}",
                    spans
                        .iter()
                        .map(|s| (&s.name, attribute(s, "rpc.method")))
                        .collect::<Vec<_>>()
                )
            })
            .clone()
    };
    let gateway = find(&|s| s.name == "http.request", "gateway");
    assert_eq!(
        hex(&gateway.parent_span_id),
        caller_span,
        "the caller's span is the parent"
    );
    let fieldops = find(
        &|s| attribute(s, "rpc.method") == "/crm.fieldops.v1.WorkOrderService/CreateWorkOrder",
        "fieldops",
    );
    let core = find(
        &|s| attribute(s, "rpc.method").starts_with("/crm.core.v1."),
        "core",
    );
    // Each hop descends from the one before (through spans inside the service, if any).
    let descends = |child: &Span, ancestor: &Span| {
        let mut at = child.clone();
        for _ in 0..16 {
            if at.parent_span_id == ancestor.span_id {
                return true;
            }
            match spans.iter().find(|s| s.span_id == at.parent_span_id) {
                Some(p) => at = p.clone(),
                None => return false,
            }
        }
        false
    };
    assert!(descends(&fieldops, &gateway), "fieldops under the gateway");
    assert!(descends(&core, &fieldops), "core under fieldops");

    // The calls' durations went out over OTLP too, under the service's name.
    let exports = metrics.0.lock().unwrap().clone();
    let resource_names: Vec<String> = exports
        .iter()
        .flat_map(|e| &e.resource_metrics)
        .filter_map(|r| r.resource.as_ref())
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == "service.name")
        .map(|a| format!("{:?}", a.value))
        .collect();
    assert!(
        resource_names.iter().any(|n| n.contains("crm-trace-test")),
        "{resource_names:?}"
    );
    let names: Vec<String> = exports
        .iter()
        .flat_map(|e| &e.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone())
        .collect();
    for want in [
        "rpc.server.call.duration",
        "db.client.connection.count",
        "rpc.server.active_requests",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let create_work_order = exports
        .iter()
        .flat_map(|e| &e.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == "rpc.server.call.duration")
        .filter_map(|m| match &m.data {
            Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => Some(h),
            _ => None,
        })
        .flat_map(|h| &h.data_points)
        .filter(|p| {
            p.attributes
                .iter()
                .any(|a| format!("{:?}", a.value).contains("\"CreateWorkOrder\""))
        })
        .map(|p| p.count)
        .sum::<u64>();
    assert!(create_work_order >= 1, "no CreateWorkOrder call exported");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
