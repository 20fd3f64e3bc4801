//! Wall-clock helpers: milliseconds since the epoch (the index's and the
//! fleet records' time unit) and RFC 3339 timestamps in UTC (the audit log
//! and `--json` output). A leaf: it imports nothing from the crate.

#[cfg(test)]
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 for a clock set before it.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the epoch.
#[cfg(test)]
fn time_of_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (`millis`) or `YYYY-MM-DDTHH:MM:SSZ`.
/// Times before the epoch print as the epoch.
pub fn rfc3339(t: SystemTime, millis: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    if millis {
        let ms = d.subsec_millis();
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date: Howard Hinnant's
/// `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>),
/// for non-negative day counts. Kept here rather than taking a date crate
/// into the library for one line of the audit log; the test checks it
/// against `humantime` over random instants.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime_over_four_centuries() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Up to the year 2400, plus the edges.
            let ms = match i {
                0 => 0,
                1 => 951_782_400_000, // 2000-02-29
                2 => 4_107_542_399_999,
                _ => x % 13_569_465_600_000,
            };
            let t = time_of_ms(ms);
            assert_eq!(
                rfc3339(t, true),
                humantime::format_rfc3339_millis(t).to_string()
            );
            assert_eq!(
                rfc3339(t, false),
                humantime::format_rfc3339_seconds(t).to_string()
            );
        }
    }
}
