//! Loading `snowpatrol.toml`: one typed [`Settings`] value, with errors that point at the file, line and key.
//!
//! The file is read twice on purpose. First the `toml` crate parses it on its own, because only it knows
//! where things are: syntax and type errors carry a byte span we turn into `FILE:LINE:COL`, and the spanned
//! de-table lets us map a semantic error's key path (`jobs.prep.cron`, from `resolve_jobs`) back to its line.
//! Then the `config` crate builds the effective settings from the same file plus `SNOWPATROL__SECTION__KEY`
//! environment overrides, which is what runs.
//!
//! Between the two, secrets are resolved ([`SECRETS`]): a password may be in the environment or in a file
//! (`password_file`, `..._PASSWORD_FILE`) rather than in the TOML, so the strict parse of the file alone must
//! not call it a missing field. The resolved values go into the spanned table (spans still point into the
//! file) and into the overrides the `config` crate reads; the `_file` keys, which are not settings, go away.

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
    pub datasets: DatasetsSettings,
    pub api: ApiSettings,
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

/// `[datasets]`: datasets that something outside Snowpatrol updates (recorded with `snowpatrol emit`), so jobs
/// can be scheduled on them (`[jobs.NAME] datasets = [...]`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetsSettings {
    pub external: Vec<String>,
}

/// `[api]`: the HTTP API under `/api/v1` on `[server] health_addr` (loopback by default). Tokens are secrets
/// (environment, file or TOML, like every secret); without any, reads are open and changes refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Serve the API (and its OpenAPI document at `/api/v1/openapi.json`).
    pub enabled: bool,
    /// Bearer token of the read scope.
    pub read_token: Option<SecretString>,
    /// Bearer token of the operate scope (also reads): trigger, cancel, clear, mark, events, acknowledge.
    pub operate_token: Option<SecretString>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            read_token: None,
            operate_token: None,
        }
    }
}

