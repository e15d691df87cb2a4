//! Durations as operators write them in flags: a whole number and a unit,
//! `90d`, `12h`, `10m`, `30s` (retention settings).

use std::time::Duration;

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parses `<whole number><d|h|m|s>`; zero and overflowing values are
/// refused (a retention of nothing is never what was meant).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unit = s.chars().last().ok_or("empty duration")?;
    let secs_per = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, secs)| *secs)
        .ok_or_else(|| format!("'{s}': end with a unit, d, h, m or s (e.g. 90d, 12h, 10m, 30s)"))?;
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}': a whole number before the unit (e.g. 90d, 12h, 10m, 30s)"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("'{s}': too large"))?;
    if n == 0 {
        return Err(format!("'{s}': must be more than zero"));
    }
    // Beyond ~292 billion years `Timestamp` arithmetic would overflow
    // anyway; a century is plenty.
    let secs = n
        .checked_mul(secs_per)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or(format!("'{s}': too large (at most 100 years)"))?;
    Ok(Duration::from_secs(secs))
}

/// The shortest form [`parse`] reads back as `d` (whole seconds).
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    UNITS
        .iter()
        .find(|(_, per)| secs.is_multiple_of(*per) && secs > 0)
        .map(|(u, per)| format!("{}{u}", secs / per))
        .unwrap_or_else(|| format!("{secs}s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_unit() {
        assert_eq!(parse("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "d",
            "10",
            "10x",
            "-5m",
            "1.5h",
            "0s",
            "0d",
            "10 m",
            "m10",
            "99999999999999999999d",
            "36501d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_in_the_largest_whole_unit() {
        assert_eq!(format(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format(Duration::from_secs(36 * 3_600)), "36h");
        assert_eq!(format(Duration::from_secs(600)), "10m");
        assert_eq!(format(Duration::from_secs(61)), "61s");
    }
}
