//! The one error type every source returns.

use std::path::PathBuf;

/// Why a source could not produce metering rows.
///
/// Variants are split by what the operator has to do about it (fix a file, a credential, a grant, the network,
/// the config), and the Snowflake ones carry a `hint` naming the missing grant or setting, because "object does
/// not exist or not authorized" alone does not tell anyone what to change. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// One setting of the source is wrong; `key` is its path inside the source's table (e.g.
    /// `auth.private_key_path`), so the caller can point at the line that sets it.
    #[error("{message}")]
    Setting { key: &'static str, message: String },

    /// A CSV file is malformed. `line` is 1-based and counts the header, so it matches an editor's line numbers.
    #[error("{}: line {line}: {message}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },

    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Snowflake rejected the login (credentials, key, token, role or user settings).
    #[error("Snowflake login failed: {message}. Hint: {hint}")]
    Auth { message: String, hint: String },

    /// Logged in, but the role may not read the metering view (or use the warehouse).
    #[error("Snowflake permission denied: {message}. Hint: {hint}")]
    Permission { message: String, hint: String },

    /// Snowflake could not be reached or the connection broke; usually worth a retry.
    #[error("cannot reach Snowflake: {message}")]
    Network { message: String },

    /// The query failed (or timed out) for a reason other than permissions.
    #[error("Snowflake query failed{}: {message}", query_id.as_deref().map(|q| format!(" (query id {q})")).unwrap_or_default())]
    Query {
        message: String,
        query_id: Option<String>,
    },

    /// Snowflake answered, but a column or value was not what the metering view holds.
    #[error("unexpected data from Snowflake: {message}")]
    Data { message: String },

    /// The source configuration is incomplete or contradictory.
    #[error("invalid source configuration: {0}")]
    Config(String),
}

impl SourceError {
    /// Whether retrying the same call later can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Network { .. })
    }
}