impl fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("enabled", &self.enabled)
            .field(
                "read_token",
                &self.read_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "operate_token",
                &self.operate_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
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
    /// Where each secret in effect came from (for `config check`; the values stay in `settings`).
    pub secrets: Vec<SecretOrigin>,
    /// Problems of secrets only some commands need (the Slack token), reported by those commands.
    pub deferred: Vec<ConfigIssue>,
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

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Picks the file: explicit path (flag or `SNOWPATROL_CONFIG`) must exist; the default path is optional.
pub fn config_path(explicit: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match explicit {
        Some(p) => {
            // Opened rather than stat'ed: a file the service user may not read (or a directory it may not
            // enter) must be reported as such, not as absent.
            match std::fs::File::open(p).and_then(|f| f.metadata()) {
                Ok(m) if m.is_file() => Ok(Some(p.to_path_buf())),
                Ok(_) => anyhow::bail!(
                    "configuration file {} is not a regular file (from --config or SNOWPATROL_CONFIG)",
                    p.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                    "configuration file {} does not exist (from --config or SNOWPATROL_CONFIG)",
                    p.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
                    "configuration file {} cannot be read by this user (uid {}): permission denied; the file and \
                     every directory above it must be readable by the service user (see docs/deploy.md)",
                    p.display(),
                    current_uid()
                ),
                Err(e) => anyhow::bail!(
                    "configuration file {} cannot be read (from --config or SNOWPATROL_CONFIG): {e}",
                    p.display()
                ),
            }
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
    let mut env = EnvOverrides::from_process();
    let (table, secrets) = match &source {
        Some(src) => {
            // Syntax errors, located by toml's spans.
            let mut root = toml::de::DeTable::parse(&src.text)
                .map_err(|e| ConfigProblems(vec![locate_toml_error(src, &e)]))?;
            // Secrets first: a password that only the environment or a file holds must not fail the strict
            // parse below as a missing field.
            let secrets = resolve_secrets(Some(src), Some(root.get_mut()), &mut env)?;
            // Type errors and unknown keys, located by the spans, which still point into the file: resolving
            // secrets only added values (spanned at the `_file` key they came from) and removed `_file` keys.
            let strict = toml::de::Deserializer::from(root.clone());
            if let Err(e) = Settings::deserialize(strict) {
                return Err(ConfigProblems(vec![locate_toml_error(src, &e)]).into());
            }
            let table = toml::Table::deserialize(toml::de::Deserializer::from(root))
                .map_err(|e| ConfigProblems(vec![locate_toml_error(src, &e)]))?;
            (Some(table), secrets)
        }
        None => (None, resolve_secrets(None, None, &mut env)?),
    };
    let mut builder = config::Config::builder();
    if let Some(table) = &table {
        let text = toml::to_string(table).context("re-encoding the configuration")?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .separator(ENV_SEPARATOR)
            // No type guessing: a numeric passphrase or token must stay a string. Typed fields (ints, bools,
            // durations) still parse from the string when deserialized.
            .try_parsing(false)
            .ignore_empty(true)
            // The process environment with `..._FILE` secrets replaced by what their files hold.
            .source(Some(env.into_config_source())),
    );
    let built = builder.build().map_err(|e| env_problem(&source, e))?;
    let settings: Settings = built
        .try_deserialize()
        .map_err(|e| env_problem(&source, e))?;
    Ok(LoadedConfig {
        settings,
        source,
        secrets: secrets.found,
        deferred: secrets.deferred,
    })
}

/// A secret setting. Each can come from, in this order: its environment override
/// (`SNOWPATROL__PIPELINE__SOURCE__AUTH__PASSWORD`), a file named by the environment (`..._PASSWORD_FILE`),
/// the TOML key (`password`), or a file named in the TOML (`password_file`). Files are read whole, minus one
/// trailing newline, as Kubernetes secrets and systemd credentials are written.
struct SecretKey {
    /// Dotted path of the table holding it.
    table: &'static str,
    key: &'static str,
    /// Needed only by processes that use it (Slack: those that send alerts), so a problem with it stops
    /// `config check`, `run` and the daemon but not `snowpatrol runs`.
    lazy: bool,
}

const SECRETS: &[SecretKey] = &[
    SecretKey {
        table: "database",
        key: "url",
        lazy: false,
    },
    SecretKey {
        table: "pipeline.source.auth",
        key: "password",
        lazy: false,
    },
    SecretKey {
        table: "pipeline.source.auth",
        key: "token",
        lazy: false,
    },
    SecretKey {
        table: "pipeline.source.auth",
        key: "passphrase",
        lazy: false,
    },
    SecretKey {
        table: "pipeline.slack",
        key: "token",
        lazy: true,
    },
    SecretKey {
        table: "pipeline.slack",
        key: "signing_secret",
        lazy: true,
    },
    SecretKey {
        table: "api",
        key: "read_token",
        lazy: true,
    },
    SecretKey {
        table: "api",
        key: "operate_token",
        lazy: true,
    },
];

/// Every secret setting's key path (the documentation test checks each is documented).
#[cfg(test)]
pub fn secret_paths() -> Vec<String> {
    SECRETS
        .iter()
        .map(|s| format!("{}.{}", s.table, s.key))
        .collect()
}

/// The `SNOWPATROL__A__B` environment overrides, by lower-case dotted key (`a.b`), as the `config` crate
/// reads them.
struct EnvOverrides {
    vars: BTreeMap<String, (String, String)>,
}

impl EnvOverrides {
    fn from_process() -> Self {
        let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| {
                let lower = k.to_lowercase();
                let rest = lower.strip_prefix(&prefix)?;
                Some((rest.replace(ENV_SEPARATOR, "."), (k, v)))
            })
            .collect();
        Self { vars }
    }

    fn get(&self, path: &str) -> Option<&(String, String)> {
        self.vars.get(path)
    }

    fn var_name(path: &str) -> String {
        format!(
            "{ENV_PREFIX}{ENV_SEPARATOR}{}",
            path.replace('.', ENV_SEPARATOR).to_uppercase()
        )
    }

    /// Any override under `table` (`pipeline.slack.channel` for `pipeline.slack`).
    fn touches(&self, table: &str) -> bool {
        let prefix = format!("{table}.");
        self.vars.keys().any(|k| k.starts_with(&prefix))
    }

    fn into_config_source(self) -> config::Map<String, String> {
        self.vars.into_values().collect()
    }
}

/// Where a secret came from, for `config check` (never its value).
#[derive(Clone, Debug)]
pub struct SecretOrigin {
    pub path: String,
    pub origin: String,
}

struct ResolvedSecrets {
    found: Vec<SecretOrigin>,
    deferred: Vec<ConfigIssue>,
}

type DeTable<'i> = toml::de::DeTable<'i>;

fn table_at<'a, 'i>(root: &'a DeTable<'i>, path: &str) -> Option<&'a DeTable<'i>> {
    let mut t = root;
    for seg in path.split('.') {
        match t.get(seg)?.get_ref() {
            toml::de::DeValue::Table(inner) => t = inner,
            _ => return None,
        }
    }
    Some(t)
}

fn table_at_mut<'a, 'i>(root: &'a mut DeTable<'i>, path: &str) -> Option<&'a mut DeTable<'i>> {
    let mut t = root;
    for seg in path.split('.') {
        match t.get_mut(seg)?.get_mut() {
            toml::de::DeValue::Table(inner) => t = inner,
            _ => return None,
        }
    }
    Some(t)
}

fn string_at(root: Option<&DeTable<'_>>, path: &str) -> Option<String> {
    let (table, key) = path.rsplit_once('.')?;
    let v = table_at(root?, table)?.get(key)?;
    v.get_ref().as_str().map(str::to_string)
}

/// Reads a secret file: the whole content minus one trailing newline. An empty file is an error (an empty
/// password is never meant), and so is an unreadable one, named as what it is.
fn read_secret_file(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(mut s) => {
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            if s.is_empty() {
                Err(format!("the secret file {} is empty", path.display()))
            } else {
                Ok(s)
            }
        }
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("the secret file {} does not exist", path.display())
            }
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied reading the secret file {} (check its owner and mode)",
                path.display()
            ),
            _ => format!("cannot read the secret file {}: {e}", path.display()),
        }),
    }
}

