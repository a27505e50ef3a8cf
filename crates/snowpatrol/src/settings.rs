//! Loading `snowpatrol.toml`: one typed [`Settings`] value, with errors that point at the file, line and key.
//!
//! The file is read twice on purpose. First the `toml` crate parses it on its own, because only it knows
//! where things are: syntax and type errors carry a byte span we turn into `FILE:LINE:COL`, and the spanned
//! de-table lets us map a semantic error's key path (`jobs.prep.cron`, from `resolve_jobs`) back to its line.
//! Then the `config` crate builds the effective settings from the same file plus `SNOWPATROL__SECTION__KEY`
//! environment overrides, which is what runs.

use anyhow::Context;
use secrecy::SecretString;
use serde::Deserialize;
use snowpatrol_engine::{ConfigIssue, JobConfig, SchedulerSettings};
use snowpatrol_pipeline::PipelineConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration is looked for when neither `--config` nor `SNOWPATROL_CONFIG` names a file.
pub const DEFAULT_CONFIG_PATH: &str = "config/snowpatrol.toml";
/// Prefix of environment overrides: `SNOWPATROL__SCHEDULER__LEASE=10s` sets `[scheduler] lease`.
pub const ENV_PREFIX: &str = "SNOWPATROL";
pub const ENV_SEPARATOR: &str = "__";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    pub scheduler: SchedulerSettings,
    pub logging: LoggingSettings,
    pub examples: ExamplesSettings,
    pub jobs: BTreeMap<String, JobConfig>,
    pub pipeline: PipelineConfig,
}

/// `[database]`. The URL is a secret (it may carry a password), so it never appears in Debug output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite:///path`; absent means the embedded SQLite file under the data directory.
    pub url: Option<SecretString>,
    /// Apply migrations when the daemon starts (replicas racing here is safe: sqlx takes a lock).
    pub migrate_on_start: bool,
    /// How long the daemon keeps retrying a database that is not up yet before giving up.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            migrate_on_start: true,
            connect_timeout: Duration::from_secs(300),
        }
    }
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Models, charts and the embedded SQLite file live here (default `$SNOWPATROL_DATA_DIR` or `./.snowpatrol`).
    pub data_dir: Option<PathBuf>,
    /// `/healthz`, `/readyz` and `/metrics` of the daemon.
    pub health_addr: SocketAddr,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            data_dir: None,
            health_addr: SocketAddr::from(([127, 0, 0, 1], 9187)),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[logging]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,snowpatrol_engine=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// `[examples]`: the built-in demonstration jobs (see `examples.rs`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ExamplesSettings {
    pub enabled: bool,
}

