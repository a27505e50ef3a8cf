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