/// Fills every secret from its four sources (see [`SecretKey`]) into the parsed file and the environment
/// overrides, and removes the `_file` keys, which are not settings of their own. Problems of secrets that
/// every command needs are returned at once, located; those of lazy secrets are kept for the commands that
/// use them.
fn resolve_secrets(
    src: Option<&ConfigSource>,
    mut root: Option<&mut DeTable<'_>>,
    env: &mut EnvOverrides,
) -> Result<ResolvedSecrets, ConfigProblems> {
    let mut now = Vec::new();
    let mut deferred = Vec::new();
    let mut found = Vec::new();
    for secret in SECRETS {
        let (origin, problems) = resolve_secret(secret, src, root.as_deref_mut(), env);
        found.extend(origin);
        if secret.lazy {
            deferred.extend(problems);
        } else {
            now.extend(problems);
        }
    }
    if !now.is_empty() {
        return Err(locate_issues(src, &now));
    }
    Ok(ResolvedSecrets { found, deferred })
}

/// The settings one secret goes by: `path` (`database.url`), the key of a file holding it (`url_file`) and
/// that key's path (`database.url_file`).
struct SecretNames {
    path: String,
    file_key: String,
    file_path: String,
}

impl SecretNames {
    fn of(secret: &SecretKey) -> Self {
        let file_key = format!("{}_file", secret.key);
        Self {
            path: format!("{}.{}", secret.table, secret.key),
            file_path: format!("{}.{file_key}", secret.table),
            file_key,
        }
    }
}

/// A problem of a secret, at the key path that causes it.
fn secret_issue(path: &str, message: String) -> ConfigIssue {
    ConfigIssue {
        path: path.to_string(),
        message,
    }
}

/// One secret of [`resolve_secrets`]: where its value in effect came from (`None` when nothing sets it) and
/// its problems, a missing secret the settings need among them. Its `_file` key is removed from the file.
fn resolve_secret(
    secret: &SecretKey,
    src: Option<&ConfigSource>,
    mut root: Option<&mut DeTable<'_>>,
    env: &mut EnvOverrides,
) -> (Option<SecretOrigin>, Vec<ConfigIssue>) {
    let names = SecretNames::of(secret);
    let mut problems = Vec::new();
    let origin = secret_origin(secret, &names, src, root.as_deref_mut(), env, &mut problems);
    // The `_file` key is no setting of its own; the value it named is now in place.
    if let Some(t) = root
        .as_deref_mut()
        .and_then(|r| table_at_mut(r, secret.table))
    {
        t.remove(names.file_key.as_str());
    }
    let origin = origin.map(|origin| SecretOrigin {
        path: names.path.clone(),
        origin,
    });
    if origin.is_none() && problems.is_empty() && secret_required(secret, root.as_deref(), env) {
        problems.push(missing_secret(secret, &names));
    }
    (origin, problems)
}

