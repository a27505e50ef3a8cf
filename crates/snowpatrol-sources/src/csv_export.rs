//! CSV exports of `WAREHOUSE_METERING_HISTORY` (and of labelled anomalies, for backtests).
//!
//! Operators who cannot grant Snowpatrol a Snowflake role can export the view from Snowsight or `snowsql` and
//! point Snowpatrol at the file, so the reader accepts what those tools write: any header case, any column
//! order, extra columns, quoted fields, a UTF-8 BOM, and both Snowflake's `2025-09-27 17:00:00.000 +0000`
//! timestamp rendering and ISO-8601 / RFC 3339.
//!
//! Column defaults when an optional column is absent (or a cell is empty):
//! - `WAREHOUSE_ID`: `1` (a real warehouse), except `CLOUD_SERVICES_ONLY`, Snowflake's pseudo warehouse, which
//!   gets `0` so it is dropped like in the view.
//! - `SERVICE_TYPE`: `WAREHOUSE_METERING`.
//! - `END_TIME`: `START_TIME` + 1 hour (the view is hourly).
//! - `CREDITS_USED_COMPUTE`: `CREDITS_USED - CREDITS_USED_CLOUD_SERVICES` (Snowflake's identity), or all of
//!   `CREDITS_USED` when both breakdown columns are absent.
//! - `CREDITS_USED_CLOUD_SERVICES`: `CREDITS_USED - CREDITS_USED_COMPUTE`, or `0` when both are absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Utc};
use csv::ByteRecord;
use snowpatrol_detect::{AnomalyKind, AnomalyLabel, MeteringRow, WarehouseKey};

use crate::SourceError;

/// The view's column names, in the order [`write_metering_csv`] writes them.
pub const METERING_COLUMNS: [&str; 9] = [
    "ACCOUNT_NAME",
    "WAREHOUSE_ID",
    "WAREHOUSE_NAME",
    "SERVICE_TYPE",
    "START_TIME",
    "END_TIME",
    "CREDITS_USED",
    "CREDITS_USED_COMPUTE",
    "CREDITS_USED_CLOUD_SERVICES",
];

/// Columns of a labels file, in the order [`write_labels_csv`] writes them.
pub const LABEL_COLUMNS: [&str; 4] = ["account_name", "warehouse_name", "usage_date", "kind"];

const DEFAULT_SERVICE_TYPE: &str = "WAREHOUSE_METERING";
const PSEUDO_WAREHOUSE: &str = "CLOUD_SERVICES_ONLY";

/// Reads a whole metering export. Returns every row or an error naming the first bad line: a half-read file
/// would silently look like a quiet day, so nothing partial is ever returned.
pub fn read_metering_csv(path: &Path) -> Result<Vec<MeteringRow>, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    // Large exports parse on every core. Only files without quotes are split at newlines: a quoted field may
    // hold a newline, and a chunk must never start inside one.
    if bytes.len() >= PARALLEL_MIN_BYTES
        && !bytes.contains(&b'"')
        && rayon::current_num_threads() > 1
    {
        return parse_metering_csv_parallel(&bytes, path);
    }
    parse_metering_csv(&bytes[..], path)
}

/// Below this size splitting costs more than it saves.
const PARALLEL_MIN_BYTES: usize = 4 << 20;

/// [`parse_metering_csv`] over newline-aligned chunks on the rayon pool. Same rows in the same order, and the
/// same error (the first bad line of the file, with its line number).
fn parse_metering_csv_parallel(
    bytes: &[u8],
    origin: &Path,
) -> Result<Vec<MeteringRow>, SourceError> {
    use rayon::prelude::*;
    let Some(header_len) = bytes.iter().position(|b| *b == b'\n').map(|i| i + 1) else {
        return parse_metering_csv(bytes, origin);
    };
    let Some(columns) = header_columns(&bytes[..header_len], origin)? else {
        return parse_metering_csv(bytes, origin);
    };
    let body = &bytes[header_len..];
    let chunks = line_chunks(body, rayon::current_num_threads() * 4);
    let parsed: Vec<Result<Vec<MeteringRow>, SourceError>> = chunks
        .par_iter()
        .map(|(first_line, chunk)| parse_chunk(&columns, *first_line, chunk, origin))
        .collect();
    let mut rows = Vec::with_capacity(parsed.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum());
    for part in parsed {
        rows.extend(part?);
    }
    Ok(rows)
}

