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
//! equivalence and its edges (a limit changed inside a window, negative hits and stats past the limit).

use std::borrow::Cow;

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
    /// More counters (descriptors times their limits) than one batch of the cluster holds.
    #[error(
        "{count} counters (descriptors times their limits); at most {} per call",
        crate::error::MAX_BATCH_SIZE
    )]
    TooManyCounters {
        /// How many the call needs.
        count: usize,
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
pub struct RuleStats<'a> {
    /// The domain.
    pub domain: &'a str,
    /// The rule's stat key (or its detailed form).
    pub key: Cow<'a, str>,
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

/// A decided call: the answer and what it adds to the stats (whose names borrow from the
/// configuration and the request, so a call copies no rule's strings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome<'a> {
    /// The answer for Envoy.
    pub response: RateLimitResponse,
    /// One entry per applied (limited) descriptor.
    pub stats: Vec<RuleStats<'a>>,
    /// Whether the global shadow mode turned an over-limit answer into OK.
    pub global_shadow: bool,
}

/// One descriptor's planned evaluation.
#[derive(Debug, Clone)]
enum Planned<'a> {
    /// No rule applies: OK, no `current_limit`.
    NoRule,
    /// `unlimited`: OK, remaining `u32::MAX`.
    Unlimited,
    /// Counted against the applied rule's limits, one item each.
    Limited(Applied<'a>),
}

/// A matched rule as applied to one descriptor; borrowed from the configuration where it can be.
#[derive(Debug, Clone)]
struct Applied<'a> {
    limits: Cow<'a, [Limit]>,
    name: &'a str,
    shadow_mode: bool,
    stat_key: Cow<'a, str>,
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
pub async fn should_rate_limit<'a, C: Counters>(
    counters: &C,
    config: Option<&'a RlsConfig>,
    options: &Options,
    request: &RateLimitRequest,
) -> Result<Outcome<'a>, RlsError> {
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
    let mut planned = plan(config, request, now_ms, counters.max_key_bytes())?;
    let count: usize = planned
        .iter()
        .map(|slot| match slot {
            Planned::Limited(applied) => applied.limits.len(),
            _ => 0,
        })
        .sum();
    if count > crate::error::MAX_BATCH_SIZE {
        return Err(RlsError::TooManyCounters { count });
    }

    let stop_mode = options.stop_increment_when_over_limit;
    let items = if stop_mode {
        items_of(&mut planned, Use::Check)
    } else {
        items_of(&mut planned, Use::CountLast)
    };
    let mut responses = evaluate(counters, items).await?;
    // Empty unless the stop mode held every descriptor back.
    let mut held_back = Vec::new();
    if stop_mode {
        // First a check of every counter; count only if none would go over.
        let would_be_over = over_after(&planned, &responses);
        if would_be_over.iter().any(|over| *over) {
            held_back = would_be_over;
        } else {
            responses = evaluate(counters, items_of(&mut planned, Use::CountLast)).await?;
        }
    }
    // The configuration's copy of the domain's name, so the stats borrow only the configuration
    // (a call with no configured domain has no limited descriptor, hence no stats).
    let domain = config
        .domains
        .get_key_value(&request.domain)
        .map_or("", |(name, _)| name.as_str());
    Ok(answer(
        domain, &planned, &responses, &held_back, now_ms, options,
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
    // Boxed: the cluster's future is large, and every future that holds it inline is copied
    // whole each time it moves (measured with callgrind: memcpy was a tenth of a call's cost).
    let responses = Box::pin(counters.evaluate(items))
        .await
        .map_err(RlsError::Counters)?;
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

fn plan<'a>(
    config: &'a RlsConfig,
    request: &RateLimitRequest,
    now_ms: i64,
    max_key_bytes: usize,
) -> Result<Vec<Planned<'a>>, RlsError> {
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
                Cow::Owned(vec![limit]),
                AppliedRule {
                    name: "",
                    shadow_mode: false,
                    stat_key: Cow::Owned(override_stat_key(&request.domain, descriptor)),
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
                .map(|entry| (entry.key.as_str(), entry.value.as_str())),
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
                    Cow::Borrowed(limits.as_slice()),
                    AppliedRule {
                        name: name.as_deref().unwrap_or_default(),
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

struct AppliedRule<'a> {
    name: &'a str,
    shadow_mode: bool,
    stat_key: Cow<'a, str>,
    detailed: bool,
}

#[allow(clippy::too_many_arguments)]
fn applied<'a>(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    index: usize,
    limits: Cow<'a, [Limit]>,
    rule: AppliedRule<'a>,
    hits: Hits,
    now_ms: i64,
    max_key_bytes: usize,
) -> Result<Applied<'a>, RlsError> {
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
    let entries: usize = descriptor
        .entries
        .iter()
        .map(|entry| entry.key.len() + entry.value.len() + 2 * 20 + 3)
        .sum();
    let mut key = String::with_capacity(domain.len() + entries + 64);
    // Pushed piece by piece: `write!` costs more than the rest of the decision (callgrind).
    let mut number = itoa::Buffer::new();
    key.push_str(number.format(domain.len()));
    key.push(':');
    key.push_str(domain);
    for entry in &descriptor.entries {
        key.push('|');
        key.push_str(number.format(entry.key.len()));
        key.push(':');
        key.push_str(&entry.key);
        key.push_str(number.format(entry.value.len()));
        key.push(':');
        key.push_str(&entry.value);
    }
    key.push('|');
    key.push_str(number.format(length));
    key.push_str("s@");
    key.push_str(number.format(window.start));
    key
}

