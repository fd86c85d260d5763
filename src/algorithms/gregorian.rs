//! Calendar intervals for `DURATION_IS_GREGORIAN` (reference §6).
//!
//! With the Gregorian bit a request's `duration` does not name milliseconds but a calendar
//! interval: "60 hits per minute" then means per wall-clock minute (`12:00:00.000` to
//! `12:00:59.999`), not per sliding 60 seconds. The algorithms need two facts about the interval
//! that contains the server's clock: when it ends ([`CalendarInterval::end_of_interval`]) and how
//! long it is ([`CalendarInterval::length_ms`], the leaky bucket's leak period).
//!
//! Everything is computed in UTC with plain integer arithmetic on epoch milliseconds (the civil
//! calendar conversion is Howard Hinnant's `days_from_civil` / `civil_from_days`). That keeps the
//! functions total: any `i64` is a valid input, and a result beyond the `i64` range saturates
//! instead of panicking, which a date library with a bounded year range could not promise.
//!
//! **ringlimit fixes:** Gubernator rejects weeks and computes month and year lengths by mixing
//! nanoseconds with milliseconds. Here weeks are ISO weeks (Monday 00:00 to Sunday 23:59:59.999)
//! and months and years have their true length (28–31 days; 365 or 366 days).

/// Milliseconds in a minute.
const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour.
const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// Days in a week.
const WEEK_DAYS: i64 = 7;

/// A calendar interval named by a Gregorian duration code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalendarInterval {
    /// Code 0.
    Minute,
    /// Code 1.
    Hour,
    /// Code 2.
    Day,
    /// Code 3 (ISO week, Monday to Sunday).
    Week,
    /// Code 4.
    Month,
    /// Code 5.
    Year,
}

impl CalendarInterval {
    /// The interval named by a wire code, or `None` for an invalid code.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(CalendarInterval::Minute),
            1 => Some(CalendarInterval::Hour),
            2 => Some(CalendarInterval::Day),
            3 => Some(CalendarInterval::Week),
            4 => Some(CalendarInterval::Month),
            5 => Some(CalendarInterval::Year),
            _ => None,
        }
    }

    /// The wire code.
    pub fn code(self) -> i64 {
        match self {
            CalendarInterval::Minute => 0,
            CalendarInterval::Hour => 1,
            CalendarInterval::Day => 2,
            CalendarInterval::Week => 3,
            CalendarInterval::Month => 4,
            CalendarInterval::Year => 5,
        }
    }

    /// The last millisecond (epoch ms, UTC) of the interval that contains `now_ms`.
    ///
    /// Saturates at `i64::MAX` when the interval ends beyond the representable range.
    pub fn end_of_interval(self, now_ms: i64) -> i64 {
        let next_start = match self {
            CalendarInterval::Minute => next_multiple(now_ms, MINUTE_MS),
            CalendarInterval::Hour => next_multiple(now_ms, HOUR_MS),
            _ => {
                let (_, end_day) = self.day_span(now_ms.div_euclid(DAY_MS));
                end_day.checked_mul(DAY_MS)
            }
        };
        next_start
            .and_then(|start| start.checked_sub(1))
            .unwrap_or(i64::MAX)
    }

    /// The length in milliseconds of the interval that contains `now_ms`.
    ///
    /// This is the true length of that interval (a February is 28 or 29 days), even where
    /// [`end_of_interval`](Self::end_of_interval) had to saturate.
    pub fn length_ms(self, now_ms: i64) -> i64 {
        match self {
            CalendarInterval::Minute => MINUTE_MS,
            CalendarInterval::Hour => HOUR_MS,
            _ => {
                let (start_day, end_day) = self.day_span(now_ms.div_euclid(DAY_MS));
                end_day.saturating_sub(start_day).saturating_mul(DAY_MS)
            }
        }
    }

    /// For the day-based intervals: the first day of the interval containing `day` and the first
    /// day of the next one, both as days since 1970-01-01.
    fn day_span(self, day: i64) -> (i64, i64) {
        match self {
            // Minutes and hours never reach here; a day is the closest sensible answer.
            CalendarInterval::Minute | CalendarInterval::Hour | CalendarInterval::Day => {
                (day, day + 1)
            }
            CalendarInterval::Week => {
                // 1970-01-01 was a Thursday: index 3 when Monday is 0.
                let start = day - (day + 3).rem_euclid(WEEK_DAYS);
                (start, start + WEEK_DAYS)
            }
            CalendarInterval::Month => {
                let (year, month, _) = civil_from_days(day);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (
                    days_from_civil(year, month, 1),
                    days_from_civil(next_year, next_month, 1),
                )
            }
            CalendarInterval::Year => {
                let (year, _, _) = civil_from_days(day);
                (days_from_civil(year, 1, 1), days_from_civil(year + 1, 1, 1))
            }
        }
    }
}

