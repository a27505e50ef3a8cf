use std::path::PathBuf;

/// Errors from building reports, charts and the Slack client.
///
/// Delivery failures are not errors of this type: `SlackNotifier::send` returns a
/// [`crate::DeliveryOutcome`] so that the outbox can record permanent vs retryable failures.
/// No variant ever carries a token value.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(
        "no Slack token: set the environment variable {env_var}{}",
        match file { Some(p) => format!(" or put the token in {}", p.display()), None => " or configure a token file".to_string() }
    )]
    TokenMissing {
        env_var: String,
        file: Option<PathBuf>,
    },
    #[error("cannot read the Slack token file {path}: {source}")]
    TokenFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Slack token from {origin} is empty")]
    TokenEmpty { origin: String },
    #[error("invalid Slack configuration: {0}")]
    InvalidSlackConfig(String),
    #[error(
        "cannot load the system's TLS root certificates for Slack (install ca-certificates): {0}"
    )]
    TlsRoots(#[source] std::io::Error),
    #[error(
        "invalid chart size {width}x{height}: both sides must be between {min} and {max} pixels"
    )]
    InvalidChartSize {
        width: u32,
        height: u32,
        min: u32,
        max: u32,
    },
    #[error("the bundled chart font could not be loaded; the crate's assets are broken")]
    FontUnavailable,
    #[error("drawing the chart for {warehouse} failed: {message}")]
    Chart { warehouse: String, message: String },
    #[error("encoding the chart PNG failed: {0}")]
    PngEncode(#[from] png::EncodingError),
}
