//! One wire `RateLimitReq` as the router takes it ([`Item`]), and its validation into a
//! [`LimitKey`] and an algorithm request.
//!
//! Every check that can fail one item lives here, in Gubernator's order (unique key, then name), so
//! that bad input becomes a clear per-item error before anything touches the store. Items that pass
//! are guaranteed to be safe to evaluate: non-negative limit, duration and burst, a known algorithm
//! and calendar interval, and a leaky bucket whose leak rate is defined.

use std::collections::HashMap;
use std::fmt;

use bytestring::ByteString;

use crate::algorithms::{Algorithm, Behavior, CalendarInterval, LimitDuration, RateLimitRequest};
use crate::proto;

/// The identity of one rate limit in the store: its namespace and key, kept apart so that
/// `a_b`+`c` and `a`+`b_c` are different limits (Gubernator's joined string makes them collide).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitKey {
    /// The `name` (namespace) of the limit.
    pub name: String,
    /// The `unique_key` within the namespace.
    pub unique_key: String,
}

impl LimitKey {
    /// A key for `name` and `unique_key`.
    pub fn new(name: impl Into<String>, unique_key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            unique_key: unique_key.into(),
        }
    }

    /// Gubernator's hash key, `name + "_" + unique_key`: what the ring hashes to choose the owner.
    pub fn hash_key(&self) -> String {
        format!("{}_{}", self.name, self.unique_key)
    }
}

/// A [`LimitKey`] borrowed: how an item evaluated here reaches the store without building the
/// key's two strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// The `name` (namespace) of the limit.
    pub name: &'a str,
    /// The `unique_key` within the namespace.
    pub unique_key: &'a str,
}

impl KeyRef<'_> {
    /// The owned key.
    pub fn to_key(self) -> LimitKey {
        LimitKey::new(self.name, self.unique_key)
    }
}

impl<'a> From<&'a LimitKey> for KeyRef<'a> {
    fn from(key: &'a LimitKey) -> Self {
        Self {
            name: &key.name,
            unique_key: &key.unique_key,
        }
    }
}

/// One `RateLimitReq` as the router takes it: the wire item, its name and unique key sharing the
/// bytes of the request it was decoded from ([`crate::wire_items`]), so that decoding an item
/// allocates and copies nothing. A `proto::RateLimitReq` converts into one (and back) without
/// copying either string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// The limit's namespace.
    pub name: ByteString,
    /// The key within the namespace.
    pub unique_key: ByteString,
    /// The hits to take (0 asks without taking).
    pub hits: i64,
    /// The limit.
    pub limit: i64,
    /// The duration, in milliseconds or as a calendar code.
    pub duration: i64,
    /// The wire algorithm (0 token bucket, 1 leaky bucket; others are refused by validation).
    pub algorithm: i32,
    /// The wire behaviour bits.
    pub behavior: i32,
    /// The burst of a leaky bucket.
    pub burst: i64,
    /// The item's metadata.
    pub metadata: HashMap<String, String>,
    /// When the request was made, in milliseconds since the epoch, if the client said.
    pub created_at: Option<i64>,
}

impl Item {
    /// The item's key, borrowed.
    pub fn key(&self) -> KeyRef<'_> {
        KeyRef {
            name: &self.name,
            unique_key: &self.unique_key,
        }
    }
}

impl From<proto::RateLimitReq> for Item {
    fn from(item: proto::RateLimitReq) -> Self {
        Self {
            name: item.name.into(),
            unique_key: item.unique_key.into(),
            hits: item.hits,
            limit: item.limit,
            duration: item.duration,
            algorithm: item.algorithm,
            behavior: item.behavior,
            burst: item.burst,
            metadata: item.metadata,
            created_at: item.created_at,
        }
    }
}

impl From<Item> for proto::RateLimitReq {
    fn from(item: Item) -> Self {
        Self {
            name: item.name.into(),
            unique_key: item.unique_key.into(),
            hits: item.hits,
            limit: item.limit,
            duration: item.duration,
            algorithm: item.algorithm,
            behavior: item.behavior,
            burst: item.burst,
            metadata: item.metadata,
            created_at: item.created_at,
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.name, self.unique_key)
    }
}