/// The columns named by the header row in `header_line` (the file's first line); None when that line holds no
/// record.
fn header_columns(
    header_line: &[u8],
    origin: &Path,
) -> Result<Option<MeteringColumns>, SourceError> {
    let mut header = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(header_line);
    let mut record = ByteRecord::new();
    if !header
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(origin, &e))?
    {
        return Ok(None);
    }
    header_record_columns(&record, origin).map(Some)
}

/// The columns a header record (line 1 of `origin`) names.
fn header_record_columns(
    record: &ByteRecord,
    origin: &Path,
) -> Result<MeteringColumns, SourceError> {
    MeteringColumns::from_header(record).map_err(|message| line_error(origin, 1, message))
}

/// The row a data record at `line` of `origin` holds; None for a blank line, which both readers skip.
fn record_row(
    columns: &MeteringColumns,
    record: &ByteRecord,
    origin: &Path,
    line: u64,
) -> Result<Option<MeteringRow>, SourceError> {
    if is_blank_line(record) {
        return Ok(None);
    }
    columns
        .parse(record)
        .map(Some)
        .map_err(|message| line_error(origin, line, message))
}

/// `body` (the lines after the header) cut into about `pieces` chunks, each as (first line number, bytes);
/// chunk boundaries sit just after a newline.
fn line_chunks(body: &[u8], pieces: usize) -> Vec<(u64, &[u8])> {
    let target = body.len().div_ceil(pieces).max(1);
    let mut chunks: Vec<(u64, &[u8])> = Vec::with_capacity(pieces);
    let (mut start, mut line) = (0usize, 2u64);
    while start < body.len() {
        let end = match body[(start + target).min(body.len())..]
            .iter()
            .position(|b| *b == b'\n')
        {
            Some(i) => (start + target).min(body.len()) + i + 1,
            None => body.len(),
        };
        chunks.push((line, &body[start..end]));
        line += body[start..end].iter().filter(|b| **b == b'\n').count() as u64;
        start = end;
    }
    chunks
}

/// The rows of one chunk whose first line is line `first_line` of the file; errors name the file's line.
fn parse_chunk(
    columns: &MeteringColumns,
    first_line: u64,
    chunk: &[u8],
    origin: &Path,
) -> Result<Vec<MeteringRow>, SourceError> {
    let mut csv = data_reader(chunk);
    let mut record = ByteRecord::new();
    let mut rows = Vec::with_capacity(chunk.len() / 80);
    // The file's line of a position in the chunk.
    let file_line = |p: Option<&csv::Position>| p.map_or(first_line, |p| first_line + p.line() - 1);
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(line_error(origin, file_line(e.position()), e.to_string())),
        }
        let line = file_line(record.position());
        rows.extend(record_row(columns, &record, origin, line)?);
    }
    Ok(rows)
}

/// A reader of data records: we resolve the header ourselves, and a record may have any number of fields
/// (parsing it says which are missing).
fn data_reader<R: std::io::Read>(reader: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader)
}

/// A record that is only a blank line (one field of whitespace).
fn is_blank_line(record: &ByteRecord) -> bool {
    record.len() == 1
        && record
            .get(0)
            .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
}

/// [`read_metering_csv`] over any reader; `origin` is only used in error messages.
pub fn parse_metering_csv(
    reader: impl std::io::Read,
    origin: &Path,
) -> Result<Vec<MeteringRow>, SourceError> {
    let mut csv = data_reader(reader);
    let mut record = ByteRecord::new();
    let csv_err = |e: csv::Error| csv_error(origin, &e);

    if !csv.read_byte_record(&mut record).map_err(csv_err)? {
        return Err(line_error(
            origin,
            1,
            "the file is empty (expected a header row)".into(),
        ));
    }
    let columns = header_record_columns(&record, origin)?;

    let mut rows = Vec::new();
    while csv.read_byte_record(&mut record).map_err(csv_err)? {
        let line = record.position().map_or(0, |p| p.line());
        rows.extend(record_row(&columns, &record, origin, line)?);
    }
    Ok(rows)
}

