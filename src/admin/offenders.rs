//! Which keys were refused most, per time window, in bounded memory.
//!
//! Each window (a minute, an hour, a day) is split into [`SLOTS`] slots of a sixth of its length,
//! each slot a [`SpaceSaving`] summary. A refusal is recorded in the current slot of every window
//! and in the since-start summary; a slot is cleared when time comes back round to it. Asking for a
//! window merges its slots that are no older than the window, so the answer covers the last five
//! sixths of the window up to the whole of it. Time is passed in (epoch ms from the node's clock),
//! which keeps the rotation testable with plain numbers.
//!
//! Memory is bounded by `capacity × (3 × SLOTS + 1)` tracked keys, whatever the traffic.

use super::sketch::SpaceSaving;

/// The slots each window is divided into.
pub const SLOTS: usize = 6;

/// The period an offender list covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Since the node started.
    SinceStart,
    /// The last minute.
    Minute,
    /// The last hour.
    Hour,
    /// The last day.
    Day,
}

impl Window {
    /// The windows that rotate, in slot order.
    const ROTATING: [Window; 3] = [Window::Minute, Window::Hour, Window::Day];

    /// The window named `minute`, `hour`, `day` or `all`.
    pub fn parse(text: &str) -> Option<Window> {
        match text {
            "minute" => Some(Window::Minute),
            "hour" => Some(Window::Hour),
            "day" => Some(Window::Day),
            "all" => Some(Window::SinceStart),
            _ => None,
        }
    }

    /// The name [`Window::parse`] accepts.
    pub fn label(self) -> &'static str {
        match self {
            Window::SinceStart => "all",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }

    /// The window's length in ms (`None` since start).
    pub fn length_ms(self) -> Option<i64> {
        match self {
            Window::SinceStart => None,
            Window::Minute => Some(60_000),
            Window::Hour => Some(3_600_000),
            Window::Day => Some(86_400_000),
        }
    }
}

/// One rotating window: [`SLOTS`] summaries, each labelled with the slot number it holds.
#[derive(Debug)]
struct Slotted {
    slot_ms: i64,
    slots: Vec<(i64, SpaceSaving)>,
}

impl Slotted {
    fn new(length_ms: i64, capacity: usize) -> Self {
        Self {
            slot_ms: (length_ms / SLOTS as i64).max(1),
            slots: (0..SLOTS)
                .map(|_| (i64::MIN, SpaceSaving::new(capacity)))
                .collect(),
        }
    }

    fn slot_of(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.slot_ms)
    }

    fn record(&mut self, name: &str, unique_key: &str, now_ms: i64) {
        let slot = self.slot_of(now_ms);
        let index = usize::try_from(slot.rem_euclid(SLOTS as i64)).unwrap_or(0);
        let (held, summary) = &mut self.slots[index];
        if *held != slot {
            summary.clear();
            *held = slot;
        }
        summary.record(name, unique_key, 1);
    }

    fn summary(&self, now_ms: i64, capacity: usize) -> SpaceSaving {
        let current = self.slot_of(now_ms);
        let oldest = current - (SLOTS as i64 - 1);
        let mut merged = SpaceSaving::new(capacity);
        for (slot, summary) in &self.slots {
            if (oldest..=current).contains(slot) {
                merged.merge(summary);
            }
        }
        merged
    }
}

/// The offender summaries of one node.
#[derive(Debug)]
pub struct Offenders {
    capacity: usize,
    since_start: SpaceSaving,
    windows: [Slotted; 3],
}

impl Offenders {
    /// Summaries that track at most `capacity` keys each.
    pub fn new(capacity: usize) -> Self {
        let window = |w: Window| Slotted::new(w.length_ms().unwrap_or(60_000), capacity);
        Self {
            capacity,
            since_start: SpaceSaving::new(capacity),
            windows: Window::ROTATING.map(window),
        }
    }

