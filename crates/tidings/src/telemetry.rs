//! OpenTelemetry traces over OTLP/HTTP (protobuf), when `[telemetry] enabled` is set.
//!
//! The server's own `tracing` spans become OpenTelemetry spans through `tracing-opentelemetry`:
//! `request` (one HTTP request: `id`, `method`, `route`), `connection` (one WebSocket or MQTT
//! connection: `id`, `transport`), `ws.frame` (one client frame handled: `connection.id`,
//! `frame.type`), `store.commit` (one group commit: `messages`) and `push.deliver` (one push
//! notification: `outcome`). Only spans are exported, never log events, so nothing a log line
//! says travels to the collector; span fields are ids, names and counts chosen not to hold
//! tokens, passwords or message content (`crates/tidings/tests/telemetry.rs` checks the
//! exported spans for the secrets a workload used).
//!
//! The exporter runs on the SDK's batch thread. Its HTTP requests go through the reqwest
//! client already in the tree, spawned on the server's tokio runtime (the batch thread has
//! none), so no second HTTP stack or gRPC is linked in.

use crate::config::TelemetryConfig;
use anyhow::Context;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::time::Duration;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// How long one export request may take before it is abandoned (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter's HTTP client: reqwest on the server's runtime.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let exchange = async move {
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut answer = Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        };
        // The batch thread polls this future with its own executor; the request itself needs
        // tokio's reactor, so it runs as a task there and only its result crosses over.
        self.runtime.spawn(exchange).await?
    }
}

/// The running trace pipeline; [`Telemetry::shutdown`] exports what is still buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the exporter and the tracer provider. Must run inside the tokio runtime.
    pub fn start(config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("cannot build the OTLP HTTP client")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(RuntimeClient {
                client,
                runtime: tokio::runtime::Handle::current(),
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .context("cannot build the OTLP span exporter (config key `telemetry.endpoint`)")?;
        let mut resource = Resource::builder().with_service_name(config.service_name.clone());
        if !config.service_instance.is_empty() {
            resource = resource.with_attribute(KeyValue::new(
                "service.instance.id",
                config.service_instance.clone(),
            ));
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(resource.build())
            .build();
        Ok(Telemetry { provider })
    }

    /// The `tracing` layer that turns the server's spans into exported spans. Log events are
    /// filtered out (they would become span events), and so are other crates' spans.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("tidings");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("tidings")
                    && *meta.level() <= tracing::Level::INFO
            }))
    }

    /// Exports the spans still buffered and stops the exporter. Blocks, so it runs on a
    /// blocking thread while the runtime keeps serving the export requests.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%e, "Could not export the last spans."),
            Err(e) => tracing::warn!(%e, "Could not export the last spans."),
        }
    }
}
