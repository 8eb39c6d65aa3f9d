//! Wall-clock formatting without a date crate: RFC 3339 in UTC and human durations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (y, mo, d, rem / 3600, (rem % 3600) / 60, rem % 60, since.subsec_millis())
}

/// `2026-11-23T01:55:21Z`
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2026-11-23T01:55:21.123Z`
pub fn rfc3339_millis(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// Days since 1970-01-01 of a civil date (the inverse of `civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads back what [`rfc3339`] (or [`rfc3339_millis`]) wrote: `2026-11-23T01:55:21Z`.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (time, millis) = match time.split_once('.') {
        Some((t, ms)) => (t, ms.parse::<u64>().ok()?),
        None => (time, 0),
    };
    let mut t = time.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, da as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
}

/// A time span as people type it: `90`, `90s`, `5m`, `2h`, `1h30m`. `None` when malformed.
pub fn parse_span(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// `01:55:21`
pub fn hms(t: SystemTime) -> String {
    let (_, _, _, h, mi, s, _) = parts(t);
    format!("{h:02}:{mi:02}:{s:02}")
}

/// Go-style durations as operators know them from Drone: `60m0s`, `1m5s`, `4.2s`, `350ms`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{}m{}s", secs / 3600, (secs % 3600) / 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if secs >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The deadline wording of §4: whole minutes and seconds (`60m0s`).
pub fn minutes_seconds(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}m{}s", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_312_521_123);
        assert_eq!(rfc3339(t), "2026-11-22T01:55:21Z");
        assert_eq!(rfc3339_millis(t), "2026-11-22T01:55:21.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(minutes_seconds(Duration::from_secs(3600)), "60m0s");
        assert_eq!(minutes_seconds(Duration::from_secs(3)), "0m3s");
        assert_eq!(human(Duration::from_millis(350)), "350ms");
        assert_eq!(human(Duration::from_secs(65)), "1m5s");
        for t in [t, UNIX_EPOCH, UNIX_EPOCH + Duration::from_secs(951_782_400)] {
            assert_eq!(parse_rfc3339(&rfc3339(t)).map(rfc3339), Some(rfc3339(t)));
        }
        assert_eq!(parse_rfc3339("2026-11-22T01:55:21.123Z"), Some(t));
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_span("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_span("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_span("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_span("5x"), None);
        assert_eq!(parse_span("m"), None);
        assert_eq!(parse_span("5m3"), None);
    }
}
