//! Fixed windows aligned like envoy ratelimit's.
//!
//! envoy ratelimit counts in fixed windows of the unit's length in seconds, aligned to the Unix
//! epoch: the window of a request at `now` (whole seconds) starts at `now / len * len`, and
//! `duration_until_reset` is `len - now % len`. MONTH is 30 days and YEAR 365 days (fixed second
//! counts, not calendar months), and WEEK windows start on Thursdays (the epoch's weekday), exactly
//! as upstream's `UnitToDivider` and `CalculateReset` do. The `unit_multiplier` extension multiplies
//! the length and keeps the same alignment (5-minute windows start at :00, :05, ...).

use std::fmt;

/// The unit of a limit, with Envoy's `RateLimitResponse.RateLimit.Unit` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
    /// 86 400 seconds.
    Day,
    /// 7 days.
    Week,
    /// 30 days (envoy ratelimit's fixed month).
    Month,
    /// 365 days (envoy ratelimit's fixed year).
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The unit's length in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The unit's lowercase configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// The unit of a configuration name (any case, as upstream upper-cases it); `None` for
    /// anything else, `unknown` included.
    pub fn from_name(name: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|unit| unit.name().eq_ignore_ascii_case(name))
    }

    /// The unit of Envoy's enum number; `None` for UNKNOWN (0) and numbers Envoy does not define.
    pub fn from_wire(number: i32) -> Option<Unit> {
        match number {
            1 => Some(Unit::Second),
            2 => Some(Unit::Minute),
            3 => Some(Unit::Hour),
            4 => Some(Unit::Day),
            5 => Some(Unit::Month),
            6 => Some(Unit::Year),
            7 => Some(Unit::Week),
            _ => None,
        }
    }

    /// Envoy's enum number of the unit.
    pub fn wire(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
            Unit::Year => 6,
            Unit::Week => 7,
        }
    }

    /// Envoy's enum name (`SECOND`, ...), as protojson writes it.
    pub fn wire_name(self) -> &'static str {
        match self {
            Unit::Second => "SECOND",
            Unit::Minute => "MINUTE",
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Week => "WEEK",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fixed window: where it starts and how long it is, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The window's first second (Unix time).
    pub start: i64,
    /// The window's length in seconds (at least 1).
    pub length: i64,
}

impl Window {
    /// The window of length `length_s` seconds that holds `now_ms`.
    pub fn at(now_ms: i64, length_s: u64) -> Window {
        let length = i64::try_from(length_s.max(1)).unwrap_or(i64::MAX);
        let now = now_ms.div_euclid(1000);
        Window {
            start: now.div_euclid(length).saturating_mul(length),
            length,
        }
    }

    /// Seconds from `now_ms` (whole seconds, as upstream) to the end of the window that holds it:
    /// `length - now % length`, so between 1 and `length`.
    pub fn until_reset(now_ms: i64, length_s: u64) -> i64 {
        let length = i64::try_from(length_s.max(1)).unwrap_or(i64::MAX);
        length - now_ms.div_euclid(1000).rem_euclid(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000; // 2023-11-14 22:13:20 UTC

    #[test]
    fn units_match_upstream_dividers() {
        let dividers: Vec<u64> = Unit::ALL.iter().map(|unit| unit.seconds()).collect();
        assert_eq!(
            dividers,
            [1, 60, 3600, 86_400, 604_800, 2_592_000, 31_536_000]
        );
        for unit in Unit::ALL {
            assert_eq!(Unit::from_wire(unit.wire()), Some(unit));
            assert_eq!(
                Unit::from_name(&unit.wire_name().to_lowercase()),
                Some(unit)
            );
        }
        assert_eq!(Unit::from_name("MiNuTe"), Some(Unit::Minute));
        assert_eq!(Unit::from_name("unknown"), None);
        assert_eq!(Unit::from_wire(0), None);
        assert_eq!(Unit::from_wire(8), None);
    }

    #[test]
    fn windows_align_to_the_epoch() {
        // 22:13:20 → the minute started at 22:13:00, 40 s to go.
        let minute = Window::at(T, 60);
        assert_eq!(minute.start, 1_700_000_000 - 20);
        assert_eq!(Window::until_reset(T, 60), 40);
        // Milliseconds do not move the window (upstream counts whole seconds).
        assert_eq!(Window::at(T + 999, 60), minute);
        assert_eq!(Window::until_reset(T + 999, 60), 40);
        // At the boundary a new window starts with its full length to go.
        assert_eq!(Window::at(T + 40_000, 60).start, minute.start + 60);
        assert_eq!(Window::until_reset(T + 40_000, 60), 60);
        // A fixed 30-day month, not the calendar month.
        let month = Window::at(T, Unit::Month.seconds());
        assert_eq!(month.start % 2_592_000, 0);
        // 5-minute windows (unit_multiplier) start at :10 here.
        assert_eq!(Window::at(T, 300).start, 1_700_000_000 - 200);
        assert_eq!(Window::until_reset(T, 300), 100);
    }

    #[test]
    fn until_reset_goes_down_within_a_window() {
        let mut last = i64::MAX;
        for second in 0..59 {
            let left = Window::until_reset(T - 20_000 + second * 1000, 60);
            assert!(left < last);
            last = left;
        }
    }
}
