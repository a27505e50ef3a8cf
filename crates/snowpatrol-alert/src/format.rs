//! Small text helpers shared by the Markdown report and the Slack message.
//!
//! Hand-written because they are a few lines each and the crates that do this (num-format,
//! pulldown-cmark's escaping) would pull in far more than they save.

/// "1 incident", "2 incidents": `n` with the noun in the right number (for the report and the digest).
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Fixed decimals with thousands separators: `1234.5` → `1,234.50`; non-finite → `n/a`.
///
/// Credits are read by people comparing magnitudes, so separators matter more than precision.
pub(crate) fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    let formatted = format!("{:.*}", decimals, value.abs());
    let (int_part, frac_part) = match formatted.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (formatted.as_str(), None),
    };
    let mut grouped = String::with_capacity(int_part.len() + int_part.len() / 3);
    for (i, ch) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    // "-0.00" reads as a bug in a report; only show the sign when the rounded value is non-zero.
    let is_zero = formatted.chars().all(|c| c == '0' || c == '.');
    let sign = if value < 0.0 && !is_zero { "-" } else { "" };
    match frac_part {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Credits and costs: two decimals.
pub(crate) fn credits(value: f64) -> String {
    number(value, 2)
}

/// Detector scores are small (about -0.5..0.5), so four decimals.
pub(crate) fn score(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_string();
    }
    format!("{value:.4}")
}

/// Escapes text for Markdown inline context and table cells.
///
/// Snowflake quoted identifiers may contain any character, including `|` (which would split a
/// table cell) and `_`/`*` (which would start emphasis), and explanations are free text.
pub(crate) fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(ch);
            }
            '\r' | '\n' | '\t' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// Escapes text for Slack `mrkdwn`, which only requires `&`, `<` and `>` to be escaped
/// (<https://api.slack.com/reference/surfaces/formatting#escaping>).
pub(crate) fn slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `text` to at most `max_chars` characters, marking the cut with `…`.
///
/// Slack rejects blocks over their limits (`invalid_blocks`) — a permanent failure — so every
/// piece of free text is bounded before it goes into a block.
pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let keep = max_chars.saturating_sub(1);
    let mut out: String = text.chars().take(keep).collect();
    out.push('…');
    out
}

/// Money with its currency when known: `EUR 1,234.50`, or `1,234.50`.
pub(crate) fn money(value: f64, currency: Option<&str>) -> String {
    match currency {
        Some(c) => format!("{c} {}", credits(value)),
        None => credits(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_separators_and_rounding() {
        assert_eq!(credits(0.0), "0.00");
        assert_eq!(credits(1.005_1), "1.01");
        assert_eq!(credits(999.994), "999.99");
        assert_eq!(credits(999.996), "1,000.00");
        assert_eq!(credits(1_234_567.891), "1,234,567.89");
        assert_eq!(credits(-12_345.5), "-12,345.50");
        assert_eq!(credits(-0.001), "0.00");
        assert_eq!(credits(f64::NAN), "n/a");
        assert_eq!(credits(f64::INFINITY), "n/a");
        assert_eq!(number(1234.0, 0), "1,234");
        assert_eq!(score(-0.123_456), "-0.1235");
    }

    #[test]
    fn markdown_escaping_keeps_tables_intact() {
        assert_eq!(markdown("A|B_c*d"), "A\\|B\\_c\\*d");
        assert_eq!(markdown("line1\nline2"), "line1 line2");
    }

    #[test]
    fn slack_escaping_and_truncation() {
        assert_eq!(slack("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("ééééé", 3).chars().count(), 3);
    }
}