/// The problem of a secret the settings need that no source sets, naming every way to set it.
fn missing_secret(secret: &SecretKey, names: &SecretNames) -> ConfigIssue {
    secret_issue(
        &names.path,
        format!(
            "missing secret: set `{key}` or `{file_key}` in [{table}], or {var} or {var}_FILE in the environment{extra}",
            key = secret.key,
            file_key = names.file_key,
            table = secret.table,
            var = EnvOverrides::var_name(&names.path),
            extra = match names.path.as_str() {
                "pipeline.slack.token" =>
                    ", or SNOWPATROL_SLACK_TOKEN (the variable named by token_env)",
                _ => "",
            }
        ),
    )
}

/// Where a secret's value in effect comes from, its sources taken in the order [`SecretKey`] gives; a value
/// read from a file is put where the later parses find it. `None` when no source sets it, or when the one
/// that does cannot be read (that goes to `problems`, as does a secret set both in the file and by `_file`).
fn secret_origin(
    secret: &SecretKey,
    names: &SecretNames,
    src: Option<&ConfigSource>,
    mut root: Option<&mut DeTable<'_>>,
    env: &mut EnvOverrides,
    problems: &mut Vec<ConfigIssue>,
) -> Option<String> {
    let shortcut = shortcut_variable(&names.path, root.as_deref(), env);
    let env_value = env.get(&names.path).map(|(name, _)| name.clone());
    let env_file = env.get(&names.file_path).cloned();
    // The `_FILE` variable is never a setting for the `config` crate (`url_file` is no key of [database]).
    if env_file.is_some() {
        env.vars.remove(&names.file_path);
    }
    let table = root
        .as_deref_mut()
        .and_then(|r| table_at_mut(r, secret.table));
    let toml_value = table
        .as_ref()
        .and_then(|t| t.get(secret.key))
        .map(|v| v.get_ref().as_str().is_some_and(|s| !s.is_empty()));
    let toml_file = table.as_ref().and_then(|t| {
        t.get_key_value(names.file_key.as_str())
            .map(|(k, v)| (k.span(), v.get_ref().as_str().map(PathBuf::from)))
    });
    if toml_value.is_some() && toml_file.is_some() {
        let message = format!(
            "set either `{}` or `{}`, not both",
            secret.key, names.file_key
        );
        problems.push(secret_issue(&names.file_path, message));
    }
    if let Some(var) = shortcut {
        // SNOWPATROL_SLACK_TOKEN set on a host without `[pipeline.slack]` is no secret in effect.
        (names.path != "pipeline.slack.token" || secret_required(secret, root.as_deref(), env))
            .then_some(var)
    } else if let Some(name) = env_value {
        // The `config` crate applies the override; the strict parse needs to know a value is coming.
        announce(table, secret.key);
        Some(name)
    } else if let Some(variable) = env_file {
        secret_from_env_file(table, secret, &names.path, env, variable, problems)
    } else if toml_value == Some(true) {
        Some(match src {
            Some(s) => format!("{} `{}`", s.path.display(), secret.key),
            None => secret.key.to_string(),
        })
    } else if let Some((span, file)) = toml_file {
        secret_from_toml_file(table, secret, names, span, file, problems)
    } else {
        None
    }
}

