//! Prometheus metrics of a running host.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sigil_providers::ActorIdentity;

use crate::dispatch::ProviderCallObserver;

/// How a call ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed (actor error, trap, limit, provider error).
    Error,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    actor: String,
    operation: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    actor: String,
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContractLabels {
    contract: String,
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderCallLabels {
    actor: String,
    contract: String,
    operation: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
    kind: String,
    contract: String,
}

fn latency_histogram() -> Histogram {
    // 10 µs to ~40 s.
    Histogram::new(exponential_buckets(0.000_01, 2.5, 17))
}

/// The host's metrics, served at `/metrics` in the Prometheus text format.
pub struct Metrics {
    registry: Registry,
    invocations: Family<CallLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    provider_calls: Family<ProviderCallLabels, Counter>,
    provider_latency: Family<ContractLabels, Histogram, fn() -> Histogram>,
    provider_up: Family<ProviderLabels, Gauge>,
    in_flight: Gauge<i64, std::sync::atomic::AtomicI64>,
    actors: Gauge<i64, std::sync::atomic::AtomicI64>,
    links: Gauge<i64, std::sync::atomic::AtomicI64>,
    refused: Counter<u64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sigil");
        let invocations = Family::<CallLabels, Counter>::default();
        registry.register(
            "invocations",
            "Actor invocations, by actor, operation and outcome",
            invocations.clone(),
        );
        let latency: Family<LatencyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "invocation_duration_seconds",
            "Wall-clock time of actor invocations, by actor and operation",
            latency.clone(),
        );
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Calls from actors to capability providers, by actor, contract, operation and outcome",
            provider_calls.clone(),
        );
        let provider_latency: Family<ContractLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "provider_call_duration_seconds",
            "Time of provider calls, by contract and operation",
            provider_latency.clone(),
        );
        let provider_up = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "provider_up",
            "1 when a provider instance reports itself healthy, else 0",
            provider_up.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "invocations_in_flight",
            "Actor invocations running now",
            in_flight.clone(),
        );
        let actors = Gauge::default();
        registry.register("actors", "Actors loaded", actors.clone());
        let links = Gauge::default();
        registry.register("links", "Links applied", links.clone());
        let refused = Counter::default();
        registry.register(
            "invocations_refused",
            "Invocations refused because the host was draining",
            refused.clone(),
        );
        Metrics {
            registry,
            invocations,
            latency,
            provider_calls,
            provider_latency,
            provider_up,
            in_flight,
            actors,
            links,
            refused,
        }
    }

    /// Records one finished invocation.
    pub fn invocation(&self, actor: &str, operation: &str, ok: bool, elapsed: Duration) {
        let outcome = if ok { Outcome::Ok } else { Outcome::Error };
        self.invocations
            .get_or_create(&CallLabels {
                actor: actor.to_string(),
                operation: operation.to_string(),
                outcome,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                actor: actor.to_string(),
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The gauge of invocations in flight.
    pub fn in_flight(&self) -> &Gauge<i64, std::sync::atomic::AtomicI64> {
        &self.in_flight
    }

    /// Counts an invocation refused while draining.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// Sets the number of loaded actors and applied links.
    pub fn set_counts(&self, actors: usize, links: usize) {
        self.actors.set(i64::try_from(actors).unwrap_or(i64::MAX));
        self.links.set(i64::try_from(links).unwrap_or(i64::MAX));
    }

    /// Sets the health gauge of one provider instance.
    pub fn provider_health(&self, provider: &str, kind: &str, contract: &str, up: bool) {
        self.provider_up
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                kind: kind.to_string(),
                contract: contract.to_string(),
            })
            .set(i64::from(up));
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl ProviderCallObserver for Metrics {
    fn observe(
        &self,
        actor: &ActorIdentity,
        contract_id: &str,
        operation: &str,
        ok: bool,
        elapsed: Duration,
    ) {
        let outcome = if ok { Outcome::Ok } else { Outcome::Error };
        self.provider_calls
            .get_or_create(&ProviderCallLabels {
                actor: actor.name.clone(),
                contract: contract_id.to_string(),
                operation: operation.to_string(),
                outcome,
            })
            .inc();
        self.provider_latency
            .get_or_create(&ContractLabels {
                contract: contract_id.to_string(),
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}