/// The smallest multiple of `unit` strictly greater than `now_ms`, or `None` if out of range.
fn next_multiple(now_ms: i64, unit: i64) -> Option<i64> {
    (now_ms.div_euclid(unit) + 1).checked_mul(unit)
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day`.
///
/// Exact for every year the day-based intervals can produce from an `i64` of milliseconds
/// (about ±292 million years), far inside `i64`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian `(year, month, day)` of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400;
    (if month <= 2 { year + 1 } else { year }, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

    /// Epoch ms of a UTC date and time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid test date")
            .timestamp_millis()
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..=5 {
            let interval = CalendarInterval::from_code(code).expect("valid code");
            assert_eq!(interval.code(), code);
        }
        assert_eq!(CalendarInterval::from_code(6), None);
        assert_eq!(CalendarInterval::from_code(-1), None);
        assert_eq!(CalendarInterval::from_code(i64::MIN), None);
    }

    #[test]
    fn ends_of_intervals() {
        use CalendarInterval::{Day, Hour, Minute, Month, Week, Year};
        let sunday_end = utc(2019, 11, 18, 0, 0, 0) - 1;
        let new_year = utc(2020, 1, 1, 0, 0, 0);
        for (interval, at, end) in [
            // The reference's examples.
            (Minute, utc(2019, 11, 11, 0, 0, 30), 1_573_430_459_999),
            (Hour, utc(2019, 11, 11, 0, 20, 1), 1_573_433_999_999),
            (Day, utc(2019, 11, 11, 12, 10, 9), 1_573_516_799_999),
            (Month, utc(2019, 11, 11, 22, 2, 23), 1_575_158_399_999),
            // 2019-11-11 was a Monday; its ISO week ends Sunday 2019-11-17 23:59:59.999.
            (Week, utc(2019, 11, 11, 0, 0, 0), sunday_end),
            (Week, sunday_end, sunday_end),
            (Week, utc(2019, 11, 14, 13, 0, 0), sunday_end),
            // The epoch itself (a Thursday) belongs to the week ending Sunday 1970-01-04.
            (Week, 0, utc(1970, 1, 5, 0, 0, 0) - 1),
            (Year, utc(2019, 11, 11, 0, 0, 0), new_year - 1),
            // A leap February.
            (
                Month,
                utc(2024, 2, 10, 8, 0, 0),
                utc(2024, 3, 1, 0, 0, 0) - 1,
            ),
            // December rolls over to January.
            (Month, utc(2019, 12, 31, 23, 59, 59), new_year - 1),
            (Month, new_year, utc(2020, 2, 1, 0, 0, 0) - 1),
        ] {
            assert_eq!(interval.end_of_interval(at), end, "{interval:?} at {at}");
        }
    }

    #[test]
    fn lengths_of_intervals() {
        use CalendarInterval::{Day, Hour, Minute, Month, Week, Year};
        let now = utc(2019, 11, 11, 0, 0, 30);
        for (interval, at, length) in [
            (Week, 0, 604_800_000),
            // Years and leap years.
            (Year, utc(2019, 6, 1, 0, 0, 0), 365 * DAY_MS),
            (Year, utc(2020, 6, 1, 0, 0, 0), 366 * DAY_MS),
            // February; 1900 is not a leap year, 2000 is.
            (Month, utc(2024, 2, 10, 8, 0, 0), 29 * DAY_MS),
            (Month, utc(2023, 2, 10, 0, 0, 0), 28 * DAY_MS),
            (Month, utc(1900, 2, 1, 0, 0, 0), 28 * DAY_MS),
            (Month, utc(2000, 2, 1, 0, 0, 0), 29 * DAY_MS),
            (Month, utc(2019, 12, 31, 23, 59, 59), 31 * DAY_MS),
            // The fixed lengths.
            (Minute, now, 60_000),
            (Hour, now, 3_600_000),
            (Day, now, 86_400_000),
            (Week, now, 604_800_000),
        ] {
            assert_eq!(interval.length_ms(at), length, "{interval:?} at {at}");
        }
    }

    #[test]
    fn last_millisecond_belongs_to_its_interval() {
        let end = CalendarInterval::Minute.end_of_interval(utc(2019, 11, 11, 0, 0, 30));
        assert_eq!(CalendarInterval::Minute.end_of_interval(end), end);
        assert_eq!(
            CalendarInterval::Minute.end_of_interval(end + 1),
            end + 60_000
        );
    }

    #[test]
    fn before_the_epoch() {
        assert_eq!(CalendarInterval::Minute.end_of_interval(-1), -1);
        assert_eq!(CalendarInterval::Day.end_of_interval(-1), -1);
        assert_eq!(
            CalendarInterval::Month.end_of_interval(utc(1969, 2, 3, 4, 5, 6)),
            utc(1969, 3, 1, 0, 0, 0) - 1
        );
    }

    #[test]
    fn extremes_saturate_without_panicking() {
        for interval in [
            CalendarInterval::Minute,
            CalendarInterval::Hour,
            CalendarInterval::Day,
            CalendarInterval::Week,
            CalendarInterval::Month,
            CalendarInterval::Year,
        ] {
            for now in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let end = interval.end_of_interval(now);
                assert!(end >= now, "{interval:?} at {now}: end {end}");
                assert!(interval.length_ms(now) >= 60_000);
            }
            assert_eq!(interval.end_of_interval(i64::MAX), i64::MAX);
        }
    }

    /// Cross-checks the integer calendar against chrono over several centuries.
    #[test]
    fn agrees_with_chrono() {
        let mut now = utc(1600, 1, 1, 0, 0, 0);
        let stop = utc(2500, 1, 1, 0, 0, 0);
        // An odd step (about 9.3 days) visits every weekday, month day and time of day.
        let step = 9 * DAY_MS + 7 * HOUR_MS + 13 * MINUTE_MS + 17_001;
        while now < stop {
            let at: DateTime<Utc> = DateTime::from_timestamp_millis(now).expect("in range");
            let date = at.date_naive();
            let month_start = NaiveDate::from_ymd_opt(date.year(), date.month(), 1).expect("date");
            let next_month = month_start
                .checked_add_months(chrono::Months::new(1))
                .expect("date");
            let month_end = ms_of(next_month) - 1;
            assert_eq!(CalendarInterval::Month.end_of_interval(now), month_end);
            assert_eq!(
                CalendarInterval::Month.length_ms(now),
                ms_of(next_month) - ms_of(month_start)
            );
            let next_year = NaiveDate::from_ymd_opt(date.year() + 1, 1, 1).expect("date");
            assert_eq!(
                CalendarInterval::Year.end_of_interval(now),
                ms_of(next_year) - 1
            );
            let days_to_monday = 7 - i64::from(date.weekday().num_days_from_monday());
            let next_monday = date + chrono::Duration::days(days_to_monday);
            assert_eq!(
                CalendarInterval::Week.end_of_interval(now),
                ms_of(next_monday) - 1
            );
            now += step;
        }
    }

    /// Epoch ms of midnight UTC at the start of `date`.
    fn ms_of(date: NaiveDate) -> i64 {
        date.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis()
    }
}
