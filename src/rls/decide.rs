//! `ShouldRateLimit`'s decision, call for call as envoy ratelimit answers it.
//!
//! envoy ratelimit keeps one counter per (domain, descriptor, window): every request adds its hits,
//! admitted or not, and a descriptor is over when the count after adding exceeds
//! `requests_per_unit`. Here each counter is a Gubernator token bucket of `requests_per_unit + 1`
//! tokens with `DRAIN_OVER_LIMIT`, living in the ring like any item. With `c` the envoy count, the
//! bucket holds `max(L + 1 - c, 0)` tokens after every step (admitted hits take tokens; hits that do
//! not fit drain it to 0, as envoy's count passes the limit), so:
//! - a request is over exactly when the bucket is empty after it (`c > L` ⇔ `L + 1 - c ≤ 0`),
//! - `limit_remaining` is `tokens - 1` (`L - c`), or 0,
//! - a check without counting (hits 0) reads the same, and the one spare token tells "exactly at
//!   the limit" (OK, 0 remaining) from "past it" (over), which a bucket of `L` tokens could not.
//!
//! Hits are capped at `L + 1` per item (more cannot change the answer, and a first request larger
//! than the bucket would otherwise be refused without draining it). docs/envoy.md walks through the
//! equivalence and its two edges (a limit changed inside a window, negative hits past the limit).

use std::fmt::Write as _;

use super::config::{Limit, RateLimit, RlsConfig, Rule};
use super::counters::Counters;
use super::window::Window;
use super::wire::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse, rate_limit_response};
use crate::algorithms::Behavior;
use crate::proto;
use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;

/// The Gubernator `name` of every RLS counter.
pub const COUNTER_NAME: &str = "envoy_rls";

/// The most descriptors one request may carry.
pub const MAX_DESCRIPTORS: usize = 128;

/// The most entries one descriptor may carry.
pub const MAX_ENTRIES: usize = 32;

/// `limit_remaining` of an `unlimited` descriptor (upstream's `math.MaxUint32`).
pub const UNLIMITED_REMAINING: u32 = u32::MAX;

/// How the response headers are added (`GUBER_RLS_RESPONSE_HEADERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderMode {
    /// No headers (the default, as upstream).
    #[default]
    Off,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, as envoy ratelimit's
    /// `LIMIT_RESPONSE_HEADERS_ENABLED`.
    Envoy,
    /// The IETF draft's `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    Draft,
}

impl std::str::FromStr for HeaderMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "off" | "false" | "none" => Ok(HeaderMode::Off),
            "envoy" | "true" | "on" => Ok(HeaderMode::Envoy),
            "draft" | "ietf" => Ok(HeaderMode::Draft),
            other => Err(format!("'{other}' is not off, envoy or draft")),
        }
    }
}

impl std::fmt::Display for HeaderMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderMode::Off => "off",
            HeaderMode::Envoy => "envoy",
            HeaderMode::Draft => "draft",
        })
    }
}

/// The service-wide options (`GUBER_RLS_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Every answer's overall code is OK (upstream `SHADOW_MODE`).
    pub global_shadow_mode: bool,
    /// When any descriptor would be over, count none (upstream
    /// `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT`).
    pub stop_increment_when_over_limit: bool,
    /// Response headers.
    pub headers: HeaderMode,
    /// Hits past this share of the limit are counted as near the limit (upstream
    /// `NEAR_LIMIT_RATIO`, 0.8).
    pub near_limit_ratio: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            global_shadow_mode: false,
            stop_increment_when_over_limit: false,
            headers: HeaderMode::Off,
            near_limit_ratio: 0.8,
        }
    }
}