/// The variable that wins over every other source of the secret at `path`, when it is set and not blank.
/// Variables that win over everything are kept from before this mechanism: `SNOWPATROL_DATABASE_URL`, and
/// for the Slack token the variable `token_env` names.
fn shortcut_variable(path: &str, root: Option<&DeTable<'_>>, env: &EnvOverrides) -> Option<String> {
    match path {
        "database.url" => Some("SNOWPATROL_DATABASE_URL".to_string()),
        "pipeline.slack.token" => Some(
            env.get("pipeline.slack.token_env")
                .map(|(_, v)| v.clone())
                .or_else(|| string_at(root, "pipeline.slack.token_env"))
                .unwrap_or_else(|| "SNOWPATROL_SLACK_TOKEN".into()),
        ),
        _ => None,
    }
    .filter(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// The secret at `path` from the file an environment variable names (`..._PASSWORD_FILE`; `variable` is its
/// name and value): what the file holds becomes the override the `config` crate applies.
fn secret_from_env_file(
    table: Option<&mut DeTable<'_>>,
    secret: &SecretKey,
    path: &str,
    env: &mut EnvOverrides,
    (name, file): (String, String),
    problems: &mut Vec<ConfigIssue>,
) -> Option<String> {
    match read_secret_file(Path::new(&file)) {
        Ok(value) => {
            announce(table, secret.key);
            env.vars
                .insert(path.to_string(), (EnvOverrides::var_name(path), value));
            Some(format!("{name} ({file})"))
        }
        Err(e) => {
            problems.push(secret_issue(path, format!("{e} (from {name})")));
            None
        }
    }
}

/// The secret from the file its `_file` key names (`file`, `None` when the key is no string): what the file
/// holds goes into the table under the secret's own key, spanned at the `_file` key (`span`), so problems
/// with it still point into the file.
fn secret_from_toml_file(
    table: Option<&mut DeTable<'_>>,
    secret: &SecretKey,
    names: &SecretNames,
    span: Range<usize>,
    file: Option<PathBuf>,
    problems: &mut Vec<ConfigIssue>,
) -> Option<String> {
    let Some(file) = file else {
        problems.push(secret_issue(
            &names.file_path,
            "must be a path (a string)".into(),
        ));
        return None;
    };
    match read_secret_file(&file) {
        Ok(value) => {
            if let Some(t) = table {
                t.insert(
                    toml::Spanned::new(span.clone(), std::borrow::Cow::Owned(secret.key.into())),
                    toml::Spanned::new(span, toml::de::DeValue::String(value.into())),
                );
            }
            Some(format!("`{}` ({})", names.file_key, file.display()))
        }
        Err(e) => {
            problems.push(secret_issue(&names.file_path, e));
            None
        }
    }
}

/// Puts a placeholder for a secret the environment provides into the table the strict parse checks (the
/// `config` crate puts the real value in its place), so a secret required by the file's shape (`password` for
/// `method = "password"`) is not a missing field there.
fn announce(table: Option<&mut DeTable<'_>>, key: &str) {
    if let Some(t) = table
        && t.get(key).is_none()
    {
        t.insert(
            toml::Spanned::new(0..0, std::borrow::Cow::Owned(key.into())),
            toml::Spanned::new(0..0, toml::de::DeValue::String(REDACTED_PLACEHOLDER.into())),
        );
    }
}

/// The placeholder [`announce`] uses; never used as a value (the environment override replaces it).
const REDACTED_PLACEHOLDER: &str = "***";

/// Whether the settings in effect need this secret: a Snowflake password for `method = "password"`, a token
/// for `method = "oauth"`, a Slack token whenever `[pipeline.slack]` exists. The database URL and a key's
/// passphrase are optional.
fn secret_required(secret: &SecretKey, root: Option<&DeTable<'_>>, env: &EnvOverrides) -> bool {
    let value = |path: &str| {
        env.get(path)
            .map(|(_, v)| v.clone())
            .or_else(|| string_at(root, path))
    };
    let snowflake = || value("pipeline.source.kind").as_deref() == Some("snowflake");
    match (secret.table, secret.key) {
        ("pipeline.source.auth", "password") => {
            snowflake() && value("pipeline.source.auth.method").as_deref() == Some("password")
        }
        ("pipeline.source.auth", "token") => {
            snowflake() && value("pipeline.source.auth.method").as_deref() == Some("oauth")
        }
        ("pipeline.slack", "token") => {
            root.is_some_and(|r| table_at(r, "pipeline.slack").is_some())
                || env.touches("pipeline.slack")
        }
        _ => false,
    }
}

/// The data directory must exist (it is created if missing) and be writable: models, reports, alert files
/// and the embedded database go there, and finding out at the first run's end loses the run's work. Tried by
/// creating and removing a file, so permissions, read-only mounts and full disks all show, each as itself.
pub fn data_dir_problem(dir: &Path) -> Option<String> {
    let describe = |what: &str, e: &std::io::Error| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied: cannot {what} in the data directory {} (check its owner and mode)",
            dir.display()
        ),
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "the data directory {} is on a read-only file system",
            dir.display()
        ),
        _ => format!("cannot {what} in the data directory {}: {e}", dir.display()),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Some(match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied: cannot create the data directory {} (check the owner and mode of its parent)",
                dir.display()
            ),
            _ if dir.exists() && !dir.is_dir() => {
                format!(
                    "the data directory {} exists and is not a directory",
                    dir.display()
                )
            }
            _ => format!("cannot create the data directory {}: {e}", dir.display()),
        });
    }
    let probe = dir.join(format!(".snowpatrol-write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            std::fs::remove_file(&probe)
                .err()
                .map(|e| describe("remove a file", &e))
        }
        Err(e) => Some(describe("create a file", &e)),
    }
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
        // `routes[2]`: the third table of an array of tables (`[[pipeline.alerts.routes]]`) or inline tables.
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let (k, v) = current.iter().find(|(k, _)| k.get_ref() == name)?;
        // A `[jobs.prep]` header or a `cron = …` line: the key's own span is where a person looks.
        found = Some(k.span().start);
        let value = match (v.get_ref(), index) {
            (toml::de::DeValue::Array(items), Some(i)) => {
                let item = items.get(i)?;
                found = Some(item.span().start);
                item.get_ref()
            }
            (other, _) => other,
        };
        match value {
            toml::de::DeValue::Table(inner) => current = inner,
            _ => break,
        }
    }
    found.map(|o| line_col(text, o).0)
}

