//! Times as RFC 3339 UTC text (`2026-11-28T01:15:10.123Z`): in webhook payloads, and read from
//! settings that name a moment (`SWITCHBOARD_JWT_PREVIOUS_SECRET_UNTIL`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-28T01:15:10.123Z` (UTC, milliseconds).
pub fn format(time: SystemTime) -> String {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (secs, ms) = (millis / 1_000, millis % 1_000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, UTC only, from 1970 on.
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't'])?;
    let time = time.strip_suffix(['Z', 'z'])?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock_parts = clock.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (
        clock_parts.next()??,
        clock_parts.next()??,
        clock_parts.next()??,
    );
    let valid = date_parts.next().is_none()
        && clock_parts.next().is_none()
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let millis = fraction
        .get(..3)
        .unwrap_or(fraction)
        .parse::<u64>()
        .map_or(0, |n| n * 10u64.pow(3 - fraction.len().min(3) as u32));
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Its inverse, `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        assert_eq!(format(t), "2021-02-25T15:02:10.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_what_it_formats_and_refuses_the_rest() {
        for millis in [0, 951_782_400_000, 1_614_265_330_123, 1_796_000_000_999] {
            let t = UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(parse(&format(t)), Some(t), "{}", format(t));
        }
        assert_eq!(
            parse("2026-12-01T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_796_083_200))
        );
        assert_eq!(
            parse("2026-12-01T00:00:00.5Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_796_083_200_500))
        );
        for bad in [
            "2026-12-01",
            "2026-12-01T00:00:00",
            "2026-12-01T00:00:00+01:00",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "soon",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