/// Why one item of a call could not be evaluated. The message is what the item's `error` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// `unique_key` is empty (Gubernator's exact message).
    #[error("field 'unique_key' cannot be empty")]
    EmptyUniqueKey,
    /// `name` is empty (Gubernator's exact message; it calls the name a namespace).
    #[error("field 'namespace' cannot be empty")]
    EmptyName,
    /// `name` or `unique_key` is longer than the configured maximum.
    #[error("field '{field}' is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The maximum in bytes.
        max: usize,
    },
    /// `algorithm` is neither `TOKEN_BUCKET` (0) nor `LEAKY_BUCKET` (1).
    #[error("invalid rate limit algorithm '{0}'")]
    InvalidAlgorithm(i32),
    /// `limit`, `duration` or `burst` is negative.
    #[error("field '{0}' cannot be negative")]
    Negative(&'static str),
    /// `DURATION_IS_GREGORIAN` is set but `duration` names no calendar interval.
    #[error(
        "behavior DURATION_IS_GREGORIAN is set but duration '{0}' is not a calendar interval \
         (0 minute, 1 hour, 2 day, 3 week, 4 month, 5 year)"
    )]
    InvalidCalendarInterval(i64),
    /// A leaky bucket needs a duration to compute its leak rate.
    #[error("field 'duration' must be greater than 0 for LEAKY_BUCKET")]
    LeakyBucketWithoutDuration,
}

impl ItemError {
    /// Every value [`ItemError::label`] can return, so the counter starts at 0 for each.
    pub const LABELS: [&'static str; 7] = [
        "empty_unique_key",
        "empty_name",
        "key_too_long",
        "invalid_algorithm",
        "negative_value",
        "invalid_gregorian_duration",
        "leaky_bucket_without_duration",
    ];

    /// A short stable label for metrics (`gubernator_check_error_counter{error=...}`).
    pub fn label(&self) -> &'static str {
        match self {
            ItemError::EmptyUniqueKey => "empty_unique_key",
            ItemError::EmptyName => "empty_name",
            ItemError::TooLong { .. } => "key_too_long",
            ItemError::InvalidAlgorithm(_) => "invalid_algorithm",
            ItemError::Negative(_) => "negative_value",
            ItemError::InvalidCalendarInterval(_) => "invalid_gregorian_duration",
            ItemError::LeakyBucketWithoutDuration => "leaky_bucket_without_duration",
        }
    }
}

/// Whether an item's `error` text is a validation failure ([`ItemError`]'s messages, which are
/// Gubernator's: they name a field, the algorithm or the calendar behaviour) rather than a failure
/// to reach the key's owner. Edges that fail open when the cluster cannot decide use it to never
/// fail open on a request's own bad input.
pub fn is_validation_message(message: &str) -> bool {
    message.starts_with("field '")
        || message.starts_with("invalid rate limit algorithm")
        || message.starts_with("behavior DURATION_IS_GREGORIAN")
}

/// Limits on item fields that protect the node from hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// The longest `name` or `unique_key`, in bytes.
    pub max_key_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
        }
    }
}

/// An item that passed validation: the key of its limit (built once, by moving the strings out of
/// the wire item), the request the algorithms evaluate, and the rest of the wire item, which a
/// forward or an owed hit sends on.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The limit's key.
    pub key: LimitKey,
    /// What the algorithms evaluate.
    pub request: RateLimitRequest,
    /// The wire item without its name and unique key (they are in `key`).
    rest: proto::RateLimitReq,
}

impl Checked {
    /// `item`, validated into `request` (by [`validate_item`]). The key's strings are copied out
    /// of the request's bytes here: the items that need a [`Checked`] are those that go on to
    /// another node, a GLOBAL limit or a handoff, not the common local case.
    pub fn new(item: Item, request: RateLimitRequest) -> Self {
        Self {
            key: LimitKey::new(item.name, item.unique_key),
            request,
            rest: proto::RateLimitReq {
                name: String::new(),
                unique_key: String::new(),
                hits: item.hits,
                limit: item.limit,
                duration: item.duration,
                algorithm: item.algorithm,
                behavior: item.behavior,
                burst: item.burst,
                metadata: item.metadata,
                created_at: item.created_at,
            },
        }
    }

    /// The wire item again, stamped with the call's `created_at`, to send to another node.
    pub fn into_item(self) -> proto::RateLimitReq {
        proto::RateLimitReq {
            name: self.key.name,
            unique_key: self.key.unique_key,
            created_at: Some(self.request.created_at),
            ..self.rest
        }
    }

    /// The item's metadata.
    pub fn metadata(&self) -> &std::collections::HashMap<String, String> {
        &self.rest.metadata
    }

    /// [`Checked::into_item`] of a copy.
    pub fn to_item(&self) -> proto::RateLimitReq {
        self.clone().into_item()
    }
}

/// Validates `item` (see [`validate`]) into a [`Checked`] item.
pub fn check(
    item: impl Into<Item>,
    now_ms: i64,
    limits: InputLimits,
) -> Result<Checked, ItemError> {
    let item = item.into();
    let request = validate_item(&item, now_ms, limits)?;
    Ok(Checked::new(item, request))
}