/// The stat key of a matched rule: its own, or with the request's last value when the rule
/// asks for `detailed_metric` and has no value of its own (as upstream).
fn stat_key_of<'a>(rule: &'a Rule, descriptor: &RateLimitDescriptor) -> (Cow<'a, str>, bool) {
    match descriptor.entries.last() {
        Some(entry) if rule.detailed_metric && rule.value.is_empty() => (
            Cow::Owned(format!("{}_{}", rule.stat_key, entry.value)),
            true,
        ),
        _ => (Cow::Borrowed(rule.stat_key.as_str()), false),
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

/// What the items built by [`items_of`] are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Checks (hits 0) before counting; the keys are needed again.
    Check,
    /// Counting, the keys' last use: they move into the items.
    CountLast,
}

/// The items of the limited descriptors, in order.
fn items_of(planned: &mut [Planned<'_>], use_: Use) -> Vec<proto::RateLimitReq> {
    let mut items = Vec::with_capacity(planned.len());
    for slot in planned {
        let Planned::Limited(applied) = slot else {
            continue;
        };
        let keys = match use_ {
            Use::Check => applied.keys.clone(),
            Use::CountLast => std::mem::take(&mut applied.keys),
        };
        for (limit, key) in applied.limits.iter().zip(keys) {
            items.push(proto::RateLimitReq {
                name: COUNTER_NAME.to_string(),
                unique_key: key,
                hits: match use_ {
                    Use::CountLast => applied.hits.for_bucket(limit),
                    Use::Check => 0,
                },
                limit: i64::from(limit.requests_per_unit) + 1,
                duration: i64::try_from(limit.window_seconds().saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                algorithm: proto::Algorithm::TokenBucket as i32,
                behavior: Behavior::DRAIN_OVER_LIMIT.bits(),
                ..Default::default()
            });
        }
    }
    items
}

/// From checks (hits 0): which descriptors' hits would take some counter past its limit.
fn over_after(planned: &[Planned<'_>], checks: &[proto::RateLimitResp]) -> Vec<bool> {
    let mut next = 0;
    planned
        .iter()
        .map(|slot| {
            let Planned::Limited(applied) = slot else {
                return false;
            };
            let mut over = false;
            for _ in applied.limits.iter() {
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
    /// The count after this call, when the bucket tells it: `L + 1 - tokens` while tokens are
    /// left, or `L + 1` when the hits took exactly the last ones; `None` when they did not fit (the
    /// count is then only known to be past `L + 1`).
    count_after: Option<u64>,
}

fn answer<'a>(
    domain: &'a str,
    planned: &[Planned<'a>],
    responses: &[proto::RateLimitResp],
    held_back: &[bool],
    now_ms: i64,
    options: &Options,
) -> Outcome<'a> {
    let mut outcome = Outcome::default();
    outcome.response.statuses.reserve_exact(planned.len());
    let mut overall_over = false;
    let mut next = 0;
    // For the headers: the limited descriptor with the least remaining.
    let mut tightest: Option<(u32, Limit, &'a str)> = None;
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
                // The reported limit: the first that is over, else the one with the least left.
                let mut reported: Option<LimitAnswer> = None;
                for limit in applied.limits.iter() {
                    let response = responses.get(next);
                    let tokens = response.map_or(0, |response| response.remaining);
                    let admitted = response.is_some_and(|response| response.status == 0);
                    next += 1;
                    let bucket = i64::from(limit.requests_per_unit) + 1;
                    let held = held_back.get(index).copied().unwrap_or(false);
                    let over = held || tokens <= 0;
                    let answer = LimitAnswer {
                        limit: *limit,
                        over,
                        remaining: if over {
                            0
                        } else {
                            u32::try_from((tokens - 1).max(0)).unwrap_or(u32::MAX)
                        },
                        count_after: (!held && (tokens > 0 || admitted))
                            .then(|| u64::try_from(bucket - tokens.clamp(0, bucket)).unwrap_or(0)),
                    };
                    reported = Some(match reported {
                        Some(kept) if kept.over => kept,
                        Some(kept) if !answer.over && kept.remaining <= answer.remaining => kept,
                        _ => answer,
                    });
                }
                let Some(reported) = reported else {
                    continue;
                };
                let mut stats = RuleStats {
                    domain,
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
                    tightest = Some((reported.remaining, reported.limit, applied.name));
                }
                rate_limit_response::DescriptorStatus {
                    code: code as i32,
                    current_limit: Some(current_limit(&reported.limit, applied.name)),
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
            headers(options.headers, remaining, &limit, name, now_ms);
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
fn count_stats(stats: &mut RuleStats<'_>, hits: Hits, answer: &LimitAnswer, ratio: f64) {
    if hits.negative {
        return;
    }
    let hits = hits.count;
    let limit = u64::from(answer.limit.requests_per_unit);
    let near_threshold = (limit as f64 * ratio).floor() as u64;
    stats.total_hits = hits;
    let Some(after) = answer.count_after else {
        // Past `L + 1` the bucket no longer tells how far: every hit counts as over.
        if answer.over {
            stats.over_limit = hits;
        } else {
            stats.within_limit = hits;
        }
        return;
    };
    let before = after.saturating_sub(hits);
    if answer.over {
        if before >= limit {
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

#[cfg(test)]
mod tests {
    use super::super::config::{RlsConfig, parse_domain};
    use super::super::counters::fake::LocalCounters;
    use super::super::wire::rate_limit_descriptor::{Entry, RateLimitOverride};
    use super::*;
    use envoy_types::pb::google::protobuf::UInt64Value;
    use rate_limit_response::Code;

    /// 2023-11-14 22:13:20 UTC: 40 s left in the minute.
    const T: i64 = 1_700_000_000_000;

    const CONFIG: &str = "\
domain: test
descriptors:
  - key: key1
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: key1
    value: vip
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: free
    rate_limit: {unlimited: true}
  - key: zero
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: old
    rate_limit: {unit: minute, requests_per_unit: 1, name: old}
  - key: new
    rate_limit: {unit: minute, requests_per_unit: 10, replaces: [{name: old}]}
  - key: two
    rate_limits:
      - {unit: second, requests_per_unit: 2}
      - {unit: minute, requests_per_unit: 3}
  - key: five
    rate_limit: {unit: second, unit_multiplier: 300, requests_per_unit: 2}
  - key: user
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1}
";

    fn config() -> RlsConfig {
        RlsConfig::from_domains(vec![parse_domain("test.yaml", CONFIG).unwrap()]).unwrap()
    }

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| Entry {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: "test".into(),
            descriptors,
            hits_addend: 0,
        }
    }

    struct Harness {
        counters: LocalCounters,
        config: RlsConfig,
        options: Options,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                counters: LocalCounters::at(T),
                config: config(),
                options: Options::default(),
            }
        }

        async fn call(&self, request: &RateLimitRequest) -> Outcome<'_> {
            should_rate_limit(&self.counters, Some(&self.config), &self.options, request)
                .await
                .unwrap()
        }

        /// (code, remaining) of each descriptor, and the overall code.
        async fn codes(&self, request: &RateLimitRequest) -> (Code, Vec<(Code, u32)>) {
            let response = self.call(request).await.response;
            (
                code(response.overall_code),
                response
                    .statuses
                    .iter()
                    .map(|status| (code(status.code), status.limit_remaining))
                    .collect(),
            )
        }
    }

    fn code(number: i32) -> Code {
        Code::try_from(number).unwrap()
    }

    #[tokio::test]
    async fn basic_limit_counts_refused_hits_and_resets_with_the_window() {
        let harness = Harness::new();
        let one = request(vec![descriptor(&[("key1", "a")])]);
        for remaining in [2, 1, 0] {
            assert_eq!(
                harness.codes(&one).await,
                (Code::Ok, vec![(Code::Ok, remaining)])
            );
        }
        let over = harness.call(&one).await.response;
        assert_eq!(code(over.overall_code), Code::OverLimit);
        let status = &over.statuses[0];
        assert_eq!(status.limit_remaining, 0);
        assert_eq!(
            status.current_limit,
            Some(rate_limit_response::RateLimit {
                name: String::new(),
                requests_per_unit: 3,
                unit: 2
            })
        );
        assert_eq!(status.duration_until_reset.unwrap().seconds, 40);
        // duration_until_reset goes down with the clock.
        harness.counters.clock.advance(15_000);
        let later = harness.call(&one).await.response;
        assert_eq!(later.statuses[0].duration_until_reset.unwrap().seconds, 25);
        // The next window starts fresh.
        harness.counters.clock.advance(25_000);
        assert_eq!(harness.codes(&one).await, (Code::Ok, vec![(Code::Ok, 2)]));
    }

    #[tokio::test]
    async fn most_specific_match_wins_and_unknowns_are_ok_without_a_limit() {
        let harness = Harness::new();
        let vip = harness
            .call(&request(vec![descriptor(&[("key1", "vip")])]))
            .await;
        assert_eq!(vip.response.statuses[0].limit_remaining, 4);
        let none = harness
            .call(&request(vec![
                descriptor(&[("nothing", "x")]),
                descriptor(&[("key1", "a"), ("deeper", "b")]),
            ]))
            .await
            .response;
        for status in &none.statuses {
            assert_eq!((code(status.code), status.limit_remaining), (Code::Ok, 0));
            assert!(status.current_limit.is_none() && status.duration_until_reset.is_none());
        }
        let mut unknown = request(vec![descriptor(&[("key1", "a")])]);
        unknown.domain = "other".into();
        let answer = harness.call(&unknown).await.response;
        assert_eq!(code(answer.overall_code), Code::Ok);
        assert!(answer.statuses[0].current_limit.is_none());
        assert_eq!(harness.counters.buckets(), 1, "only the vip counter exists");
    }

    #[tokio::test]
    async fn every_descriptor_is_counted_even_when_another_is_over() {
        let harness = Harness::new();
        let both = request(vec![
            descriptor(&[("key1", "a")]),
            descriptor(&[("key1", "vip")]),
        ]);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(harness.codes(&both).await);
        }
        assert_eq!(
            seen[3],
            (Code::OverLimit, vec![(Code::OverLimit, 0), (Code::Ok, 1)])
        );
        assert_eq!(
            seen[4],
            (Code::OverLimit, vec![(Code::OverLimit, 0), (Code::Ok, 0)])
        );
        assert_eq!(
            harness.codes(&both).await,
            (
                Code::OverLimit,
                vec![(Code::OverLimit, 0), (Code::OverLimit, 0)]
            )
        );
    }

    #[tokio::test]
    async fn stop_increment_when_over_limit_counts_nothing_once_one_is_over() {
        let mut harness = Harness::new();
        harness.options.stop_increment_when_over_limit = true;
        let both = request(vec![
            descriptor(&[("key1", "a")]),
            descriptor(&[("key1", "vip")]),
        ]);
        for remaining in [(2, 4), (1, 3), (0, 2)] {
            assert_eq!(
                harness.codes(&both).await,
                (
                    Code::Ok,
                    vec![(Code::Ok, remaining.0), (Code::Ok, remaining.1)]
                )
            );
        }
        for _ in 0..3 {
            // key1 would go over: nothing is counted, vip keeps 2.
            assert_eq!(
                harness.codes(&both).await,
                (Code::OverLimit, vec![(Code::OverLimit, 0), (Code::Ok, 2)])
            );
        }
        let vip = request(vec![descriptor(&[("key1", "vip")])]);
        assert_eq!(harness.codes(&vip).await, (Code::Ok, vec![(Code::Ok, 1)]));
    }

    #[tokio::test]
    async fn hits_addend_per_request_and_per_descriptor_and_zero_checks() {
        let harness = Harness::new();
        let mut big = request(vec![descriptor(&[("key1", "vip")])]);
        big.hits_addend = 4;
        assert_eq!(harness.codes(&big).await, (Code::Ok, vec![(Code::Ok, 1)]));
        // Per-descriptor addend overrides the request's; 0 checks without counting.
        let mut check = descriptor(&[("key1", "vip")]);
        check.hits_addend = Some(UInt64Value { value: 0 });
        big.descriptors = vec![check.clone()];
        for _ in 0..3 {
            assert_eq!(harness.codes(&big).await, (Code::Ok, vec![(Code::Ok, 1)]));
        }
        let mut two = descriptor(&[("key1", "vip")]);
        two.hits_addend = Some(UInt64Value { value: 1 });
        assert_eq!(
            harness.codes(&request(vec![two])).await,
            (Code::Ok, vec![(Code::Ok, 0)])
        );
        // Exactly at the limit a check is OK with 0 left; one more hit and a check says over.
        assert_eq!(
            harness.codes(&request(vec![check.clone()])).await,
            (Code::Ok, vec![(Code::Ok, 0)])
        );
        harness
            .call(&request(vec![descriptor(&[("key1", "vip")])]))
            .await;
        assert_eq!(
            harness.codes(&request(vec![check])).await,
            (Code::OverLimit, vec![(Code::OverLimit, 0)])
        );
    }

    #[tokio::test]
    async fn a_first_request_larger_than_the_limit_is_over_and_fills_the_window() {
        let harness = Harness::new();
        let mut huge = request(vec![descriptor(&[("key1", "a")])]);
        huge.hits_addend = 1_000;
        assert_eq!(
            harness.codes(&huge).await,
            (Code::OverLimit, vec![(Code::OverLimit, 0)])
        );
        // Envoy's count is 1000 > 3: a single hit stays over in this window.
        assert_eq!(
            harness
                .codes(&request(vec![descriptor(&[("key1", "a")])]))
                .await,
            (Code::OverLimit, vec![(Code::OverLimit, 0)])
        );
    }

    #[tokio::test]
    async fn limit_override_replaces_the_rule() {
        let harness = Harness::new();
        let mut overridden = descriptor(&[("key1", "a")]);
        overridden.limit = Some(RateLimitOverride {
            requests_per_unit: 1,
            unit: 1,
        });
        let call = request(vec![overridden.clone()]);
        let first = harness.call(&call).await;
        assert_eq!(
            first.response.statuses[0]
                .current_limit
                .as_ref()
                .unwrap()
                .unit,
            1
        );
        assert_eq!(first.stats[0].key, "test.key1_a");
        assert_eq!(
            harness.codes(&call).await,
            (Code::OverLimit, vec![(Code::OverLimit, 0)])
        );
        overridden.limit = Some(RateLimitOverride {
            requests_per_unit: 1,
            unit: 0,
        });
        let error = should_rate_limit(
            &harness.counters,
            Some(&harness.config),
            &harness.options,
            &request(vec![overridden]),
        )
        .await
        .unwrap_err();
        assert_eq!(error, RlsError::BadOverrideUnit { index: 0, unit: 0 });
    }

    #[tokio::test]
    async fn unlimited_zero_shadow_and_replaces() {
        let harness = Harness::new();
        let answer = harness
            .codes(&request(vec![
                descriptor(&[("free", "x")]),
                descriptor(&[("zero", "x")]),
            ]))
            .await;
        assert_eq!(
            answer,
            (
                Code::OverLimit,
                vec![(Code::Ok, UNLIMITED_REMAINING), (Code::OverLimit, 0)]
            )
        );
        let shadow = request(vec![descriptor(&[("shadow", "x")])]);
        harness.call(&shadow).await;
        let over = harness.call(&shadow).await;
        assert_eq!(code(over.response.overall_code), Code::Ok);
        assert_eq!(code(over.response.statuses[0].code), Code::Ok);
        assert_eq!(over.stats[0].shadow_mode, 1);
        assert_eq!(over.stats[0].over_limit, 1);
        // `old` (1/min) is replaced by `new` when both match.
        let both = request(vec![
            descriptor(&[("old", "x")]),
            descriptor(&[("new", "x")]),
        ]);
        for _ in 0..3 {
            let answer = harness.call(&both).await.response;
            assert_eq!(code(answer.overall_code), Code::Ok);
            assert!(answer.statuses[0].current_limit.is_none());
        }
        let old = request(vec![descriptor(&[("old", "x")])]);
        assert_eq!(harness.codes(&old).await.0, Code::Ok);
        assert_eq!(harness.codes(&old).await.0, Code::OverLimit);
    }

    #[tokio::test]
    async fn global_shadow_mode_answers_ok_overall() {
        let mut harness = Harness::new();
        harness.options.global_shadow_mode = true;
        let zero = harness
            .call(&request(vec![descriptor(&[("zero", "")])]))
            .await;
        assert_eq!(code(zero.response.overall_code), Code::Ok);
        assert_eq!(code(zero.response.statuses[0].code), Code::OverLimit);
        assert!(zero.global_shadow);
    }

    #[tokio::test]
    async fn several_limits_on_one_descriptor_and_unit_multiplier() {
        let harness = Harness::new();
        let two = request(vec![descriptor(&[("two", "")])]);
        assert_eq!(harness.codes(&two).await, (Code::Ok, vec![(Code::Ok, 1)]));
        assert_eq!(harness.codes(&two).await, (Code::Ok, vec![(Code::Ok, 0)]));
        let third = harness.call(&two).await.response;
        assert_eq!(code(third.statuses[0].code), Code::OverLimit);
        assert_eq!(third.statuses[0].current_limit.as_ref().unwrap().unit, 1);
        // Next second: the per-second limit has room, the per-minute one is spent (3 counted).
        harness.counters.clock.advance(1_000);
        let fourth = harness.call(&two).await.response;
        assert_eq!(code(fourth.statuses[0].code), Code::OverLimit);
        assert_eq!(fourth.statuses[0].current_limit.as_ref().unwrap().unit, 2);
        // 300-second windows: 200 s into the window at T, so 100 s to go.
        let five = harness
            .call(&request(vec![descriptor(&[("five", "")])]))
            .await;
        assert_eq!(
            five.response.statuses[0]
                .duration_until_reset
                .unwrap()
                .seconds,
            99
        );
    }

    #[tokio::test]
    async fn headers_report_the_tightest_limit() {
        let mut harness = Harness::new();
        harness.options.headers = HeaderMode::Envoy;
        let both = request(vec![
            descriptor(&[("key1", "a")]),
            descriptor(&[("key1", "vip")]),
        ]);
        let headers: Vec<(String, String)> = harness
            .call(&both)
            .await
            .response
            .response_headers_to_add
            .into_iter()
            .map(|header| (header.key, header.value))
            .collect();
        assert_eq!(
            headers,
            [
                ("RateLimit-Limit".to_string(), "3".to_string()),
                ("RateLimit-Remaining".to_string(), "2".to_string()),
                ("RateLimit-Reset".to_string(), "40".to_string()),
            ]
        );
        harness.options.headers = HeaderMode::Draft;
        let draft = harness.call(&both).await.response.response_headers_to_add;
        assert_eq!(draft[0].value, "\"default\";q=3;w=60");
        assert_eq!(draft[1].value, "\"default\";r=1;t=40");
        harness.options.headers = HeaderMode::Off;
        assert!(
            harness
                .call(&both)
                .await
                .response
                .response_headers_to_add
                .is_empty()
        );
    }

    #[tokio::test]
    async fn stats_split_hits_like_upstream() {
        // key1: 3 per minute, near-limit threshold floor(3 * 0.8) = 2.
        let harness = Harness::new();
        let one = request(vec![descriptor(&[("key1", "a")])]);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let stats = harness.call(&one).await.stats.remove(0);
            seen.push((
                stats.total_hits,
                stats.within_limit,
                stats.near_limit,
                stats.over_limit,
            ));
        }
        assert_eq!(
            seen,
            [
                (1, 1, 0, 0),
                (1, 1, 0, 0),
                (1, 1, 1, 0),
                (1, 0, 0, 1),
                (1, 0, 0, 1)
            ]
        );
        // Two hits that cross the limit: one near (the third), one over.
        let harness = Harness::new();
        harness.call(&one).await;
        harness.call(&one).await;
        let mut two = one.clone();
        two.hits_addend = 2;
        let stats = harness.call(&two).await.stats.remove(0);
        assert_eq!(
            (
                stats.total_hits,
                stats.within_limit,
                stats.near_limit,
                stats.over_limit
            ),
            (2, 0, 1, 1)
        );
    }

    #[tokio::test]
    async fn detailed_metric_keys_carry_the_value() {
        let harness = Harness::new();
        let outcome = harness
            .call(&request(vec![descriptor(&[("user", "alice")])]))
            .await;
        assert_eq!(outcome.stats[0].key, "test.user_alice");
        assert!(outcome.stats[0].detailed);
        let plain = harness
            .call(&request(vec![descriptor(&[("key1", "a")])]))
            .await;
        assert_eq!(plain.stats[0].key, "test.key1");
        assert!(!plain.stats[0].detailed);
    }

    #[tokio::test]
    async fn bad_requests_are_errors() {
        let harness = Harness::new();
        let harness = &harness;
        let call = |request: RateLimitRequest| async move {
            should_rate_limit(
                &harness.counters,
                Some(&harness.config),
                &harness.options,
                &request,
            )
            .await
            .unwrap_err()
        };
        let mut empty = request(vec![descriptor(&[("key1", "a")])]);
        empty.domain.clear();
        assert_eq!(call(empty).await, RlsError::EmptyDomain);
        assert_eq!(call(request(Vec::new())).await, RlsError::NoDescriptors);
        assert!(matches!(
            call(request(vec![
                descriptor(&[("key1", "a")]);
                MAX_DESCRIPTORS + 1
            ]))
            .await,
            RlsError::TooManyDescriptors { .. }
        ));
        let many: Vec<(&str, &str)> = vec![("k", "v"); MAX_ENTRIES + 1];
        assert!(matches!(
            call(request(vec![descriptor(&many)])).await,
            RlsError::TooManyEntries { index: 0, .. }
        ));
        // 128 descriptors of a rule with 16 limits: more counters than one batch.
        let sixteen: Vec<String> = (1..=16)
            .map(|n| format!("{{unit: second, unit_multiplier: {n}, requests_per_unit: 5}}"))
            .collect();
        let wide = format!(
            "domain: test\ndescriptors:\n  - key: k\n    rate_limits: [{}]\n",
            sixteen.join(", ")
        );
        let wide = RlsConfig::from_domains(vec![parse_domain("w.yaml", &wide).unwrap()]).unwrap();
        let error = should_rate_limit(
            &harness.counters,
            Some(&wide),
            &harness.options,
            &request(vec![descriptor(&[("k", "v")]); MAX_DESCRIPTORS]),
        )
        .await
        .unwrap_err();
        assert_eq!(error, RlsError::TooManyCounters { count: 2048 });
        let long = "v".repeat(2_000);
        assert!(matches!(
            call(request(vec![descriptor(&[("key1", &long)])])).await,
            RlsError::TooLong { index: 0, .. }
        ));
        let error = should_rate_limit(
            &harness.counters,
            None,
            &harness.options,
            &request(vec![descriptor(&[("key1", "a")])]),
        )
        .await
        .unwrap_err();
        assert_eq!(error, RlsError::NoConfiguration);
        assert!(!error.is_invalid_argument());
    }

    #[test]
    fn counter_keys_do_not_collide() {
        let limit = Limit {
            requests_per_unit: 1,
            unit: super::super::window::Unit::Minute,
            multiplier: 1,
        };
        let a = counter_key("d", &descriptor(&[("a_b", "c")]), &limit, T);
        let b = counter_key("d", &descriptor(&[("a", "b_c")]), &limit, T);
        assert_ne!(a, b);
        assert_eq!(a, "1:d|3:a_b1:c|60s@1699999980");
    }

    /// The equivalence the module rests on: against envoy ratelimit's arithmetic (a count per
    /// window, over when count > limit), for pseudo-random limits, hits (0 included) and times.
    #[tokio::test]
    async fn answers_match_envoy_counting_exactly() {
        use std::collections::HashMap;
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for round in 0..40 {
            let limit = next(6) as u32;
            let text = format!(
                "domain: m\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second, unit_multiplier: 10, requests_per_unit: {limit}}}\n"
            );
            let config =
                RlsConfig::from_domains(vec![parse_domain("m.yaml", &text).unwrap()]).unwrap();
            let counters = LocalCounters::at(T + round * 100_000);
            let mut counts: HashMap<i64, u64> = HashMap::new();
            for _ in 0..60 {
                counters.clock.advance(next(1500) as i64);
                let hits = next(5);
                let mut one = descriptor(&[("k", "v")]);
                one.hits_addend = Some(UInt64Value { value: hits });
                let request = RateLimitRequest {
                    domain: "m".into(),
                    descriptors: vec![one],
                    hits_addend: 0,
                };
                let answer =
                    should_rate_limit(&counters, Some(&config), &Options::default(), &request)
                        .await
                        .unwrap()
                        .response;
                let window = Window::at(counters.now_ms(), 10).start;
                let count = counts.entry(window).or_default();
                *count += hits;
                let over = *count > u64::from(limit);
                let expected_remaining = if over { 0 } else { u64::from(limit) - *count };
                let status = &answer.statuses[0];
                assert_eq!(
                    (
                        code(status.code) == Code::OverLimit,
                        u64::from(status.limit_remaining)
                    ),
                    (over, expected_remaining),
                    "limit {limit}, hits {hits}, count {count}"
                );
            }
        }
    }
}
