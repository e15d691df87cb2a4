//! OpenTelemetry traces: one trace per event, from the sender's request to
//! the receiver.
//!
//! Off unless an OTLP endpoint is configured (`--otlp-endpoint`, or the
//! standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_ENDPOINT`). Off, nothing is exported, no exporter
//! thread runs, and the span helpers return [`tracing::Span::none`] after
//! one atomic load, so the hot paths pay nothing.
//!
//! On, [`Exporter`] sends spans over OTLP/HTTP (protobuf) from the SDK's
//! batch processor (its own thread), through `tracing-opentelemetry`: the
//! spans are ordinary `tracing` spans. The sampler (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`), export headers and timeouts
//! (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`) are read by the SDK itself.
//!
//! - [`context`]: the W3C `traceparent`/`tracestate` a message is created
//!   in (stored with it) and the one each webhook carries;
//! - [`spans`]: the spans Hookline makes (API requests, ingest, attempts,
//!   claim batches) and the trace and span ids they put in log lines.

pub mod context;
pub mod spans;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Filtered, Targets};

/// Set once an exporter starts: spans are worth making from then on.
static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are being exported (by this process).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Where traces go and under which name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub traces_url: String,
    pub service_name: String,
}

impl OtlpConfig {
    /// From `--otlp-endpoint` (a base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`)
    /// and the standard variables, looked up with `var`. The flag wins, then
    /// the per-signal variable (used as is), then the general one (with
    /// `/v1/traces` appended). `None`: traces are off (also when
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    pub fn resolve(flag: Option<&str>, var: impl Fn(&str) -> Option<String>) -> Option<OtlpConfig> {
        let set = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return None;
        }
        let base = |url: &str| format!("{}/v1/traces", url.trim_end_matches('/'));
        let traces_url = match flag.map(str::trim).filter(|f| !f.is_empty()) {
            Some(flag) => base(flag),
            None => set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT").map(|u| base(&u)))?,
        };
        let service_name = set("OTEL_SERVICE_NAME").unwrap_or_else(|| "hookline".into());
        Some(OtlpConfig { traces_url, service_name })
    }
}

/// The running exporter. [`Exporter::shutdown`] sends what is still
/// buffered; call it (and build the exporter) outside any async runtime:
/// the HTTP client blocks.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    pub fn start(cfg: &OtlpConfig) -> anyhow::Result<Exporter> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(cfg.traces_url.clone())
            .build()?;
        let resource = Resource::builder().with_service_name(cfg.service_name.clone()).build();
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        ON.store(true, Ordering::Relaxed);
        Ok(Exporter { provider })
    }

    /// The `tracing` layer that turns Hookline's spans into OpenTelemetry
    /// spans, with the log lines inside them (info and above) as span
    /// events. Other crates' spans and events (hyper, sqlx, …) stay out:
    /// they would multiply what is exported without telling an operator
    /// more.
    pub fn layer<S>(&self) -> Filtered<OpenTelemetryLayer<S, SdkTracer>, Targets, S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        let ours = Targets::new().with_target("hookline", tracing::Level::INFO);
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("hookline")).with_filter(ours)
    }

    /// Export every finished span now (blocks until the collector answers).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("hookline: exporting traces failed: {e}");
        }
    }

    pub fn shutdown(self) {
        self.flush();
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(OtlpConfig::resolve(None, env(&[("OTEL_SERVICE_NAME", "x")])), None);
        assert_eq!(OtlpConfig::resolve(Some(" "), env(&[])), None);
    }

    #[test]
    fn the_flag_wins_then_the_signal_variable_then_the_general_one() {
        let all = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318/"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://signal:4318/custom"),
            ("OTEL_SERVICE_NAME", "webhooks"),
        ];
        let cfg = OtlpConfig::resolve(Some("http://flag:4318"), env(&all)).unwrap();
        assert_eq!(cfg.traces_url, "http://flag:4318/v1/traces");
        assert_eq!(cfg.service_name, "webhooks");
        let cfg = OtlpConfig::resolve(None, env(&all)).unwrap();
        assert_eq!(cfg.traces_url, "http://signal:4318/custom");
        let cfg = OtlpConfig::resolve(None, env(&all[..1])).unwrap();
        assert_eq!(cfg.traces_url, "http://general:4318/v1/traces");
        assert_eq!(cfg.service_name, "hookline");
    }

    #[test]
    fn the_standard_switches_turn_it_off() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(OtlpConfig::resolve(None, env(&[base, ("OTEL_SDK_DISABLED", "true")])), None);
        assert_eq!(OtlpConfig::resolve(None, env(&[base, ("OTEL_TRACES_EXPORTER", "none")])), None);
        assert!(OtlpConfig::resolve(None, env(&[base, ("OTEL_TRACES_EXPORTER", "otlp")])).is_some());
    }
}