/// Why a call cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlsError {
    /// The request names no domain.
    #[error("rate limit domain must not be empty")]
    EmptyDomain,
    /// The request has no descriptors.
    #[error("rate limit descriptor list must not be empty")]
    NoDescriptors,
    /// More descriptors than [`MAX_DESCRIPTORS`].
    #[error("{count} descriptors; at most {MAX_DESCRIPTORS} are accepted")]
    TooManyDescriptors {
        /// How many were sent.
        count: usize,
    },
    /// A descriptor with more entries than [`MAX_ENTRIES`].
    #[error("descriptor {index} has {count} entries; at most {MAX_ENTRIES} are accepted")]
    TooManyEntries {
        /// The descriptor's position.
        index: usize,
        /// How many entries it has.
        count: usize,
    },
    /// A descriptor whose counter key would be longer than the node accepts.
    #[error(
        "descriptor {index}: domain and entries take {bytes} bytes; at most {max} are accepted (GUBER_MAX_KEY_LENGTH)"
    )]
    TooLong {
        /// The descriptor's position.
        index: usize,
        /// The key's length.
        bytes: usize,
        /// The node's limit.
        max: usize,
    },
    /// A descriptor's `limit` override with an unknown unit.
    #[error("descriptor {index}: limit override has an unknown unit ({unit})")]
    BadOverrideUnit {
        /// The descriptor's position.
        index: usize,
        /// The unit number sent.
        unit: i32,
    },
    /// No configuration was loaded (`GUBER_RLS_CONFIG` is not set).
    #[error("no rate limit configuration loaded (set GUBER_RLS_CONFIG)")]
    NoConfiguration,
    /// The cluster could not evaluate the counters.
    #[error("rate limit counters unavailable: {0}")]
    Counters(String),
}

impl RlsError {
    /// Whether the caller sent something wrong (rather than the service failing).
    pub fn is_invalid_argument(&self) -> bool {
        !matches!(self, RlsError::NoConfiguration | RlsError::Counters(_))
    }
}

/// What one applied rule contributed to the stats (the envoy stat shape, see [`super::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// The domain.
    pub domain: String,
    /// The rule's stat key (or its detailed form).
    pub key: String,
    /// Whether the key carries a request value (`detailed_metric`, overrides), so unbounded.
    pub detailed: bool,
    /// Hits seen.
    pub total_hits: u64,
    /// Hits over the limit.
    pub over_limit: u64,
    /// Hits between the near-limit threshold and the limit.
    pub near_limit: u64,
    /// Hits within the limit.
    pub within_limit: u64,
    /// Hits over the limit answered OK because of shadow mode.
    pub shadow_mode: u64,
}

/// A decided call: the answer and what it adds to the stats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// The answer for Envoy.
    pub response: RateLimitResponse,
    /// One entry per applied (limited) descriptor.
    pub stats: Vec<RuleStats>,
    /// Whether the global shadow mode turned an over-limit answer into OK.
    pub global_shadow: bool,
}

/// One descriptor's planned evaluation.
#[derive(Debug, Clone)]
enum Planned {
    /// No rule applies: OK, no `current_limit`.
    NoRule,
    /// `unlimited`: OK, remaining `u32::MAX`.
    Unlimited,
    /// Counted against `limits`; `first_item` is the position of the first limit's item.
    Limited(Applied),
}

#[derive(Debug, Clone)]
struct Applied {
    limits: Vec<Limit>,
    name: String,
    shadow_mode: bool,
    stat_key: String,
    detailed: bool,
    /// The signed hits sent (already capped per limit at counting time).
    hits: Hits,
    /// One counter key per limit.
    keys: Vec<String>,
}

/// A descriptor's hits: how many, and whether they are given back (`is_negative_hits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hits {
    count: u64,
    negative: bool,
}

impl Hits {
    /// The item's `hits` for a bucket of `limit + 1` tokens.
    fn for_bucket(self, limit: &Limit) -> i64 {
        let cap = u64::from(limit.requests_per_unit) + 1;
        let hits = i64::try_from(self.count.min(cap)).unwrap_or(i64::MAX);
        if self.negative { -hits } else { hits }
    }
}