/// The [`Numbers`] of a wire item of either form (`proto::RateLimitReq` or [`Item`]: the fields
/// have the same names).
macro_rules! numbers_of {
    ($item:expr) => {
        Numbers {
            hits: $item.hits,
            limit: $item.limit,
            duration: $item.duration,
            algorithm: $item.algorithm,
            behavior: $item.behavior,
            burst: $item.burst,
            created_at: $item.created_at,
        }
    };
}

/// The fields of a wire item that validation reads besides its key.
struct Numbers {
    hits: i64,
    limit: i64,
    duration: i64,
    algorithm: i32,
    behavior: i32,
    burst: i64,
    created_at: Option<i64>,
}

/// Validates `item` into the request the algorithms evaluate. `now_ms` is the call's timestamp,
/// used when the item carries no `created_at` (or 0).
pub fn validate(
    item: &proto::RateLimitReq,
    now_ms: i64,
    limits: InputLimits,
) -> Result<RateLimitRequest, ItemError> {
    validate_parts(
        &item.name,
        &item.unique_key,
        numbers_of!(item),
        now_ms,
        limits,
    )
}

/// [`validate`] for an [`Item`].
pub fn validate_item(
    item: &Item,
    now_ms: i64,
    limits: InputLimits,
) -> Result<RateLimitRequest, ItemError> {
    validate_parts(
        &item.name,
        &item.unique_key,
        numbers_of!(item),
        now_ms,
        limits,
    )
}

fn validate_parts(
    name: &str,
    unique_key: &str,
    item: Numbers,
    now_ms: i64,
    limits: InputLimits,
) -> Result<RateLimitRequest, ItemError> {
    if unique_key.is_empty() {
        return Err(ItemError::EmptyUniqueKey);
    }
    if name.is_empty() {
        return Err(ItemError::EmptyName);
    }
    check_length("name", name, limits.max_key_bytes)?;
    check_length("unique_key", unique_key, limits.max_key_bytes)?;

    let algorithm = match item.algorithm {
        0 => Algorithm::TokenBucket,
        1 => Algorithm::LeakyBucket,
        other => return Err(ItemError::InvalidAlgorithm(other)),
    };
    for (field, value) in [
        ("limit", item.limit),
        ("duration", item.duration),
        ("burst", item.burst),
    ] {
        if value < 0 {
            return Err(ItemError::Negative(field));
        }
    }
    let behavior = Behavior::from_bits(item.behavior);
    let duration = if behavior.contains(Behavior::DURATION_IS_GREGORIAN) {
        CalendarInterval::from_code(item.duration)
            .map(LimitDuration::Calendar)
            .ok_or(ItemError::InvalidCalendarInterval(item.duration))?
    } else {
        if algorithm == Algorithm::LeakyBucket && item.duration == 0 {
            return Err(ItemError::LeakyBucketWithoutDuration);
        }
        LimitDuration::Millis(item.duration)
    };
    let created_at = match item.created_at {
        Some(at) if at != 0 => at,
        _ => now_ms,
    };

    Ok(RateLimitRequest {
        hits: item.hits,
        limit: item.limit,
        duration,
        algorithm,
        behavior,
        burst: item.burst,
        created_at,
    })
}

fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), ItemError> {
    if value.len() > max {
        return Err(ItemError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each kind (a new variant must be added here too).
    fn one_of_each_error() -> [ItemError; 7] {
        [
            ItemError::EmptyUniqueKey,
            ItemError::EmptyName,
            ItemError::TooLong {
                field: "unique_key",
                len: 2000,
                max: 1024,
            },
            ItemError::InvalidAlgorithm(7),
            ItemError::Negative("limit"),
            ItemError::InvalidCalendarInterval(9),
            ItemError::LeakyBucketWithoutDuration,
        ]
    }

    #[test]
    fn every_item_error_label_is_listed() {
        let errors = one_of_each_error();
        for error in &errors {
            // A new variant fails to compile in `label` until it has one; list it here too.
            assert!(ItemError::LABELS.contains(&error.label()), "{error:?}");
        }
        assert_eq!(errors.len(), ItemError::LABELS.len());
    }

    fn item(name: &str, key: &str) -> proto::RateLimitReq {
        proto::RateLimitReq {
            name: name.into(),
            unique_key: key.into(),
            hits: 1,
            limit: 10,
            duration: 1000,
            ..Default::default()
        }
    }

    fn check(req: proto::RateLimitReq) -> Result<RateLimitRequest, ItemError> {
        validate(&req, 5_000, InputLimits::default())
    }

    #[test]
    fn empty_unique_key_is_checked_before_empty_name() {
        assert_eq!(check(item("", "")), Err(ItemError::EmptyUniqueKey));
        assert_eq!(
            ItemError::EmptyUniqueKey.to_string(),
            "field 'unique_key' cannot be empty"
        );
        assert_eq!(check(item("", "k")), Err(ItemError::EmptyName));
        assert_eq!(
            ItemError::EmptyName.to_string(),
            "field 'namespace' cannot be empty"
        );
    }

    #[test]
    fn keys_do_not_collide_where_the_hash_key_does() {
        let a = LimitKey::new("a_b", "c");
        let b = LimitKey::new("a", "b_c");
        assert_ne!(a, b);
        assert_eq!(a.hash_key(), b.hash_key());
    }

    #[test]
    fn over_long_keys_are_rejected() {
        let long = "x".repeat(1025);
        assert!(matches!(
            check(item(&long, "k")),
            Err(ItemError::TooLong { field: "name", .. })
        ));
        assert!(matches!(
            check(item("n", &long)),
            Err(ItemError::TooLong {
                field: "unique_key",
                ..
            })
        ));
    }

    #[test]
    fn unknown_algorithm_is_named() {
        let mut req = item("n", "k");
        req.algorithm = 7;
        assert_eq!(check(req), Err(ItemError::InvalidAlgorithm(7)));
        assert_eq!(
            ItemError::InvalidAlgorithm(7).to_string(),
            "invalid rate limit algorithm '7'"
        );
    }

    #[test]
    fn negative_limit_duration_and_burst_are_rejected() {
        for (field, mutate) in [
            (
                "limit",
                (|r: &mut proto::RateLimitReq| r.limit = -1) as fn(&mut _),
            ),
            ("duration", |r| r.duration = -1),
            ("burst", |r| r.burst = -1),
        ] {
            let mut req = item("n", "k");
            mutate(&mut req);
            assert_eq!(check(req), Err(ItemError::Negative(field)));
        }
        assert_eq!(
            ItemError::Negative("limit").to_string(),
            "field 'limit' cannot be negative"
        );
    }

    #[test]
    fn gregorian_duration_must_name_an_interval() {
        let mut req = item("n", "k");
        req.behavior = Behavior::DURATION_IS_GREGORIAN.bits();
        req.duration = 6;
        assert_eq!(
            check(req.clone()),
            Err(ItemError::InvalidCalendarInterval(6))
        );
        req.duration = 3;
        assert_eq!(
            check(req).unwrap().duration,
            LimitDuration::Calendar(CalendarInterval::Week)
        );
    }

    #[test]
    fn leaky_bucket_needs_a_duration_unless_gregorian() {
        let mut req = item("n", "k");
        req.algorithm = 1;
        req.duration = 0;
        assert_eq!(
            check(req.clone()),
            Err(ItemError::LeakyBucketWithoutDuration)
        );
        req.behavior = Behavior::DURATION_IS_GREGORIAN.bits();
        assert!(check(req).is_ok());
    }

    #[test]
    fn created_at_defaults_to_the_call_time() {
        assert_eq!(check(item("n", "k")).unwrap().created_at, 5_000);
        let mut req = item("n", "k");
        req.created_at = Some(0);
        assert_eq!(check(req.clone()).unwrap().created_at, 5_000);
        req.created_at = Some(42);
        assert_eq!(check(req).unwrap().created_at, 42);
    }

    #[test]
    fn behaviour_combinations_are_kept_as_bits() {
        let mut req = item("n", "k");
        req.behavior = 6;
        req.duration = 0;
        let valid = check(req).unwrap();
        assert!(valid.behavior.contains(Behavior::GLOBAL));
        assert!(valid.behavior.contains(Behavior::DURATION_IS_GREGORIAN));
    }

    #[test]
    fn every_item_error_is_recognised_as_a_validation_message() {
        for error in one_of_each_error() {
            assert!(is_validation_message(&error.to_string()), "{error}");
        }
        assert!(!is_validation_message(
            "error while forwarding to owner 10.0.0.1:1051: unavailable"
        ));
    }

    #[test]
    fn a_checked_item_is_sent_on_as_it_came_with_its_created_at() {
        let sent = proto::RateLimitReq {
            name: "n".into(),
            unique_key: "k".into(),
            hits: 3,
            limit: 10,
            // A calendar code, with GLOBAL, DURATION_IS_GREGORIAN and a bit no behaviour names.
            duration: 4,
            algorithm: 1,
            behavior: 2 | 4 | 1 << 20,
            burst: 7,
            metadata: [("traceparent".to_string(), "00-ab".to_string())].into(),
            created_at: None,
        };
        let checked = super::check(sent.clone(), 5_000, InputLimits::default()).unwrap();
        assert_eq!(checked.metadata(), &sent.metadata);
        let expected = proto::RateLimitReq {
            created_at: Some(5_000),
            ..sent
        };
        assert_eq!(checked.to_item(), expected);
        assert_eq!(checked.into_item(), expected);
    }
}