/// Writes rows with the view's column names; timestamps as RFC 3339 UTC and credits in Rust's shortest
/// round-trip form, so [`read_metering_csv`] reads back exactly the same rows.
pub fn write_metering_csv(rows: &[MeteringRow], w: impl Write) -> Result<(), SourceError> {
    let mut out = csv::Writer::from_writer(w);
    let io = |e: csv::Error| write_error(&e);
    out.write_record(METERING_COLUMNS).map_err(io)?;
    let mut buf = [
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ];
    for r in rows {
        use std::fmt::Write as _;
        for b in buf.iter_mut() {
            b.clear();
        }
        let _ = write!(buf[0], "{}", r.warehouse_id);
        buf[1] = r.start_time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        buf[2] = r.end_time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let _ = write!(buf[3], "{}", r.credits_used);
        let _ = write!(buf[4], "{}", r.credits_used_compute);
        let _ = write!(buf[5], "{}", r.credits_used_cloud_services);
        out.write_record([
            r.account_name.as_str(),
            &buf[0],
            &r.warehouse_name,
            &r.service_type,
            &buf[1],
            &buf[2],
            &buf[3],
            &buf[4],
            &buf[5],
        ])
        .map_err(io)?;
    }
    out.flush().map_err(|e| SourceError::Io {
        path: PathBuf::from("<csv output>"),
        source: e,
    })
}

/// Reads labelled anomalous days (`account_name,warehouse_name,usage_date,kind`; header case-insensitive,
/// dates `YYYY-MM-DD`, kinds `spike|runaway|resize|drop`). All rows or an error with the line number.
pub fn read_labels_csv(path: &Path) -> Result<Vec<AnomalyLabel>, SourceError> {
    let file = std::fs::File::open(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut record = csv::StringRecord::new();

    if !csv
        .read_record(&mut record)
        .map_err(|e| csv_error(path, &e))?
    {
        return Err(line_error(
            path,
            1,
            "the file is empty (expected a header row)".into(),
        ));
    }
    let columns = LabelColumns::from_header(&record, path)?;

    let mut labels = Vec::new();
    while csv
        .read_record(&mut record)
        .map_err(|e| csv_error(path, &e))?
    {
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        labels.push(columns.parse(&record, line, path)?);
    }
    Ok(labels)
}

/// An error at `line` of the CSV file `path`.
fn line_error(path: &Path, line: u64, message: String) -> SourceError {
    SourceError::Csv {
        path: path.to_owned(),
        line,
        message,
    }
}

/// Column positions of a labels file, resolved once from its header.
struct LabelColumns {
    account: usize,
    warehouse: usize,
    date: usize,
    kind: usize,
}

impl LabelColumns {
    fn from_header(record: &csv::StringRecord, path: &Path) -> Result<Self, SourceError> {
        let header: Vec<String> = record.iter().map(normalise_header).collect();
        let find = |name: &str| {
            header.iter().position(|h| h == name).ok_or_else(|| {
                line_error(
                    path,
                    1,
                    format!("missing column {name:?} (found {})", header.join(", ")),
                )
            })
        };
        Ok(Self {
            account: find("ACCOUNT_NAME")?,
            warehouse: find("WAREHOUSE_NAME")?,
            date: find("USAGE_DATE")?,
            kind: find("KIND")?,
        })
    }

    /// The label on `record`, line `line` of `path`.
    fn parse(
        &self,
        record: &csv::StringRecord,
        line: u64,
        path: &Path,
    ) -> Result<AnomalyLabel, SourceError> {
        let err = |message: String| line_error(path, line, message);
        let field = |i: usize, name: &str| -> Result<&str, SourceError> {
            match record.get(i).map(str::trim) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(err(format!("{name} is empty"))),
            }
        };
        let date_text = field(self.date, "usage_date")?;
        let usage_date = NaiveDate::parse_from_str(date_text, "%Y-%m-%d").map_err(|e| {
            err(format!(
                "usage_date {date_text:?} is not a YYYY-MM-DD date: {e}"
            ))
        })?;
        let kind: AnomalyKind = field(self.kind, "kind")?.parse().map_err(err)?;
        Ok(AnomalyLabel {
            key: WarehouseKey::new(
                field(self.account, "account_name")?,
                field(self.warehouse, "warehouse_name")?,
            ),
            date: usage_date,
            kind,
        })
    }
}