    /// The most keys each summary tracks.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records one refusal of `(name, unique_key)` at `now_ms`.
    pub fn record(&mut self, name: &str, unique_key: &str, now_ms: i64) {
        self.since_start.record(name, unique_key, 1);
        for window in &mut self.windows {
            window.record(name, unique_key, now_ms);
        }
    }

    /// The summary of `window` as of `now_ms`.
    pub fn summary(&self, window: Window, now_ms: i64) -> SpaceSaving {
        match window {
            Window::SinceStart => self.since_start.clone(),
            Window::Minute => self.windows[0].summary(now_ms, self.capacity),
            Window::Hour => self.windows[1].summary(now_ms, self.capacity),
            Window::Day => self.windows[2].summary(now_ms, self.capacity),
        }
    }

    /// The keys held over all summaries (for tests of the memory bound).
    pub fn tracked_keys(&self) -> usize {
        self.since_start.len()
            + self
                .windows
                .iter()
                .flat_map(|w| w.slots.iter())
                .map(|(_, s)| s.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040_000;

    fn count_of(summary: &SpaceSaving, key: &str) -> Option<u64> {
        summary
            .top(usize::MAX)
            .into_iter()
            .find(|e| e.unique_key == key)
            .map(|e| e.count)
    }

    #[test]
    fn a_refusal_is_in_every_window_until_it_ages_out() {
        let mut offenders = Offenders::new(4);
        offenders.record("n", "k", T0);
        offenders.record("n", "k", T0 + 1);
        for window in [
            Window::Minute,
            Window::Hour,
            Window::Day,
            Window::SinceStart,
        ] {
            assert_eq!(count_of(&offenders.summary(window, T0), "k"), Some(2));
        }
        let later = T0 + 61_000;
        let next_day = T0 + 86_400_000 + 1;
        for (window, at, count) in [
            // Still within the minute's five older slots 40 s later.
            (Window::Minute, T0 + 40_000, Some(2)),
            // Gone from the minute once its slot is more than five slots old; still in the hour.
            (Window::Minute, later, None),
            (Window::Hour, later, Some(2)),
            (Window::Day, next_day, None),
            (Window::SinceStart, next_day, Some(2)),
        ] {
            let summary = offenders.summary(window, at);
            assert_eq!(count_of(&summary, "k"), count, "{window:?} at {at}");
        }
    }

    #[test]
    fn a_reused_slot_starts_empty() {
        let mut offenders = Offenders::new(4);
        offenders.record("n", "old", T0);
        // Six minute-slots later the same slot index comes round again.
        let again = T0 + 60_000;
        offenders.record("n", "new", again);
        let minute = offenders.summary(Window::Minute, again);
        assert_eq!(count_of(&minute, "old"), None);
        assert_eq!(count_of(&minute, "new"), Some(1));
    }

    #[test]
    fn windows_merge_their_slots() {
        let mut offenders = Offenders::new(4);
        for i in 0..6 {
            offenders.record("n", "k", T0 + i * 10_000);
        }
        let minute = offenders.summary(Window::Minute, T0 + 50_000);
        assert_eq!(count_of(&minute, "k"), Some(6));
        assert_eq!(minute.total(), 6);
    }

    #[test]
    fn memory_is_bounded_by_capacity() {
        let mut offenders = Offenders::new(5);
        for i in 0..20_000 {
            offenders.record("flood", &i.to_string(), T0 + i * 7);
        }
        assert!(offenders.tracked_keys() <= 5 * (3 * SLOTS + 1));
        for window in [
            Window::Minute,
            Window::Hour,
            Window::Day,
            Window::SinceStart,
        ] {
            assert!(offenders.summary(window, T0 + 140_000).len() <= 5);
        }
    }

    #[test]
    fn window_names_round_trip() {
        for window in [
            Window::Minute,
            Window::Hour,
            Window::Day,
            Window::SinceStart,
        ] {
            assert_eq!(Window::parse(window.label()), Some(window));
        }
        assert_eq!(Window::parse("week"), None);
    }
}