/// Decides one call: matches the descriptors, counts through `counters`, answers.
pub async fn should_rate_limit<C: Counters>(
    counters: &C,
    config: Option<&RlsConfig>,
    options: &Options,
    request: &RateLimitRequest,
) -> Result<Outcome, RlsError> {
    if request.domain.is_empty() {
        return Err(RlsError::EmptyDomain);
    }
    if request.descriptors.is_empty() {
        return Err(RlsError::NoDescriptors);
    }
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(RlsError::TooManyDescriptors {
            count: request.descriptors.len(),
        });
    }
    let config = config.ok_or(RlsError::NoConfiguration)?;
    let now_ms = counters.now_ms();
    let planned = plan(config, request, now_ms, counters.max_key_bytes())?;

    let stop_mode = options.stop_increment_when_over_limit;
    let items = items_of(&planned, !stop_mode);
    let mut responses = evaluate(counters, items).await?;
    let mut held_back = vec![false; planned.len()];
    if stop_mode {
        // First a check of every counter; count only if none would go over.
        let would_be_over = over_after(&planned, &responses);
        if would_be_over.iter().any(|over| *over) {
            held_back = would_be_over;
        } else {
            responses = evaluate(counters, items_of(&planned, true)).await?;
        }
    }
    Ok(answer(
        &request.domain,
        &planned,
        &responses,
        &held_back,
        now_ms,
        options,
    ))
}

async fn evaluate<C: Counters>(
    counters: &C,
    items: Vec<proto::RateLimitReq>,
) -> Result<Vec<proto::RateLimitResp>, RlsError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let expected = items.len();
    let responses = counters.evaluate(items).await.map_err(RlsError::Counters)?;
    if responses.len() != expected {
        return Err(RlsError::Counters(format!(
            "{} answers for {expected} counters",
            responses.len()
        )));
    }
    if let Some(error) = responses.iter().find(|response| !response.error.is_empty()) {
        return Err(RlsError::Counters(error.error.clone()));
    }
    Ok(responses)
}

fn plan(
    config: &RlsConfig,
    request: &RateLimitRequest,
    now_ms: i64,
    max_key_bytes: usize,
) -> Result<Vec<Planned>, RlsError> {
    let domain = config.domains.get(&request.domain);
    let mut planned = Vec::with_capacity(request.descriptors.len());
    let mut rules: Vec<Option<&Rule>> = Vec::with_capacity(request.descriptors.len());
    for (index, descriptor) in request.descriptors.iter().enumerate() {
        if descriptor.entries.len() > MAX_ENTRIES {
            return Err(RlsError::TooManyEntries {
                index,
                count: descriptor.entries.len(),
            });
        }
        let hits = Hits {
            count: match &descriptor.hits_addend {
                Some(addend) => addend.value,
                None => u64::from(request.hits_addend.max(1)),
            },
            negative: descriptor.is_negative_hits,
        };
        let Some(domain) = domain else {
            planned.push(Planned::NoRule);
            rules.push(None);
            continue;
        };
        if let Some(limit) = &descriptor.limit {
            // An override replaces any configured rule, never in shadow mode.
            let unit =
                super::window::Unit::from_wire(limit.unit).ok_or(RlsError::BadOverrideUnit {
                    index,
                    unit: limit.unit,
                })?;
            let limit = Limit {
                requests_per_unit: limit.requests_per_unit,
                unit,
                multiplier: 1,
            };
            planned.push(Planned::Limited(applied(
                &request.domain,
                descriptor,
                index,
                vec![limit],
                AppliedRule {
                    name: String::new(),
                    shadow_mode: false,
                    stat_key: override_stat_key(&request.domain, descriptor),
                    detailed: true,
                },
                hits,
                now_ms,
                max_key_bytes,
            )?));
            rules.push(None);
            continue;
        }
        let rule = domain.find(
            descriptor
                .entries
                .iter()
                .map(|entry| (entry.key.as_str(), entry.value.as_str()))
                .collect::<Vec<_>>(),
        );
        rules.push(rule);
        let Some((rule, rate_limit)) =
            rule.and_then(|rule| Some((rule, rule.rate_limit.as_ref()?)))
        else {
            planned.push(Planned::NoRule);
            continue;
        };
        planned.push(match rate_limit {
            RateLimit {
                unlimited: true, ..
            } => Planned::Unlimited,
            RateLimit { limits, name, .. } => {
                let (stat_key, detailed) = stat_key_of(rule, descriptor);
                Planned::Limited(applied(
                    &request.domain,
                    descriptor,
                    index,
                    limits.clone(),
                    AppliedRule {
                        name: name.clone().unwrap_or_default(),
                        shadow_mode: rule.shadow_mode,
                        stat_key,
                        detailed,
                    },
                    hits,
                    now_ms,
                    max_key_bytes,
                )?)
            }
        });
    }
    // `replaces`: a matched rule named by another matched rule's `replaces` is not applied.
    let replaced: Vec<&str> = rules
        .iter()
        .flatten()
        .filter_map(|rule| rule.rate_limit.as_ref())
        .flat_map(|rate_limit| rate_limit.replaces.iter().map(String::as_str))
        .collect();
    if !replaced.is_empty() {
        for (slot, rule) in planned.iter_mut().zip(&rules) {
            let name = rule
                .and_then(|rule| rule.rate_limit.as_ref())
                .and_then(|rate_limit| rate_limit.name.as_deref());
            if name.is_some_and(|name| replaced.contains(&name)) {
                *slot = Planned::NoRule;
            }
        }
    }
    Ok(planned)
}

