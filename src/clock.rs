//! The clock: now in Unix nanoseconds, and the RFC 3339 times image configs and runtimes carry (`created`,
//! containerd's lease expiry), read and written without a date-time crate.
//!
//! Every module that stamps a time takes it from here, so the stores, the pull and the bridges agree on one
//! representation (signed Unix nanoseconds, 0 before the epoch is not reachable in practice).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    ns_of(SystemTime::now())
}

/// A system time in Unix nanoseconds (0 for a time before the epoch).
pub fn ns_of(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// `2023-11-14T22:13:20Z` or with fractions and an offset, to Unix nanoseconds.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => return None,
    };
    let mut c = clock.split(':');
    let (h, mi) = (c.next()?.parse::<i64>().ok()?, c.next()?.parse::<i64>().ok()?);
    let sec_str = c.next()?;
    let (secs, frac) = sec_str.split_once('.').unwrap_or((sec_str, ""));
    let secs: i64 = secs.parse().ok()?;
    let nanos: i64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    let off_secs = match offset.chars().next()? {
        'Z' | 'z' => 0,
        sign => {
            let (oh, om) = offset[1..].split_once(':')?;
            let v = oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60;
            if sign == '-' { -v } else { v }
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + secs - off_secs) * 1_000_000_000) + nanos)
}

/// Unix nanoseconds as RFC 3339 in UTC with nanoseconds (`2023-11-14T22:13:20.5Z`; no fraction when whole),
/// the form Go's `time.Time` marshals to and parses.
pub fn rfc3339_from_ns(ns: i64) -> String {
    let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ns("2023-11-14T22:13:20Z"), Some(1_700_000_000 * 1_000_000_000));
        assert_eq!(
            rfc3339_ns("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000 * 1_000_000_000 + 500_000_000)
        );
        assert_eq!(rfc3339_ns("yesterday"), None);
    }

    #[test]
    fn writes_rfc3339_that_reads_back() {
        assert_eq!(rfc3339_from_ns(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_ns(951_782_400 * 1_000_000_000), "2000-02-29T00:00:00Z");
        let t = 1_700_000_000 * 1_000_000_000 + 500_000_000;
        assert_eq!(rfc3339_from_ns(t), "2023-11-14T22:13:20.5Z");
        assert_eq!(rfc3339_from_ns(-1_000_000_000), "1969-12-31T23:59:59Z");
        for ns in [t, 1, 123_456_789_012_345_678, -86_400_000_000_001] {
            assert_eq!(rfc3339_ns(&rfc3339_from_ns(ns)), Some(ns));
        }
    }
}
