//! Calendar intervals for DURATION_IS_GREGORIAN (reference §6). PLACEHOLDER: being written.

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
    pub fn from_code(_code: i64) -> Option<Self> {
        todo!()
    }

    /// The wire code.
    pub fn code(self) -> i64 {
        todo!()
    }

    /// The last millisecond (epoch ms, UTC) of the interval that contains `now_ms`.
    pub fn end_of_interval(self, _now_ms: i64) -> i64 {
        todo!()
    }

    /// The length in milliseconds of the interval that contains `now_ms`.
    pub fn length_ms(self, _now_ms: i64) -> i64 {
        todo!()
    }
}
