//! Trace export with OpenTelemetry: the settings (`[telemetry]` in `host.toml` and the
//! standard `OTEL_*` environment variables), and the tracer that a `tracing` layer sends
//! spans to. Off unless an endpoint is given: then nothing is built, no connection is made,
//! and spans cost what disabled `tracing` spans cost. See `docs/observability.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;

/// The `[telemetry]` table of `host.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryTable {
    /// The OTLP endpoint: a base URL (`/v1/traces` is added) such as
    /// `http://127.0.0.1:4318`.
    pub endpoint: Option<String>,
    /// The full URL traces are posted to (used as given).
    pub traces_endpoint: Option<String>,
    /// `http/protobuf` (the only one built in).
    pub protocol: Option<String>,
    /// Headers sent with each export (an API key, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The service name (default `sigil`).
    pub service_name: Option<String>,
    /// The share of new traces kept, 0 to 1 (default 1); a request that arrives inside a
    /// trace follows its caller's decision.
    pub sample_ratio: Option<f64>,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// The URL traces are posted to.
    pub traces_endpoint: String,
    /// Headers sent with each export.
    pub headers: BTreeMap<String, String>,
    /// The service name.
    pub service_name: String,
    /// The share of new traces kept.
    pub sample_ratio: f64,
}

/// What the environment says, as a function so tests can give their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The settings from `[telemetry]` (when the file has it) and the `OTEL_*` variables of
/// `env`, which win over the file. `None` when neither names an endpoint, or when
/// `OTEL_SDK_DISABLED=true`: nothing is exported.
pub fn settings(
    table: Option<&TelemetryTable>,
    env: Env<'_>,
) -> Result<Option<TelemetrySettings>, String> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let table = table.cloned().unwrap_or_default();
    let traces_endpoint = match (
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        table.traces_endpoint,
        table.endpoint,
    ) {
        (Some(full), _, _, _) => full,
        (None, Some(base), _, _) => with_traces_path(&base),
        (None, None, Some(full), _) => full,
        (None, None, None, Some(base)) => with_traces_path(&base),
        (None, None, None, None) => return Ok(None),
    };
    if !(traces_endpoint.starts_with("http://") || traces_endpoint.starts_with("https://")) {
        return Err(format!(
            "the OTLP endpoint {traces_endpoint:?} is not an http:// or https:// URL; give one \
             like \"http://127.0.0.1:4318\""
        ));
    }
    let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .or(table.protocol)
        .unwrap_or_else(|| "http/protobuf".into());
    if protocol != "http/protobuf" {
        return Err(format!(
            "the OTLP protocol {protocol:?} is not built in; use \"http/protobuf\" (port 4318 of \
             a collector)"
        ));
    }
    let mut headers = table.headers;
    if let Some(list) =
        var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
    {
        for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("OTEL_EXPORTER_OTLP_HEADERS: {pair:?} is not key=value"))?;
            headers.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let service_name = var("OTEL_SERVICE_NAME")
        .or(table.service_name)
        .unwrap_or_else(|| "sigil".into());
    let mut sample_ratio = table.sample_ratio.unwrap_or(1.0);
    match var("OTEL_TRACES_SAMPLER").as_deref() {
        None => {}
        Some("always_on" | "parentbased_always_on") => sample_ratio = 1.0,
        Some("always_off" | "parentbased_always_off") => sample_ratio = 0.0,
        Some("traceidratio" | "parentbased_traceidratio") => {
            if let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") {
                sample_ratio = arg.parse().map_err(|_| {
                    format!("OTEL_TRACES_SAMPLER_ARG = {arg:?} is not a number from 0 to 1")
                })?;
            }
        }
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER = {other:?} is not one Sigil knows; use \
                 parentbased_traceidratio (with OTEL_TRACES_SAMPLER_ARG), always_on or always_off"
            ));
        }
    }
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(format!(
            "sample_ratio = {sample_ratio} is out of range; use 0 to 1"
        ));
    }
    Ok(Some(TelemetrySettings {
        traces_endpoint,
        headers,
        service_name,
        sample_ratio,
    }))
}

fn with_traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// A running export: the SDK's tracer provider. Call [`Telemetry::shutdown`] before the
/// process exits, so that the last spans are sent.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the exporter and the tracer provider (batching, parent-based sampling with
    /// the ratio); answers it with a tracer for the `tracing` layer. Needs a tokio runtime
    /// for the batch exporter's task only when spans are exported.
    pub fn start(
        settings: &TelemetrySettings,
    ) -> Result<(Self, opentelemetry_sdk::trace::Tracer), String> {
        // The exporter's HTTPS client uses rustls on ring, like every client here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(settings.traces_endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .with_headers(settings.headers.clone().into_iter().collect())
            .build()
            .map_err(|e| format!("cannot make the OTLP exporter: {e}"))?;
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let tracer = provider.tracer("sigil");
        Ok((Telemetry { provider }, tracer))
    }

    /// Sends what is buffered and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(settings(None, &env(&[])), Ok(None));
        assert_eq!(
            settings(
                Some(&TelemetryTable::default()),
                &env(&[("OTEL_SERVICE_NAME", "x")])
            ),
            Ok(None)
        );
        let on = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(settings(None, &on), Ok(None));
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let table = TelemetryTable {
            endpoint: Some("http://file:4318/".into()),
            service_name: Some("from-file".into()),
            sample_ratio: Some(0.5),
            headers: [("a".to_string(), "1".to_string())].into(),
            ..TelemetryTable::default()
        };
        let s = settings(Some(&table), &env(&[])).unwrap().unwrap();
        assert_eq!(s.traces_endpoint, "http://file:4318/v1/traces");
        assert_eq!(s.service_name, "from-file");
        assert_eq!(s.sample_ratio, 0.5);
        let s = settings(
            Some(&table),
            &env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://env:4318/custom",
                ),
                ("OTEL_SERVICE_NAME", "from-env"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "b=2, a=3"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.traces_endpoint, "http://env:4318/custom");
        assert_eq!(s.service_name, "from-env");
        assert_eq!(s.sample_ratio, 0.25);
        assert_eq!(s.headers.get("a").map(String::as_str), Some("3"));
        assert_eq!(s.headers.get("b").map(String::as_str), Some("2"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_fix() {
        let e = settings(None, &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")])).unwrap_err();
        assert!(e.contains("not an http:// or https:// URL"), "{e}");
        let e = settings(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("use \"http/protobuf\""), "{e}");
        let e = settings(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
    }
}