/// Writes labels in the format [`read_labels_csv`] reads.
pub fn write_labels_csv(labels: &[AnomalyLabel], w: impl Write) -> Result<(), SourceError> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record(LABEL_COLUMNS)
        .map_err(|e| write_error(&e))?;
    for l in labels {
        let date = l.date.format("%Y-%m-%d").to_string();
        out.write_record([
            l.key.account_name.as_str(),
            &l.key.warehouse_name,
            &date,
            l.kind.as_str(),
        ])
        .map_err(|e| write_error(&e))?;
    }
    out.flush().map_err(|e| SourceError::Io {
        path: PathBuf::from("<csv output>"),
        source: e,
    })
}

fn csv_error(path: &Path, e: &csv::Error) -> SourceError {
    let line = e.position().map_or(0, |p| p.line());
    match e.kind() {
        csv::ErrorKind::Io(io) => SourceError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => SourceError::Csv {
            path: path.to_owned(),
            line,
            message: e.to_string(),
        },
    }
}

fn write_error(e: &csv::Error) -> SourceError {
    SourceError::Io {
        path: PathBuf::from("<csv output>"),
        source: std::io::Error::other(e.to_string()),
    }
}

fn normalise_header(h: &str) -> String {
    h.trim_start_matches('\u{feff}')
        .trim()
        .trim_matches('"')
        .to_ascii_uppercase()
}

/// Column positions of one export, resolved once from its header.
struct MeteringColumns {
    account: usize,
    warehouse_id: Option<usize>,
    warehouse: usize,
    service_type: Option<usize>,
    start: usize,
    end: Option<usize>,
    credits: usize,
    compute: Option<usize>,
    cloud: Option<usize>,
}

impl MeteringColumns {
    fn from_header(record: &ByteRecord) -> Result<Self, String> {
        let header: Vec<String> = record
            .iter()
            .map(|f| normalise_header(&String::from_utf8_lossy(f)))
            .collect();
        let find = |name: &str| header.iter().position(|h| h == name);
        let require = |name: &str| {
            find(name).ok_or_else(|| {
                format!(
                    "missing required column {name} (found: {}); required: ACCOUNT_NAME, WAREHOUSE_NAME, START_TIME, CREDITS_USED",
                    header.join(", ")
                )
            })
        };
        Ok(Self {
            account: require("ACCOUNT_NAME")?,
            warehouse_id: find("WAREHOUSE_ID"),
            warehouse: require("WAREHOUSE_NAME")?,
            service_type: find("SERVICE_TYPE"),
            start: require("START_TIME")?,
            end: find("END_TIME"),
            credits: require("CREDITS_USED")?,
            compute: find("CREDITS_USED_COMPUTE"),
            cloud: find("CREDITS_USED_CLOUD_SERVICES"),
        })
    }

