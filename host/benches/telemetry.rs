//! What tracing costs an invocation, side by side in one run: export off (the subscriber
//! `sigil up` installs without `[telemetry]`), export on with every trace sampled out, and
//! export on at 100% (spans kept by an in-memory exporter, so the network is not measured).
//!
//! Run: `cargo bench -p sigil-host --bench telemetry`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider};
use sigil_host::{EngineConfig, Host};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// The subscriber of `sigil up`: logs at `info` to a sink, plus, with a sampler, the
/// OpenTelemetry layer over Sigil's spans.
fn subscriber(sampler: Option<Sampler>) -> (tracing::Dispatch, Option<SdkTracerProvider>) {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("info"));
    let Some(sampler) = sampler else {
        return (tracing_subscriber::registry().with(fmt).into(), None);
    };
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(InMemorySpanExporter::default())
        .with_sampler(sampler)
        .build();
    let spans = tracing_subscriber::filter::Targets::new()
        .with_target("sigil_host", tracing::Level::DEBUG)
        .with_target("sigil_providers", tracing::Level::DEBUG);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sigil"))
        .with_filter(spans);
    (
        tracing_subscriber::registry().with(fmt).with(otel).into(),
        Some(provider),
    )
}

fn benches(c: &mut Criterion) {
    let keys = tempfile::tempdir().unwrap();
    let echo = common::example_actors(keys.path(), &["echo"]).remove(0);
    let host = Host::builder()
        .engine_config(EngineConfig::default())
        .build()
        .unwrap();
    let actor = host.load_actor(echo).unwrap();
    let payload = vec![0x5au8; 100];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("tracing");
    g.sample_size(60).measurement_time(Duration::from_secs(5));
    for (name, sampler) in [
        ("off", None),
        (
            "on-sampled-out",
            Some(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                0.0,
            )))),
        ),
        ("on-100pct", Some(Sampler::AlwaysOn)),
    ] {
        let (dispatch, provider) = subscriber(sampler);
        tracing::dispatcher::with_default(&dispatch, || {
            g.bench_function(format!("echo-invoke/{name}"), |b| {
                b.iter(|| {
                    rt.block_on(host.invoke_async(&actor, "echo", &payload))
                        .unwrap()
                })
            });
        });
        if let Some(p) = provider {
            let _ = p.shutdown();
        }
    }
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
