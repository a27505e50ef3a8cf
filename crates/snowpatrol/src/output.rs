//! Rendering for people (tables) and scripts (`--json`, one JSON document on stdout).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style;

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut b = Builder::default();
    b.push_record(header.iter().map(|s| s.to_string()));
    for r in rows {
        b.push_record(r);
    }
    let mut t = b.build();
    t.with(Style::psql());
    t.to_string()
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}

/// A time for people: UTC, said so, with its age (`2025-06-28 06:00:00 UTC (3h ago)`). `--json` carries
/// RFC 3339 with the offset.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(String::new, |t| time_at(t, Utc::now()))
}

pub fn time_at(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} UTC ({})", t.format("%Y-%m-%d %H:%M:%S"), age(t, now))
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`, or `in 5m` for a time still to come.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let n = secs.unsigned_abs();
    let amount = match n {
        0..=89 => format!("{n}s"),
        90..=5399 => format!("{}m", (n + 30) / 60),
        5400..=172_799 => format!("{}h", (n + 1800) / 3600),
        _ => format!("{}d", (n + 43_200) / 86_400),
    };
    if secs >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// `--since`/`--until`: an RFC 3339 time, a UTC date (its midnight), or an age such as `36h` or `7d` (that
/// long before now).
pub fn parse_when(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| format!("`{s}` reaches too far back")),
        Err(_) => Err(format!(
            "expected an RFC 3339 time (2025-06-28T06:00:00Z), a date (2025-06-28) or an age (36h, 7d), got `{s}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_say_utc_and_their_age() {
        let now = Utc.with_ymd_and_hms(2025, 6, 28, 12, 0, 0).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2025, 6, 28, h, m, 0).unwrap();
        assert_eq!(time_at(at(9, 0), now), "2025-06-28 09:00:00 UTC (3h ago)");
        assert_eq!(age(at(11, 59), now), "60s ago");
        assert_eq!(age(at(11, 30), now), "30m ago");
        assert_eq!(age(at(12, 5), now), "in 5m");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3d ago");
    }

    #[test]
    fn since_and_until_take_times_dates_and_ages() {
        assert_eq!(
            parse_when("2025-06-28").unwrap(),
            Utc.with_ymd_and_hms(2025, 6, 28, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_when("2025-06-28T06:00:00+02:00").unwrap(),
            Utc.with_ymd_and_hms(2025, 6, 28, 4, 0, 0).unwrap()
        );
        let back = Utc::now() - parse_when("36h").unwrap();
        assert!((back.num_minutes() - 36 * 60).abs() <= 1);
        assert!(
            parse_when("yesterday-ish")
                .unwrap_err()
                .contains("expected")
        );
    }
}

pub fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => {
            let ms = (e - s).num_milliseconds().max(0) as u64;
            humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
        }
        _ => String::new(),
    }
}

/// Long error texts would wreck a table; the full text is in `--json` and the database.
pub fn short(s: Option<&str>, max: usize) -> String {
    let s = s.unwrap_or("").replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Stdout was closed by the reader (`snowpatrol events | head -1`). Not a failure: like `ripgrep` and
/// `cat`, the CLI stops writing and exits 0 (`main` looks for this marker, so a broken pipe to the database
/// or to Slack is still an error).
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// A failed write to stdout as an error: [`StdoutClosed`] for a closed pipe, a message naming stdout
/// otherwise (a full disk behind `> file` is ENOSPC and must say so, not panic as `println!` does).
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}

/// The same for the CSV writer, whose errors wrap the I/O error.
pub fn csv_error(e: csv::Error) -> anyhow::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => stdout_error(io),
        other => anyhow::anyhow!("writing CSV to stdout: {other:?}"),
    }
}

/// Writes `text` and a newline to stdout and flushes, returning the error instead of panicking.
pub fn write_line(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(text)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// `println!` that returns (via `?`) instead of panicking when stdout is closed or full.
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))?
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))?
    };
}
pub(crate) use outln;