    fn parse(&self, r: &ByteRecord) -> Result<MeteringRow, String> {
        let r = RowFields(r);
        let account_name = r.required(self.account, "ACCOUNT_NAME")?;
        let warehouse_name = r.required(self.warehouse, "WAREHOUSE_NAME")?;
        let warehouse_id = match r.optional(self.warehouse_id, "WAREHOUSE_ID")? {
            Some(v) => v
                .parse::<i64>()
                .map_err(|_| format!("WAREHOUSE_ID {v:?} is not an integer"))?,
            None if warehouse_name == PSEUDO_WAREHOUSE => 0,
            None => 1,
        };
        let service_type = r
            .optional(self.service_type, "SERVICE_TYPE")?
            .unwrap_or(DEFAULT_SERVICE_TYPE);
        let start_time = timestamp_cell(r.required(self.start, "START_TIME")?, "START_TIME")?;
        let end_time = match r.optional(self.end, "END_TIME")? {
            Some(v) => timestamp_cell(v, "END_TIME")?,
            None => start_time + Duration::hours(1),
        };
        let credits_used = number_cell(r.required(self.credits, "CREDITS_USED")?, "CREDITS_USED")?;
        let compute = r
            .optional(self.compute, "CREDITS_USED_COMPUTE")?
            .map(|v| number_cell(v, "CREDITS_USED_COMPUTE"))
            .transpose()?;
        let cloud = r
            .optional(self.cloud, "CREDITS_USED_CLOUD_SERVICES")?
            .map(|v| number_cell(v, "CREDITS_USED_CLOUD_SERVICES"))
            .transpose()?;
        let (credits_used_compute, credits_used_cloud_services) = match (compute, cloud) {
            (Some(c), Some(s)) => (c, s),
            (Some(c), None) => (c, credits_used - c),
            (None, Some(s)) => (credits_used - s, s),
            (None, None) => (credits_used, 0.0),
        };
        Ok(MeteringRow {
            account_name: account_name.to_owned(),
            warehouse_id,
            warehouse_name: warehouse_name.to_owned(),
            service_type: service_type.to_owned(),
            start_time,
            end_time,
            credits_used,
            credits_used_compute,
            credits_used_cloud_services,
        })
    }
}

/// The cells of one metering record, trimmed, with errors naming the column.
struct RowFields<'r>(&'r ByteRecord);

impl<'r> RowFields<'r> {
    /// The cell of column `name` at `i`, possibly empty.
    fn text(&self, i: usize, name: &str) -> Result<&'r str, String> {
        let bytes = self.0.get(i).ok_or_else(|| {
            format!(
                "{name} is missing (the row has only {} fields)",
                self.0.len()
            )
        })?;
        std::str::from_utf8(bytes)
            .map(str::trim)
            .map_err(|_| format!("{name} is not valid UTF-8"))
    }

    /// A cell that must not be empty.
    fn required(&self, i: usize, name: &str) -> Result<&'r str, String> {
        let v = self.text(i, name)?;
        if v.is_empty() {
            Err(format!("{name} is empty"))
        } else {
            Ok(v)
        }
    }

    /// The cell of an optional column; None when the column is absent or the cell empty.
    fn optional(&self, i: Option<usize>, name: &str) -> Result<Option<&'r str>, String> {
        match i {
            None => Ok(None),
            Some(i) => self.text(i, name).map(|v| (!v.is_empty()).then_some(v)),
        }
    }
}

/// A credits cell: a finite number.
fn number_cell(v: &str, name: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{name} {v:?} is not a number")),
    }
}

