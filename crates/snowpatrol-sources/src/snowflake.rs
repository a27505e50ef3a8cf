//! `WAREHOUSE_METERING_HISTORY` read straight from Snowflake through `snowflake-connector-rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use snowflake_connector_rs::bind::TimestampLtz;
use snowflake_connector_rs::{
    AuthConfig, Client, ClientConfig, EndpointConfig, ErrorKind, FromRow, KeyPairConfig,
    QueryConfig, SessionConfig, Statement,
};
use snowpatrol_detect::MeteringRow;

use crate::{MeteringSource, SourceError};

/// Which `SNOWFLAKE` schema to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageView {
    /// `ORGANIZATION_USAGE`: every account of the organisation in one query; needs an organisation-level role.
    #[default]
    OrganizationUsage,
    /// `ACCOUNT_USAGE`: one account only and no `ACCOUNT_NAME` column, so `account_name` must be configured;
    /// for operators who cannot get organisation-level access.
    AccountUsage,
}

impl UsageView {
    fn qualified_view(self) -> &'static str {
        match self {
            UsageView::OrganizationUsage => {
                "SNOWFLAKE.ORGANIZATION_USAGE.WAREHOUSE_METERING_HISTORY"
            }
            UsageView::AccountUsage => "SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY",
        }
    }
}

/// How Snowpatrol logs in. Secrets are `SecretString`, so `Debug` and logs show `[REDACTED]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum SnowflakeAuth {
    Password {
        password: SecretString,
    },
    /// Key-pair (JWT) login, Snowflake's recommendation for service users. The PEM is PKCS#8 (encrypted with
    /// `passphrase`, or plain) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    KeyPair {
        private_key_path: PathBuf,
        #[serde(default)]
        passphrase: Option<SecretString>,
    },
    /// An OAuth access token obtained elsewhere (Snowpatrol does not refresh it).
    #[serde(rename = "oauth")]
    OAuth {
        token: SecretString,
    },
}

impl SnowflakeAuth {
    fn method(&self) -> &'static str {
        match self {
            SnowflakeAuth::Password { .. } => "password",
            SnowflakeAuth::KeyPair { .. } => "key pair",
            SnowflakeAuth::OAuth { .. } => "OAuth",
        }
    }
}

/// Snowflake connection settings, as read from the `[source.snowflake]` TOML table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `myorg-myaccount` (the host name part of `<account>.snowflakecomputing.com`).
    pub account: String,
    pub user: String,
    pub auth: SnowflakeAuth,
    /// Role to use; the user's default role when absent.
    #[serde(default)]
    pub role: Option<String>,
    /// Warehouse that runs the query; the user's default warehouse when absent.
    #[serde(default)]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub view: UsageView,
    /// `ACCOUNT_NAME` to put on every row; required for `account_usage`, which has no such column.
    #[serde(default)]
    pub account_name: Option<String>,
    /// Overrides `https://<account>.snowflakecomputing.com` (PrivateLink endpoints, test peers).
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: Duration,
}

fn default_query_timeout() -> Duration {
    Duration::from_secs(300)
}

impl SnowflakeConfig {
    /// A password config with defaults for everything optional (handy for tests and examples).
    pub fn with_password(
        account: impl Into<String>,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            account: account.into(),
            user: user.into(),
            auth: SnowflakeAuth::Password {
                password: SecretString::from(password.into()),
            },
            role: None,
            warehouse: None,
            view: UsageView::default(),
            account_name: None,
            base_url: None,
            query_timeout: default_query_timeout(),
        }
    }
}

/// What an error message needs to name the missing grant or setting.
#[derive(Clone, Debug)]
struct HintContext {
    user: String,
    role: Option<String>,
    warehouse: Option<String>,
    view: UsageView,
    auth_method: &'static str,
    /// `SHA256:<base64>` of the configured public key, the value `DESC USER` shows as `RSA_PUBLIC_KEY_FP`.
    key_fingerprint: Option<String>,
}

