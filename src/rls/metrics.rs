//! envoy ratelimit's stats as Prometheus counters.
//!
//! Upstream counts `ratelimit.service.rate_limit.<domain>.<key>.{total_hits, over_limit,
//! near_limit, within_limit, shadow_mode}` per configured rule; here they are counters with `domain`
//! and `key` labels. Configured keys are bounded by the configuration; keys that carry a request's
//! value (`detailed_metric`, and `limit` overrides, which upstream also keys by value) go through a
//! [`BoundedLabel`], so a client cannot grow the registry without limit. The service-level stats
//! (configuration loads, global shadow mode, calls by result) are plain counters.

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::decide::RuleStats;
use crate::metrics::{BoundedLabel, Metrics};

/// How many distinct detailed keys are kept as labels before the rest count as `other`.
pub const MAX_DETAILED_KEYS: usize = 1000;

/// The RLS counters, registered in the node's registry.
#[derive(Debug)]
pub struct RlsMetrics {
    /// Hits seen per rule.
    pub total_hits: IntCounterVec,
    /// Hits over the limit per rule.
    pub over_limit: IntCounterVec,
    /// Hits past the near-limit ratio per rule.
    pub near_limit: IntCounterVec,
    /// Hits within the limit per rule.
    pub within_limit: IntCounterVec,
    /// Over-limit hits answered OK by a rule's shadow mode.
    pub shadow_mode: IntCounterVec,
    /// Over-limit answers turned OK by the global shadow mode.
    pub global_shadow_mode: IntCounter,
    /// Configurations loaded (at start and on reload).
    pub config_load_success: IntCounter,
    /// Configurations rejected (the last good one stays).
    pub config_load_error: IntCounter,
    /// `ShouldRateLimit` calls by result: `ok`, `over_limit`, `error`.
    pub calls: IntCounterVec,
    /// `calls` by result, looked up once rather than on every call.
    calls_by_result: [IntCounter; 3],
    detailed_keys: BoundedLabel,
}

/// How a `ShouldRateLimit` call ended (the `result` label of `ringlimit_rls_calls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// Answered, overall OK.
    Ok = 0,
    /// Answered, overall OVER_LIMIT.
    OverLimit = 1,
    /// Not answered (a bad request, no configuration, counters unavailable).
    Error = 2,
}

impl CallResult {
    const LABELS: [&'static str; 3] = ["ok", "over_limit", "error"];
}

fn per_rule(name: &str, help: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &["domain", "key"])
        .unwrap_or_else(|_| unreachable_metric(name))
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name))
}

#[cold]
fn unreachable_metric(name: &str) -> ! {
    // The names and help texts are constants that prometheus accepts; this cannot happen.
    panic!("invalid metric definition {name}")
}

impl RlsMetrics {
    /// The counters, registered in `metrics`' registry.
    pub fn new(metrics: &Metrics) -> Self {
        let calls = IntCounterVec::new(
            Opts::new(
                "ringlimit_rls_calls_total",
                "ShouldRateLimit calls by result (ok, over_limit, error).",
            ),
            &["result"],
        )
        .unwrap_or_else(|_| unreachable_metric("ringlimit_rls_calls_total"));
        let calls_by_result = CallResult::LABELS.map(|result| calls.with_label_values(&[result]));
        let this = Self {
            total_hits: per_rule(
                "ringlimit_rls_total_hits_total",
                "RLS hits per rule (envoy ratelimit's total_hits).",
            ),
            over_limit: per_rule(
                "ringlimit_rls_over_limit_total",
                "RLS hits over the limit per rule (over_limit).",
            ),
            near_limit: per_rule(
                "ringlimit_rls_near_limit_total",
                "RLS hits past the near-limit ratio per rule (near_limit).",
            ),
            within_limit: per_rule(
                "ringlimit_rls_within_limit_total",
                "RLS hits within the limit per rule (within_limit).",
            ),
            shadow_mode: per_rule(
                "ringlimit_rls_shadow_mode_total",
                "RLS over-limit hits answered OK by the rule's shadow_mode.",
            ),
            global_shadow_mode: counter(
                "ringlimit_rls_global_shadow_mode_total",
                "RLS over-limit answers turned OK by GUBER_RLS_SHADOW_MODE.",
            ),
            config_load_success: counter(
                "ringlimit_rls_config_load_success_total",
                "RLS configurations loaded.",
            ),
            config_load_error: counter(
                "ringlimit_rls_config_load_error_total",
                "RLS configurations rejected (the last good one is kept).",
            ),
            calls: calls.clone(),
            calls_by_result,
            detailed_keys: BoundedLabel::new(MAX_DETAILED_KEYS),
        };
        for collector in [
            &this.total_hits,
            &this.over_limit,
            &this.near_limit,
            &this.within_limit,
            &this.shadow_mode,
        ] {
            metrics.register_extra(Box::new(collector.clone()));
        }
        for collector in [
            &this.global_shadow_mode,
            &this.config_load_success,
            &this.config_load_error,
        ] {
            metrics.register_extra(Box::new(collector.clone()));
        }
        metrics.register_extra(Box::new(this.calls.clone()));
        this
    }

    /// Counts one call by how it ended.
    pub fn call(&self, result: CallResult) {
        self.calls_by_result[result as usize].inc();
    }

    /// Adds one call's rule stats.
    pub fn record(&self, stats: &[RuleStats]) {
        for rule in stats {
            let key = if rule.detailed {
                self.detailed_keys.label(&rule.key)
            } else {
                rule.key.as_ref()
            };
            let labels = [rule.domain, key];
            for (vec, value) in [
                (&self.total_hits, rule.total_hits),
                (&self.over_limit, rule.over_limit),
                (&self.near_limit, rule.near_limit),
                (&self.within_limit, rule.within_limit),
                (&self.shadow_mode, rule.shadow_mode),
            ] {
                if value > 0 {
                    vec.with_label_values(&labels).inc_by(value);
                }
            }
        }
    }
}