/// A START_TIME or END_TIME cell, in any form [`parse_timestamp`] reads.
fn timestamp_cell(v: &str, name: &str) -> Result<DateTime<Utc>, String> {
    parse_timestamp(v).ok_or_else(|| {
        format!("{name} {v:?} is not a timestamp (expected e.g. 2025-09-27 17:00:00.000 +0000 or 2025-09-27T17:00:00Z)")
    })
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.fraction][ ][Z|±HH[:]MM|±HH]`; no offset means UTC (the view's session
/// time zone for exports made by Snowpatrol's own instructions).
///
/// Hand-written rather than `chrono`'s `parse_from_str` because the exports run to millions of rows and a
/// format-string parser that also has to try two formats costs several times more than the rest of the row;
/// chrono still validates the calendar and clock ranges.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let b = s.trim().as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[13] != b':'
        || b[16] != b':'
        || !matches!(b[10], b' ' | b'T' | b't')
    {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(0, 4)?).ok()?,
        digits(5, 7)?,
        digits(8, 10)?,
    )?;
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);

    let mut i = 19;
    let nanos = fraction_nanos(b, &mut i)?;
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let offset_secs = offset_seconds(&b[i..])?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = date.and_time(time);
    FixedOffset::east_opt(offset_secs)?
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// The nanoseconds of the `.fraction` at `b[*i..]`, if there is one (0 otherwise; digits past the ninth are
/// ignored), moving `*i` past it. None for a dot without digits.
fn fraction_nanos(b: &[u8], i: &mut usize) -> Option<u32> {
    let mut nanos = 0u32;
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            if *i - start < 9 {
                nanos = nanos * 10 + u32::from(b[*i] - b'0');
            }
            *i += 1;
        }
        let n = *i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    Some(nanos)
}

/// Seconds east of UTC of a timestamp's offset: nothing or `Z` (UTC), `±HH`, `±HHMM` or `±HH:MM`.
fn offset_seconds(offset: &[u8]) -> Option<i32> {
    match offset {
        [] | [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2] => (&[*h1, *h2][..], &b"00"[..]),
                [h1, h2, m1, m2] => (&[*h1, *h2][..], &[*m1, *m2][..]),
                [h1, h2, b':', m1, m2] => (&[*h1, *h2][..], &[*m1, *m2][..]),
                _ => return None,
            };
            let two = |d: &[u8]| -> Option<i32> {
                (d[0].is_ascii_digit() && d[1].is_ascii_digit())
                    .then(|| i32::from(d[0] - b'0') * 10 + i32::from(d[1] - b'0'))
            };
            let secs = two(h)? * 3600 + two(m)? * 60;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_snowflake_and_iso_timestamps() {
        let want = ts("2025-09-27T17:00:00Z");
        for s in [
            "2025-09-27 17:00:00.000 +0000",
            "2025-09-27 17:00:00 +0000",
            "2025-09-27T17:00:00Z",
            "2025-09-27T17:00:00.000Z",
            "2025-09-27T17:00:00+00:00",
            "2025-09-27 10:00:00.000 -0700",
            "2025-09-27T19:00:00+02:00",
            "2025-09-27T19:00:00+02",
            "2025-09-27 17:00:00",
            " 2025-09-27t17:00:00z ",
        ] {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_timestamp("2025-09-27 17:00:00.123456789 +0000"),
            Some(ts("2025-09-27T17:00:00.123456789Z"))
        );
        assert_eq!(
            parse_timestamp("2025-09-27 17:00:00.5"),
            Some(ts("2025-09-27T17:00:00.5Z"))
        );
        for bad in [
            "",
            "2025-09-27",
            "2025-02-30 17:00:00",
            "2025-09-27 24:00:00",
            "2025-09-27 17:00:00.",
            "2025-09-27 17:00:00 +00000",
            "2025-09-27 17:00:00 UTC",
            "2025/09/27 17:00:00",
            "27-09-2025 17:00:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }
}

/// Writes `path` through a sibling temporary file (`.NAME.PID.tmp`) renamed into place once `write` and the
/// flush succeeded, so an interrupted or failed write never leaves a half-written export that looks like a
/// complete (and quieter) one; the temporary file is removed on failure. Hand-written because it is a dozen
/// lines over `std::fs` and the temporary must stay in the target's directory for the rename to be atomic.
pub fn write_atomically<E, F>(path: &std::path::Path, write: F) -> Result<(), E>
where
    E: From<std::io::Error>,
    F: FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<(), E>,
{
    use std::io::Write as _;
    let Some(file_name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
        .into());
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // The I/O errors name the file and what was being done to it, as the callers' messages always did.
    let io = |what: String| {
        move |e: std::io::Error| E::from(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    };
    let result = (|| {
        let file =
            std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()
            .map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod write_atomically_tests {
    use super::write_atomically;
    use std::io::Write as _;

    #[test]
    fn a_write_lands_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        write_atomically::<std::io::Error, _>(&path, |w| w.write_all(b"a,b\n1,2\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n1,2\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file_and_removes_its_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "previous\n").unwrap();
        let err = write_atomically::<std::io::Error, _>(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_atomically::<std::io::Error, _>(std::path::Path::new("/"), |_| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("is not a file path"), "{err}");
    }
}
