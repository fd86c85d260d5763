//! Go's duration syntax (`500us`, `100ms`, `1m30s`), which Gubernator's configuration uses.

use std::time::Duration;

/// Parses a non-negative Go duration: a sequence of decimal numbers, each with an optional fraction
/// and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `300ms` or `1h15m`. `0` needs no unit.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if unsigned.starts_with('-') {
        return Err(format!("duration '{text}' cannot be negative"));
    }
    if unsigned == "0" {
        return Ok(Duration::ZERO);
    }
    if unsigned.is_empty() {
        return Err("empty duration; expected a value such as 500ms or 5s".into());
    }
    let mut rest = unsigned;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration '{text}' is missing a unit (ns, us, ms, s, m, h)"))?;
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "duration '{text}' is missing a unit (ns, us, ms, s, m, h)"
                ));
            }
            other => {
                return Err(format!(
                    "duration '{text}' has an unknown unit '{other}' (use ns, us, ms, s, m, h)"
                ));
            }
        };
        total_ns = total_ns.saturating_add(scaled(number, unit_ns, text)?);
        rest = next;
    }
    let seconds = u64::try_from(total_ns / 1_000_000_000)
        .map_err(|_| format!("duration '{text}' is too large"))?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(seconds, nanos))
}

/// `number` (with an optional fraction) times `unit_ns`, in nanoseconds.
fn scaled(number: &str, unit_ns: u128, text: &str) -> Result<u128, String> {
    let invalid = || format!("duration '{text}' has an invalid number '{number}'");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| invalid())?
    };
    let mut value = whole.saturating_mul(unit_ns);
    let mut scale = unit_ns;
    for digit in fraction.chars() {
        let digit = u128::from(digit.to_digit(10).ok_or_else(invalid)?);
        scale /= 10;
        value = value.saturating_add(digit.saturating_mul(scale));
    }
    Ok(value)
}

/// Formats a duration the way Go prints it, for logs (`500µs`, `1.5s`, `1m30s`).
pub fn format(duration: Duration) -> String {
    let ns = duration.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim_fraction(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim_fraction(ns, 1_000_000));
    }
    let total_seconds = duration.as_secs();
    let (hours, minutes) = (total_seconds / 3600, (total_seconds % 3600) / 60);
    let seconds_ns = ns % 60_000_000_000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_fraction(seconds_ns, 1_000_000_000)));
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gubernator_defaults_and_compound_and_fractional_values() {
        for (text, expected) in [
            // Gubernator's defaults.
            ("500us", Duration::from_micros(500)),
            ("500µs", Duration::from_micros(500)),
            ("100ms", Duration::from_millis(100)),
            ("5s", Duration::from_secs(5)),
            ("0", Duration::ZERO),
            // Compound and fractional values.
            ("1h15m30.5s", Duration::from_millis(4_530_500)),
            ("1.5s", Duration::from_millis(1_500)),
            (".5ms", Duration::from_micros(500)),
            ("10ns", Duration::from_nanos(10)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("5").unwrap_err().contains("missing a unit"));
        assert!(parse("5d").unwrap_err().contains("unknown unit 'd'"));
        assert!(parse("-5s").unwrap_err().contains("negative"));
        assert!(parse("ms").is_err());
        assert!(parse("1..2s").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_micros(500)), "500µs");
        assert_eq!(format(Duration::from_millis(100)), "100ms");
        assert_eq!(format(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