impl Settings {
    /// `[server] data_dir`, else `$SNOWPATROL_DATA_DIR`, else `./.snowpatrol`.
    pub fn data_dir(&self) -> PathBuf {
        self.server
            .data_dir
            .clone()
            .or_else(|| {
                std::env::var_os("SNOWPATROL_DATA_DIR")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(".snowpatrol"))
    }

    /// `$SNOWPATROL_DATABASE_URL`, else `[database] url`; `None` means the embedded SQLite file.
    pub fn database_url(&self) -> Option<SecretString> {
        std::env::var("SNOWPATROL_DATABASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(SecretString::from)
            .or_else(|| self.database.url.clone())
    }
}

/// The configuration file in effect (if any) and its text, kept to locate semantic errors later.
pub struct LoadedConfig {
    pub settings: Settings,
    pub source: Option<ConfigSource>,
}

pub struct ConfigSource {
    pub path: PathBuf,
    pub text: String,
}

/// A configuration problem located in the file, printed as `FILE:LINE: key.path: message`.
#[derive(Debug)]
pub struct LocatedIssue {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for LocatedIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => {
                write!(f, "{}:{line}", file.display())?;
                if let Some(c) = self.column {
                    write!(f, ":{c}")?;
                }
                f.write_str(": ")?;
            }
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, _) => f.write_str("configuration: ")?,
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// One or more configuration problems; the process prints them all and exits non-zero.
#[derive(Debug)]
pub struct ConfigProblems(pub Vec<LocatedIssue>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|i| i.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigProblems {}

/// Picks the file: explicit path (flag or `SNOWPATROL_CONFIG`) must exist; the default path is optional.
pub fn config_path(explicit: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match explicit {
        Some(p) => {
            if !p.is_file() {
                anyhow::bail!(
                    "configuration file {} does not exist (from --config or SNOWPATROL_CONFIG)",
                    p.display()
                );
            }
            Ok(Some(p.to_path_buf()))
        }
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_PATH);
            Ok(p.is_file().then_some(p))
        }
    }
}

pub fn load(explicit: Option<&Path>) -> anyhow::Result<LoadedConfig> {
    let path = config_path(explicit)?;
    let source = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading configuration file {}", p.display()))?;
            Some(ConfigSource {
                path: p.clone(),
                text,
            })
        }
        None => None,
    };
    if let Some(src) = &source {
        // Syntax and type errors, located by toml's spans.
        if let Err(e) = toml::from_str::<Settings>(&src.text) {
            return Err(ConfigProblems(vec![locate_toml_error(src, &e)]).into());
        }
    }
    let mut builder = config::Config::builder();
    if let Some(src) = &source {
        builder = builder.add_source(config::File::from_str(&src.text, config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .separator(ENV_SEPARATOR)
            // No type guessing: a numeric passphrase or token must stay a string. Typed fields (ints, bools,
            // durations) still parse from the string when deserialized.
            .try_parsing(false)
            .ignore_empty(true),
    );
    let built = builder.build().map_err(|e| env_problem(&source, e))?;
    let settings: Settings = built
        .try_deserialize()
        .map_err(|e| env_problem(&source, e))?;
    Ok(LoadedConfig { settings, source })
}

fn env_problem(source: &Option<ConfigSource>, e: config::ConfigError) -> anyhow::Error {
    ConfigProblems(vec![LocatedIssue {
        file: source.as_ref().map(|s| s.path.clone()),
        line: None,
        column: None,
        key: None,
        message: format!("{e} (after applying {ENV_PREFIX}{ENV_SEPARATOR}SECTION{ENV_SEPARATOR}KEY environment overrides)"),
    }])
    .into()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn locate_toml_error(src: &ConfigSource, e: &toml::de::Error) -> LocatedIssue {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(&src.text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    let key = e.span().and_then(|span| key_at_span(&src.text, &span));
    LocatedIssue {
        file: Some(src.path.clone()),
        line,
        column,
        key,
        message: e.message().trim().to_string(),
    }
}

/// The deepest key whose key or value covers `span` (for type errors, which toml reports by span only).
fn key_at_span(text: &str, span: &Range<usize>) -> Option<String> {
    let table = toml::de::DeTable::parse(text).ok()?;
    fn walk(t: &toml::de::DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
        for (k, v) in t.iter() {
            let path = if prefix.is_empty() {
                k.get_ref().to_string()
            } else {
                format!("{prefix}.{}", k.get_ref())
            };
            let covers =
                |r: Range<usize>| r.start <= span.start && span.start < r.end.max(r.start + 1);
            if covers(k.span()) {
                return Some(path);
            }
            // `[section]` tables do not span their body, so descend into every table.
            if let toml::de::DeValue::Table(inner) = v.get_ref() {
                if let Some(p) = walk(inner, span, &path) {
                    return Some(p);
                }
            } else if covers(v.span()) {
                return Some(path);
            }
        }
        None
    }
    walk(table.get_ref(), span, "")
}

/// The line of a dotted key path in the file: of the deepest prefix of the path that is written there.
pub fn line_of_key(text: &str, path: &str) -> Option<usize> {
    let table = toml::de::DeTable::parse(text).ok()?;
    let mut current = table.get_ref();
    let mut found: Option<usize> = None;
    for seg in path.split('.') {
        let (k, v) = current.iter().find(|(k, _)| k.get_ref() == seg)?;
        // A `[jobs.prep]` header or a `cron = …` line: the key's own span is where a person looks.
        found = Some(k.span().start);
        match v.get_ref() {
            toml::de::DeValue::Table(inner) => current = inner,
            _ => break,
        }
    }
    found.map(|o| line_col(text, o).0)
}

impl LoadedConfig {
    /// Semantic issues from `resolve_jobs`, each with the file line of its key path when the file has it.
    pub fn locate(&self, issues: &[ConfigIssue]) -> ConfigProblems {
        ConfigProblems(
            issues
                .iter()
                .map(|i| {
                    let line = self.source.as_ref().and_then(|s| {
                        line_of_key(&s.text, &i.path).or_else(|| {
                            // `jobs.x.datasets` for a job whose table is absent from the file: fall back to its parents.
                            let mut p = i.path.as_str();
                            while let Some((parent, _)) = p.rsplit_once('.') {
                                if let Some(l) = line_of_key(&s.text, parent) {
                                    return Some(l);
                                }
                                p = parent;
                            }
                            None
                        })
                    });
                    LocatedIssue {
                        file: self.source.as_ref().map(|s| s.path.clone()),
                        line,
                        column: None,
                        key: Some(i.path.clone()),
                        message: i.message.clone(),
                    }
                })
                .collect(),
        )
    }

    pub fn file_display(&self) -> String {
        self.source.as_ref().map_or_else(
            || "(built-in defaults)".to_string(),
            |s| s.path.display().to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_map_to_lines() {
        let text = "[scheduler]\nlease = \"30s\"\n\n[jobs.prep]\ncron = \"61 * * * *\"\n\n[jobs.train]\ndatasets = [\"x://a\"]\n";
        assert_eq!(line_of_key(text, "jobs.prep.cron"), Some(5));
        assert_eq!(line_of_key(text, "jobs.train.datasets"), Some(8));
        assert_eq!(line_of_key(text, "jobs.prep"), Some(4));
        assert_eq!(line_of_key(text, "jobs.nope.cron"), None);
    }

    #[test]
    fn type_errors_name_line_and_key() {
        let src = ConfigSource {
            path: "x.toml".into(),
            text: "[scheduler]\nworker_concurrency = \"many\"\n".into(),
        };
        let e = toml::from_str::<Settings>(&src.text).unwrap_err();
        let issue = locate_toml_error(&src, &e);
        assert_eq!(issue.line, Some(2), "{issue}");
        assert_eq!(
            issue.key.as_deref(),
            Some("scheduler.worker_concurrency"),
            "{issue}"
        );
        assert!(issue.to_string().starts_with("x.toml:2:"), "{issue}");
    }

    #[test]
    fn syntax_errors_name_line() {
        let src = ConfigSource {
            path: "bad.toml".into(),
            text: "[server]\nhealth_addr = \"127.0.0.1:1\"\n[jobs\n".into(),
        };
        let e = toml::from_str::<Settings>(&src.text).unwrap_err();
        let issue = locate_toml_error(&src, &e);
        assert_eq!(issue.line, Some(3), "{issue}");
    }
}
