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

pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
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