/// Reads hourly metering rows from Snowflake.
pub struct SnowflakeSource {
    client: Client,
    view: UsageView,
    pub(crate) account_name: Option<String>,
    hints: HintContext,
    description: String,
    /// Statements run by the context lookups (root causes, tags, prices), for the tests and benchmarks that
    /// hold them to one statement per view per call.
    pub(crate) context_statements: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SnowflakeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeSource")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl SnowflakeSource {
    /// How many statements the context lookups ran so far.
    pub fn context_statements(&self) -> u64 {
        self.context_statements
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The role as grants name it (for the context views' hints).
    pub(crate) fn grant_role(&self) -> &str {
        self.hints.role()
    }

    /// Validates the config and loads the private key, without connecting: a bad key or a missing setting
    /// fails at start-up instead of at the first scheduled run.
    pub fn new(cfg: SnowflakeConfig) -> Result<Self, SourceError> {
        let account_name = validated_account_name(&cfg)?;
        let (auth, key_fingerprint) = auth_config(&cfg.auth)?;
        let client = Client::new(client_config(&cfg, auth)?)
            .map_err(|e| SourceError::Config(format!("cannot build the Snowflake client: {e}")))?;
        let description = describe_config(&cfg);
        Ok(Self {
            client,
            view: cfg.view,
            account_name,
            hints: HintContext {
                user: cfg.user,
                role: cfg.role,
                warehouse: cfg.warehouse,
                view: cfg.view,
                auth_method: cfg.auth.method(),
                key_fingerprint,
            },
            description,
            context_statements: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The SQL this source runs; `?` placeholders are START_TIME bounds bound as TIMESTAMP_LTZ.
    pub fn sql(view: UsageView) -> String {
        match view {
            UsageView::OrganizationUsage => format!(
                "SELECT ACCOUNT_NAME, WAREHOUSE_ID, WAREHOUSE_NAME, SERVICE_TYPE, START_TIME, END_TIME, \
                 CREDITS_USED, CREDITS_USED_COMPUTE, CREDITS_USED_CLOUD_SERVICES \
                 FROM {} WHERE START_TIME >= ? AND START_TIME < ? AND WAREHOUSE_ID > 0 \
                 ORDER BY ACCOUNT_NAME, WAREHOUSE_NAME, START_TIME",
                view.qualified_view()
            ),
            UsageView::AccountUsage => format!(
                "SELECT WAREHOUSE_ID, WAREHOUSE_NAME, START_TIME, END_TIME, \
                 CREDITS_USED, CREDITS_USED_COMPUTE, CREDITS_USED_CLOUD_SERVICES \
                 FROM {} WHERE START_TIME >= ? AND START_TIME < ? AND WAREHOUSE_ID > 0 \
                 ORDER BY WAREHOUSE_NAME, START_TIME",
                view.qualified_view()
            ),
        }
    }

    async fn fetch_inner(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeteringRow>, SourceError> {
        let bind = |t: DateTime<Utc>| {
            TimestampLtz::try_from(t)
                .map_err(|e| SourceError::Config(format!("cannot bind timestamp {t}: {e}")))
        };
        let statement = Statement::new(Self::sql(self.view))
            .bind(bind(from)?)
            .bind(bind(to)?);
        // One session per fetch: the daemon fetches a few times a day, far apart, and a fresh login avoids
        // handling session expiry and keep-alive in between.
        let session = self.session().await?;
        let mut rows = Vec::new();
        match self.view {
            UsageView::OrganizationUsage => {
                let mut cursor = session
                    .query_as::<OrgRow, _>(statement)
                    .await
                    .map_err(|e| self.map_error(&e))?;
                while let Some(table) = cursor.next_table().await.map_err(|e| self.map_error(&e))? {
                    for row in table.rows() {
                        rows.push(row.map_err(|e| self.map_error(&e))?.into_row());
                    }
                }
            }
            UsageView::AccountUsage => {
                let account = self.account_name.clone().unwrap_or_default();
                let mut cursor = session
                    .query_as::<AccountRow, _>(statement)
                    .await
                    .map_err(|e| self.map_error(&e))?;
                while let Some(table) = cursor.next_table().await.map_err(|e| self.map_error(&e))? {
                    for row in table.rows() {
                        rows.push(row.map_err(|e| self.map_error(&e))?.into_row(&account));
                    }
                }
            }
        }
        Ok(rows)
    }

    /// A new logged-in session, its failure mapped to the setting or grant to fix.
    pub(crate) async fn session(&self) -> Result<snowflake_connector_rs::Session, SourceError> {
        self.client
            .create_session()
            .await
            .map_err(|e| self.map_error(&e))
    }

    pub(crate) fn map_error(&self, e: &snowflake_connector_rs::Error) -> SourceError {
        let message = e
            .snowflake_message()
            .map_or_else(|| e.to_string(), str::to_owned);
        classify(
            e.kind(),
            e.snowflake_code(),
            &message,
            e.query_id(),
            &self.hints,
        )
    }
}

/// Checks the settings every view needs; returns the `ACCOUNT_NAME` to put on every row, if configured.
fn validated_account_name(cfg: &SnowflakeConfig) -> Result<Option<String>, SourceError> {
    if cfg.account.trim().is_empty() {
        return Err(SourceError::Config(
            "snowflake.account is empty (expected e.g. \"myorg-myaccount\")".into(),
        ));
    }
    if cfg.user.trim().is_empty() {
        return Err(SourceError::Config("snowflake.user is empty".into()));
    }
    let account_name = cfg.account_name.clone().filter(|a| !a.trim().is_empty());
    if cfg.view == UsageView::AccountUsage && account_name.is_none() {
        return Err(SourceError::Config(
            "snowflake.view = \"account_usage\" needs snowflake.account_name: ACCOUNT_USAGE has no ACCOUNT_NAME column, \
             so Snowpatrol labels every row with the configured name (use the name ORGANIZATION_USAGE shows for this account)"
                .into(),
        ));
    }
    Ok(account_name)
}

/// The connector's login settings, and for key-pair login the public key's fingerprint (for hints). Loads and
/// decrypts the private key now, so a bad key fails at start-up.
fn auth_config(auth: &SnowflakeAuth) -> Result<(AuthConfig, Option<String>), SourceError> {
    Ok(match auth {
        SnowflakeAuth::Password { password } => {
            (AuthConfig::password(password.expose_secret()), None)
        }
        SnowflakeAuth::OAuth { token } => (AuthConfig::oauth(token.expose_secret()), None),
        SnowflakeAuth::KeyPair {
            private_key_path,
            passphrase,
        } => {
            let key = load_private_key(private_key_path, passphrase.as_ref())?;
            let key_fingerprint = public_key_fingerprint(&key);
            // Hand the connector the decrypted key so each login skips the (deliberately slow) KDF; the
            // connector keeps whatever it is given in memory either way.
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| {
                SourceError::Config(format!(
                    "cannot re-encode private key {}: {e}",
                    private_key_path.display()
                ))
            })?;
            (
                AuthConfig::key_pair(KeyPairConfig::from_pem(pem.as_str())),
                key_fingerprint,
            )
        }
    })
}

/// The connector's client settings: login, role and warehouse, query timeout and endpoint.
fn client_config(cfg: &SnowflakeConfig, auth: AuthConfig) -> Result<ClientConfig, SourceError> {
    let mut session = SessionConfig::new();
    if let Some(role) = &cfg.role {
        session = session.with_role(role);
    }
    if let Some(warehouse) = &cfg.warehouse {
        session = session.with_warehouse(warehouse);
    }
    let mut client_config = ClientConfig::new(&cfg.user, &cfg.account, auth)
        .with_session(session)
        .with_query(QueryConfig::new().with_query_response_timeout(cfg.query_timeout));
    if let Some(base) = &cfg.base_url {
        let url = url::Url::parse(base).map_err(|e| {
            SourceError::Config(format!("snowflake.base_url {base:?} is not a URL: {e}"))
        })?;
        client_config = client_config.with_endpoint(EndpointConfig::custom_base_url(url));
    }
    Ok(client_config)
}

/// The source as logs and `describe` show it (no secrets).
fn describe_config(cfg: &SnowflakeConfig) -> String {
    format!(
        "snowflake account={} user={} role={} warehouse={} view={} auth={}{}",
        cfg.account,
        cfg.user,
        cfg.role.as_deref().unwrap_or("<default>"),
        cfg.warehouse.as_deref().unwrap_or("<default>"),
        cfg.view.qualified_view(),
        cfg.auth.method(),
        cfg.base_url
            .as_deref()
            .map(|u| format!(" endpoint={u}"))
            .unwrap_or_default(),
    )
}

#[async_trait]
impl MeteringSource for SnowflakeSource {
    async fn fetch(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MeteringRow>, SourceError> {
        let started = std::time::Instant::now();
        let result = self.fetch_inner(from, to).await;
        match &result {
            Ok(rows) => tracing::info!(source = %self.description, %from, %to, rows = rows.len(),
                elapsed_ms = started.elapsed().as_millis() as u64, "fetched metering rows"),
            Err(e) => {
                tracing::warn!(source = %self.description, %from, %to, error = %e, "metering fetch failed")
            }
        }
        result
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[derive(FromRow)]
struct OrgRow {
    account_name: String,
    warehouse_id: i64,
    warehouse_name: String,
    service_type: Option<String>,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    credits_used: f64,
    credits_used_compute: Option<f64>,
    credits_used_cloud_services: Option<f64>,
}

impl OrgRow {
    fn into_row(self) -> MeteringRow {
        MeteringRow {
            account_name: self.account_name,
            warehouse_id: self.warehouse_id,
            warehouse_name: self.warehouse_name,
            service_type: self
                .service_type
                .unwrap_or_else(|| "WAREHOUSE_METERING".into()),
            start_time: self.start_time,
            end_time: self.end_time,
            credits_used: self.credits_used,
            credits_used_compute: self.credits_used_compute.unwrap_or(self.credits_used),
            credits_used_cloud_services: self.credits_used_cloud_services.unwrap_or(0.0),
        }
    }
}

#[derive(FromRow)]
struct AccountRow {
    warehouse_id: i64,
    warehouse_name: String,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    credits_used: f64,
    credits_used_compute: Option<f64>,
    credits_used_cloud_services: Option<f64>,
}

impl AccountRow {
    fn into_row(self, account: &str) -> MeteringRow {
        MeteringRow {
            account_name: account.to_owned(),
            warehouse_id: self.warehouse_id,
            warehouse_name: self.warehouse_name,
            service_type: "WAREHOUSE_METERING".into(),
            start_time: self.start_time,
            end_time: self.end_time,
            credits_used: self.credits_used,
            credits_used_compute: self.credits_used_compute.unwrap_or(self.credits_used),
            credits_used_cloud_services: self.credits_used_cloud_services.unwrap_or(0.0),
        }
    }
}

/// Loads an RSA private key, turning each way it can go wrong into the fix the operator needs.
pub fn load_private_key(
    path: &Path,
    passphrase: Option<&SecretString>,
) -> Result<RsaPrivateKey, SourceError> {
    let pem = std::fs::read_to_string(path).map_err(|e| SourceError::Setting {
        key: "auth.private_key_path",
        message: format!(
            "cannot read Snowflake private key file {}: {e}",
            path.display()
        ),
    })?;
    let p = path.display();
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let Some(pass) = passphrase else {
            return Err(SourceError::Setting {
                key: "auth.passphrase",
                message: format!("private key {p} is encrypted but no passphrase is set"),
            });
        };
        return RsaPrivateKey::from_pkcs8_encrypted_pem(&pem, pass.expose_secret().as_bytes()).map_err(|e| {
            SourceError::Setting {
                key: "auth.passphrase",
                message: format!(
                    "cannot decrypt private key {p}: {e} (wrong passphrase, or an unsupported cipher; \
                     re-encrypt with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in key.pem -out key.p8`)"
                ),
            }
        });
    }
    if pem.contains("BEGIN PRIVATE KEY") {
        return RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| {
            SourceError::Config(format!(
                "private key {p} is not a valid PKCS#8 RSA key: {e}"
            ))
        });
    }
    if pem.contains("BEGIN RSA PRIVATE KEY") {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        return RsaPrivateKey::from_pkcs1_pem(&pem).map_err(|e| {
            SourceError::Config(format!(
                "private key {p} is not a valid PKCS#1 RSA key: {e} (if it is encrypted, convert it with \
                 `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {p} -out key.p8`)"
            ))
        });
    }
    Err(SourceError::Config(format!(
        "{p} does not contain a PEM private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN ENCRYPTED PRIVATE KEY-----; \
         generate one with `openssl genrsa 2048 | openssl pkcs8 -topk8 -v2 aes-256-cbc -out key.p8`)"
    )))
}

/// The fingerprint Snowflake computes for a registered public key (`RSA_PUBLIC_KEY_FP` in `DESC USER`).
pub fn public_key_fingerprint(key: &RsaPrivateKey) -> Option<String> {
    use rsa::sha2::{Digest, Sha256};
    let der = key.to_public_key().to_public_key_der().ok()?;
    let digest = Sha256::digest(der.as_bytes());
    Some(format!("SHA256:{}", base64_std(&digest)))
}

/// Standard base64 with padding; eleven lines instead of another dependency for one 32-byte digest.
fn base64_std(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Maps a connector error to a [`SourceError`] whose hint names the grant or setting to fix.
///
/// Matches on Snowflake's error codes where they are stable and on message text otherwise (login rejections
/// reach us without a code). Kept free of connector types so every branch is unit-tested.
fn classify(
    kind: ErrorKind,
    code: Option<&str>,
    message: &str,
    query_id: Option<&str>,
    h: &HintContext,
) -> SourceError {
    match kind {
        ErrorKind::Auth | ErrorKind::SessionExpired => SourceError::Auth {
            message: message.to_owned(),
            hint: login_hint(message, h),
        },
        ErrorKind::Server => classify_server(code, message, query_id, h),
        ErrorKind::Network => SourceError::Network {
            message: message.to_owned(),
        },
        ErrorKind::Timeout => SourceError::Query {
            message: format!("{message} (raise snowflake.query_timeout or use a larger warehouse)"),
            query_id: query_id.map(str::to_owned),
        },
        ErrorKind::Decode | ErrorKind::Protocol => SourceError::Data {
            message: message.to_owned(),
        },
        ErrorKind::Config => SourceError::Config(message.to_owned()),
        _ => SourceError::Query {
            message: message.to_owned(),
            query_id: query_id.map(str::to_owned),
        },
    }
}

impl HintContext {
    /// The role as grants name it.
    pub(crate) fn role(&self) -> &str {
        self.role.as_deref().unwrap_or("<the user's default role>")
    }

    /// How to make the warehouse usable: grant it, or configure one when the user has no default.
    fn warehouse_hint(&self) -> String {
        let role = self.role();
        match &self.warehouse {
            Some(w) => format!(
                "grant the warehouse to the role: `GRANT USAGE ON WAREHOUSE {w} TO ROLE {role}`"
            ),
            None => format!(
                "set snowflake.warehouse (the user has no default warehouse), and `GRANT USAGE ON WAREHOUSE <wh> TO ROLE {role}`"
            ),
        }
    }

    /// The grant that lets the role read the configured usage view.
    fn view_grant_hint(&self) -> String {
        let role = self.role();
        let role_clause = self.role.as_deref().map_or_else(
            || "the user's default role".to_owned(),
            |r| format!("role {r}"),
        );
        match self.view {
            UsageView::OrganizationUsage => format!(
                "{role_clause} cannot read SNOWFLAKE.ORGANIZATION_USAGE. ORGANIZATION_USAGE requires the ORGADMIN role \
                 (or GLOBALORGADMIN in the organization account) or a role granted an organization SNOWFLAKE database \
                 role, e.g. `GRANT DATABASE ROLE SNOWFLAKE.ORGANIZATION_USAGE_VIEWER TO ROLE {role}`, and only from the \
                 organization account or an account with ORGADMIN enabled. Alternatively set snowflake.view = \
                 \"account_usage\" and snowflake.account_name"
            ),
            UsageView::AccountUsage => format!(
                "{role_clause} cannot read SNOWFLAKE.ACCOUNT_USAGE: `GRANT IMPORTED PRIVILEGES ON DATABASE SNOWFLAKE TO ROLE {role}` \
                 (or `GRANT DATABASE ROLE SNOWFLAKE.USAGE_VIEWER TO ROLE {role}`)"
            ),
        }
    }
}

/// The fix for a rejected login (or an expired session), from what the message names and the auth method.
fn login_hint(message: &str, h: &HintContext) -> String {
    let lower = message.to_ascii_lowercase();
    let role = h.role();
    let user = &h.user;
    if lower.contains("role")
        && (lower.contains("not granted")
            || lower.contains("not authorized")
            || lower.contains("does not exist"))
    {
        format!(
            "`GRANT ROLE {role} TO USER {user}`, or remove snowflake.role to use the user's default role"
        )
    } else if lower.contains("warehouse") {
        h.warehouse_hint()
    } else if lower.contains("locked") || lower.contains("disabled") {
        format!(
            "the user is locked or disabled: `ALTER USER {user} SET DISABLED = FALSE` / `ALTER USER {user} UNSET MINS_TO_UNLOCK`"
        )
    } else if lower.contains("jwt") || h.auth_method == "key pair" {
        let fp = h.key_fingerprint.as_deref().unwrap_or("<fingerprint>");
        format!(
            "register the public key of snowflake.auth.private_key_path for user {user}: \
             `ALTER USER {user} SET RSA_PUBLIC_KEY='<public key body>'`; `DESC USER {user}` must show \
             RSA_PUBLIC_KEY_FP = {fp}. Also check snowflake.account is the account identifier (orgname-accountname) \
             and snowflake.user the login name"
        )
    } else if lower.contains("oauth") || h.auth_method == "OAuth" {
        "the OAuth access token is invalid or expired: obtain a new one for this user (Snowpatrol does not refresh tokens), \
         and check the security integration allows the requested role"
            .into()
    } else {
        format!(
            "check snowflake.user ({user}), the password, and snowflake.account (orgname-accountname); Snowflake \
             gives the same message when the user does not exist. Prefer key-pair auth for service users"
        )
    }
}

/// An error Snowflake answered a query with: a missing warehouse or grant gets its fix, anything else is a
/// query error.
fn classify_server(
    code: Option<&str>,
    message: &str,
    query_id: Option<&str>,
    h: &HintContext,
) -> SourceError {
    let lower = message.to_ascii_lowercase();
    let permission = |hint: String| SourceError::Permission {
        message: message.to_owned(),
        hint,
    };
    let not_authorized = code == Some("002003")
        || lower.contains("does not exist or not authorized")
        || lower.contains("does not exist because");
    if lower.contains("no active warehouse") || code == Some("000606") {
        permission(h.warehouse_hint())
    } else if lower.contains("insufficient privileges") || code == Some("003001") || not_authorized
    {
        permission(h.view_grant_hint())
    } else {
        SourceError::Query {
            message: message.to_owned(),
            query_id: query_id.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(view: UsageView, auth_method: &'static str) -> HintContext {
        HintContext {
            user: "SNOWPATROL".into(),
            role: Some("COST_READER".into()),
            warehouse: Some("SNOWPATROL_WH".into()),
            view,
            auth_method,
            key_fingerprint: Some("SHA256:abc=".into()),
        }
    }

    /// Classifies an error Snowflake gave without a query id and checks that its message carries `hint`;
    /// returns it for further checks.
    fn classified_with_hint(
        kind: ErrorKind,
        code: Option<&str>,
        message: &str,
        h: &HintContext,
        hint: &str,
    ) -> SourceError {
        let e = classify(kind, code, message, None, h);
        assert!(e.to_string().contains(hint), "{e}");
        e
    }

    #[test]
    fn not_authorized_names_the_grant_for_each_view() {
        let msg = "SQL compilation error:\nSchema 'SNOWFLAKE.ORGANIZATION_USAGE' does not exist or not authorized.";
        let e = classify(
            ErrorKind::Server,
            Some("002003"),
            msg,
            Some("q1"),
            &hints(UsageView::OrganizationUsage, "password"),
        );
        let text = e.to_string();
        assert!(matches!(e, SourceError::Permission { .. }), "{text}");
        assert!(
            text.contains("ORGANIZATION_USAGE requires the ORGADMIN role"),
            "{text}"
        );
        assert!(text.contains("TO ROLE COST_READER"), "{text}");

        classified_with_hint(
            ErrorKind::Server,
            Some("002003"),
            msg,
            &hints(UsageView::AccountUsage, "password"),
            "GRANT IMPORTED PRIVILEGES ON DATABASE SNOWFLAKE TO ROLE COST_READER",
        );
    }

    #[test]
    fn missing_warehouse_and_role_grants_get_specific_hints() {
        let h = hints(UsageView::OrganizationUsage, "password");
        classified_with_hint(
            ErrorKind::Server,
            Some("000606"),
            "No active warehouse selected in the current session.",
            &h,
            "GRANT USAGE ON WAREHOUSE SNOWPATROL_WH TO ROLE COST_READER",
        );
        classified_with_hint(
            ErrorKind::Auth,
            None,
            "Role 'COST_READER' specified in the connect string is not granted to this user.",
            &h,
            "GRANT ROLE COST_READER TO USER SNOWPATROL",
        );
    }

    #[test]
    fn login_failures_get_hints_for_their_auth_method() {
        let h = hints(UsageView::OrganizationUsage, "password");
        let e = classified_with_hint(
            ErrorKind::Auth,
            None,
            "Incorrect username or password was specified.",
            &h,
            "check snowflake.user",
        );
        assert!(matches!(e, SourceError::Auth { .. }), "{e}");

        classified_with_hint(
            ErrorKind::Auth,
            None,
            "JWT token is invalid.",
            &hints(UsageView::OrganizationUsage, "key pair"),
            "RSA_PUBLIC_KEY_FP = SHA256:abc=",
        );
        classified_with_hint(
            ErrorKind::Auth,
            None,
            "Invalid OAuth access token.",
            &hints(UsageView::OrganizationUsage, "OAuth"),
            "OAuth access token is invalid or expired",
        );
    }

    #[test]
    fn other_kinds_keep_their_category() {
        let h = hints(UsageView::OrganizationUsage, "password");
        assert!(classify(ErrorKind::Network, None, "connection refused", None, &h).is_transient());
        let e = classify(
            ErrorKind::Server,
            Some("001003"),
            "SQL compilation error: syntax error",
            Some("q9"),
            &h,
        );
        assert!(
            matches!(&e, SourceError::Query { query_id: Some(q), .. } if q == "q9"),
            "{e}"
        );
        assert!(matches!(
            classify(ErrorKind::Decode, None, "bad cell", None, &h),
            SourceError::Data { .. }
        ));
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_std(b""), "");
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(b"fo"), "Zm8=");
        assert_eq!(base64_std(b"foo"), "Zm9v");
        assert_eq!(base64_std(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn account_usage_requires_account_name() {
        let mut cfg = SnowflakeConfig::with_password("org-acct", "u", "pw");
        cfg.view = UsageView::AccountUsage;
        let e = SnowflakeSource::new(cfg).unwrap_err();
        assert!(
            e.to_string().contains("needs snowflake.account_name"),
            "{e}"
        );
    }

    #[test]
    fn sql_filters_pseudo_warehouses_and_binds_the_window() {
        for view in [UsageView::OrganizationUsage, UsageView::AccountUsage] {
            let sql = SnowflakeSource::sql(view);
            assert!(
                sql.contains("WHERE START_TIME >= ? AND START_TIME < ? AND WAREHOUSE_ID > 0"),
                "{sql}"
            );
            assert!(sql.contains(view.qualified_view()), "{sql}");
        }
    }
}