struct AppliedRule {
    name: String,
    shadow_mode: bool,
    stat_key: String,
    detailed: bool,
}

#[allow(clippy::too_many_arguments)]
fn applied(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    index: usize,
    limits: Vec<Limit>,
    rule: AppliedRule,
    hits: Hits,
    now_ms: i64,
    max_key_bytes: usize,
) -> Result<Applied, RlsError> {
    let keys = limits
        .iter()
        .map(|limit| counter_key(domain, descriptor, limit, now_ms))
        .collect::<Vec<_>>();
    if let Some(long) = keys.iter().find(|key| key.len() > max_key_bytes) {
        return Err(RlsError::TooLong {
            index,
            bytes: long.len(),
            max: max_key_bytes,
        });
    }
    Ok(Applied {
        limits,
        name: rule.name,
        shadow_mode: rule.shadow_mode,
        stat_key: rule.stat_key,
        detailed: rule.detailed,
        hits,
        keys,
    })
}

/// The counter's unique key: domain, entries and window, each length-prefixed so no choice of
/// keys and values can make two descriptors share a counter (upstream joins with `_`, so
/// `a_b=c` and `a=b_c` collide there).
pub fn counter_key(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    limit: &Limit,
    now_ms: i64,
) -> String {
    let length = limit.window_seconds();
    let window = Window::at(now_ms, length);
    let mut key = String::with_capacity(domain.len() + 32);
    let _ = write!(key, "{}:{}", domain.len(), domain);
    for entry in &descriptor.entries {
        let _ = write!(
            key,
            "|{}:{}{}:{}",
            entry.key.len(),
            entry.key,
            entry.value.len(),
            entry.value
        );
    }
    let _ = write!(key, "|{}s@{}", length, window.start);
    key
}

/// The stat key of a matched rule: its own, or with the request's last value when the rule
/// asks for `detailed_metric` and has no value of its own (as upstream).
fn stat_key_of(rule: &Rule, descriptor: &RateLimitDescriptor) -> (String, bool) {
    match descriptor.entries.last() {
        Some(entry) if rule.detailed_metric && rule.value.is_empty() => {
            (format!("{}_{}", rule.stat_key, entry.value), true)
        }
        _ => (rule.stat_key.clone(), false),
    }
}

/// Upstream's stat key of an override: `domain.key_value.key2_value2`.
fn override_stat_key(domain: &str, descriptor: &RateLimitDescriptor) -> String {
    let mut key = domain.to_string();
    for entry in &descriptor.entries {
        key.push('.');
        key.push_str(&entry.key);
        if !entry.value.is_empty() {
            key.push('_');
            key.push_str(&entry.value);
        }
    }
    key
}