/// Issues by key path, each with the file line of its key path when the file has it.
fn locate_issues(source: Option<&ConfigSource>, issues: &[ConfigIssue]) -> ConfigProblems {
    ConfigProblems(
        issues
            .iter()
            .map(|i| {
                let line = source.and_then(|s| {
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
                    file: source.map(|s| s.path.clone()),
                    line,
                    column: None,
                    key: Some(i.path.clone()),
                    message: i.message.clone(),
                }
            })
            .collect(),
    )
}

impl LoadedConfig {
    /// Semantic issues from `resolve_jobs`, each with the file line of its key path when the file has it.
    pub fn locate(&self, issues: &[ConfigIssue]) -> ConfigProblems {
        locate_issues(self.source.as_ref(), issues)
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
    fn every_secret_and_its_sources_are_documented() {
        let docs = include_str!("../../../docs/configuration.md");
        let section = docs
            .split("## Secrets")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap_or_default();
        for path in secret_paths() {
            let (table, key) = path.rsplit_once('.').unwrap_or_default();
            let var = EnvOverrides::var_name(&path);
            let var_tail = var.rsplit("__").next().unwrap_or_default();
            let file_var = section.contains(&format!("{var}_FILE"))
                || section.contains(&format!("..._{var_tail}_FILE"));
            assert!(file_var, "docs/configuration.md, Secrets: no {var}_FILE");
            for needle in [
                format!("[{table}] {key}"),
                format!("{key}_file"),
                var.clone(),
            ] {
                assert!(
                    section.contains(&needle),
                    "docs/configuration.md, Secrets: `{needle}` for {path} is missing"
                );
            }
        }
    }

    #[test]
    fn secret_files_lose_exactly_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        for (content, expected) in [
            ("pw\n", Ok("pw")),
            ("pw\r\n", Ok("pw")),
            ("pw\n\n", Ok("pw\n")),
            (" pw ", Ok(" pw ")),
            ("\n", Err("is empty")),
        ] {
            std::fs::write(&f, content).unwrap();
            match (read_secret_file(&f), expected) {
                (Ok(v), Ok(e)) => assert_eq!(v, e, "{content:?}"),
                (Err(m), Err(e)) => assert!(m.contains(e), "{m}"),
                (got, e) => panic!("{content:?}: {got:?}, expected {e:?}"),
            }
        }
        let e = read_secret_file(&dir.path().join("nope")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
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