/// The items of the limited descriptors, in order; with `count` false, checks (hits 0).
fn items_of(planned: &[Planned], count: bool) -> Vec<proto::RateLimitReq> {
    let mut items = Vec::new();
    for slot in planned {
        let Planned::Limited(applied) = slot else {
            continue;
        };
        for (limit, key) in applied.limits.iter().zip(&applied.keys) {
            items.push(proto::RateLimitReq {
                name: COUNTER_NAME.to_string(),
                unique_key: key.clone(),
                hits: if count {
                    applied.hits.for_bucket(limit)
                } else {
                    0
                },
                limit: i64::from(limit.requests_per_unit) + 1,
                duration: i64::try_from(limit.window_seconds().saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                algorithm: proto::Algorithm::TokenBucket as i32,
                behavior: i32::try_from(Behavior::DRAIN_OVER_LIMIT.bits()).unwrap_or_default(),
                ..Default::default()
            });
        }
    }
    items
}

/// From checks (hits 0): which descriptors' hits would take some counter past its limit.
fn over_after(planned: &[Planned], checks: &[proto::RateLimitResp]) -> Vec<bool> {
    let mut next = 0;
    planned
        .iter()
        .map(|slot| {
            let Planned::Limited(applied) = slot else {
                return false;
            };
            let mut over = false;
            for _ in &applied.limits {
                let tokens = checks.get(next).map_or(0, |check| check.remaining);
                next += 1;
                let hits = if applied.hits.negative {
                    0
                } else {
                    applied.hits.count
                };
                // Over when the count after adding passes the limit: hits ≥ tokens left.
                over |= tokens <= 0 || (hits > 0 && hits >= u64::try_from(tokens).unwrap_or(0));
            }
            over
        })
        .collect()
}

/// One limit's answer, read off its bucket.
#[derive(Debug, Clone, Copy)]
struct LimitAnswer {
    limit: Limit,
    over: bool,
    remaining: u32,
    /// The count after this call, as far as the bucket tells (`L + 1 - tokens`; past the limit
    /// it is only known to be more than `L`).
    count_after: u64,
}

fn answer(
    domain: &str,
    planned: &[Planned],
    responses: &[proto::RateLimitResp],
    held_back: &[bool],
    now_ms: i64,
    options: &Options,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut overall_over = false;
    let mut next = 0;
    // For the headers: the limited descriptor with the least remaining.
    let mut tightest: Option<(u32, Limit, String)> = None;
    for (index, slot) in planned.iter().enumerate() {
        let status = match slot {
            Planned::NoRule => rate_limit_response::DescriptorStatus {
                code: rate_limit_response::Code::Ok as i32,
                ..Default::default()
            },
            Planned::Unlimited => rate_limit_response::DescriptorStatus {
                code: rate_limit_response::Code::Ok as i32,
                limit_remaining: UNLIMITED_REMAINING,
                ..Default::default()
            },
            Planned::Limited(applied) => {
                let mut answers = Vec::with_capacity(applied.limits.len());
                for limit in &applied.limits {
                    let tokens = responses.get(next).map_or(0, |response| response.remaining);
                    next += 1;
                    let bucket = i64::from(limit.requests_per_unit) + 1;
                    let over = held_back.get(index).copied().unwrap_or(false) || tokens <= 0;
                    answers.push(LimitAnswer {
                        limit: *limit,
                        over,
                        remaining: if over {
                            0
                        } else {
                            u32::try_from((tokens - 1).max(0)).unwrap_or(u32::MAX)
                        },
                        count_after: u64::try_from(bucket - tokens.clamp(0, bucket)).unwrap_or(0),
                    });
                }
                // The reported limit: the first that is over, else the one with the least left.
                let Some(reported) = answers
                    .iter()
                    .find(|answer| answer.over)
                    .or_else(|| answers.iter().min_by_key(|answer| answer.remaining))
                    .copied()
                else {
                    continue;
                };
                let mut stats = RuleStats {
                    domain: domain.to_string(),
                    key: applied.stat_key.clone(),
                    detailed: applied.detailed,
                    ..RuleStats::default()
                };
                count_stats(
                    &mut stats,
                    applied.hits,
                    &reported,
                    options.near_limit_ratio,
                );
                let mut code = if reported.over {
                    rate_limit_response::Code::OverLimit
                } else {
                    rate_limit_response::Code::Ok
                };
                if reported.over && applied.shadow_mode {
                    stats.shadow_mode = applied.hits.count;
                    code = rate_limit_response::Code::Ok;
                }
                outcome.stats.push(stats);
                if code == rate_limit_response::Code::OverLimit {
                    overall_over = true;
                }
                if tightest
                    .as_ref()
                    .is_none_or(|(remaining, _, _)| reported.remaining < *remaining)
                {
                    tightest = Some((reported.remaining, reported.limit, applied.name.clone()));
                }
                rate_limit_response::DescriptorStatus {
                    code: code as i32,
                    current_limit: Some(current_limit(&reported.limit, &applied.name)),
                    limit_remaining: reported.remaining,
                    duration_until_reset: Some(ProtoDuration {
                        seconds: Window::until_reset(now_ms, reported.limit.window_seconds()),
                        nanos: 0,
                    }),
                    ..Default::default()
                }
            }
        };
        outcome.response.statuses.push(status);
    }
    if overall_over && options.global_shadow_mode {
        overall_over = false;
        outcome.global_shadow = true;
    }
    outcome.response.overall_code = if overall_over {
        rate_limit_response::Code::OverLimit as i32
    } else {
        rate_limit_response::Code::Ok as i32
    };
    if let Some((remaining, limit, name)) = tightest {
        outcome.response.response_headers_to_add =
            headers(options.headers, remaining, &limit, &name, now_ms);
    }
    outcome
}

/// `current_limit`: the limit's number and unit, and the rule's name.
fn current_limit(limit: &Limit, name: &str) -> rate_limit_response::RateLimit {
    rate_limit_response::RateLimit {
        name: name.to_string(),
        requests_per_unit: limit.requests_per_unit,
        unit: limit.unit.wire(),
    }
}

/// Upstream's stat arithmetic (`base_limiter.go`): hits past the near-limit threshold are near,
/// hits past the limit over, the rest within.
fn count_stats(stats: &mut RuleStats, hits: Hits, answer: &LimitAnswer, ratio: f64) {
    if hits.negative {
        return;
    }
    let hits = hits.count;
    let limit = u64::from(answer.limit.requests_per_unit);
    let near_threshold = (limit as f64 * ratio).floor() as u64;
    stats.total_hits = hits;
    let after = answer.count_after.max(hits.min(limit + 1));
    let before = after.saturating_sub(hits);
    if answer.over {
        if before >= limit || answer.count_after > limit {
            // Past the limit the bucket no longer tells how far: every hit counts as over.
            stats.over_limit = hits;
        } else {
            stats.over_limit = after - limit;
            stats.near_limit = limit - near_threshold.max(before);
        }
    } else {
        stats.within_limit = hits;
        if after > near_threshold {
            stats.near_limit = if before >= near_threshold {
                hits
            } else {
                after - near_threshold
            };
        }
    }
}

/// The response headers of `mode` for the tightest limit.
fn headers(
    mode: HeaderMode,
    remaining: u32,
    limit: &Limit,
    name: &str,
    now_ms: i64,
) -> Vec<HeaderValue> {
    let reset = Window::until_reset(now_ms, limit.window_seconds());
    let header = |key: &str, value: String| HeaderValue {
        key: key.to_string(),
        value,
        ..Default::default()
    };
    match mode {
        HeaderMode::Off => Vec::new(),
        HeaderMode::Envoy => vec![
            header("RateLimit-Limit", limit.requests_per_unit.to_string()),
            header("RateLimit-Remaining", remaining.to_string()),
            header("RateLimit-Reset", reset.to_string()),
        ],
        HeaderMode::Draft => {
            let policy = if name.is_empty() { "default" } else { name };
            let policy = policy.replace(['"', '\\'], "_");
            vec![
                header(
                    "RateLimit-Policy",
                    format!(
                        "\"{policy}\";q={};w={}",
                        limit.requests_per_unit,
                        limit.window_seconds()
                    ),
                ),
                header("RateLimit", format!("\"{policy}\";r={remaining};t={reset}")),
            ]
        }
    }
}
