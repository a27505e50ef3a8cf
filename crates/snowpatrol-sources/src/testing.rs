//! A Snowflake protocol peer for tests: `scripts/fakesnow_json_server.py` (fakesnow behind a JSON-results
//! wrapper) started as a child process on a free port, with the metering views created and loaded through the
//! Rust connector itself. Shared by this crate's tests and the pipeline's, so both talk to the same peer.
//!
//! Needs `SNOWPATROL_TEST_PYTHON` (set by scripts/test.sh); panics with the reason otherwise — a missing peer
//! is a broken test setup, never a reason to skip.

use crate::{MeteringRow, SnowflakeAuth, SnowflakeConfig};
use snowflake_connector_rs::bind::TimestampLtz;
use snowflake_connector_rs::{
    AuthConfig, Client, ClientConfig, EndpointConfig, PositionalBinds, Session, Statement,
};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const USER: &str = "SNOWPATROL";
pub const PASSWORD: &str = "correct-horse-battery";
/// The OAuth access token the peer accepts.
pub const OAUTH_TOKEN: &str = "tok-123";

pub fn python() -> String {
    std::env::var("SNOWPATROL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SNOWPATROL_TEST_PYTHON is not set: point it at a Python with fakesnow[server] installed \
             (scripts/test.sh sets it to .venv/bin/python; see scripts/requirements-test.txt)"
        )
    })
}

/// A running fakesnow JSON peer; killed on drop.
pub struct FakeSnowflake {
    child: Child,
    pub port: u16,
}

impl FakeSnowflake {
    /// Starts the peer; `extra` are wrapper flags such as `--rsa-public-key NAME=PEM`. Like Snowflake, the peer
    /// refuses wrong credentials: it always knows [`USER`] with [`PASSWORD`] and the OAuth token
    /// [`OAUTH_TOKEN`], so a test that sends anything else fails its login.
    pub fn start(extra: &[String]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fakesnow_json_server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(["--port", "0"])
            .arg(format!("--user={USER}:{PASSWORD}"))
            .arg(format!("--oauth-token={OAUTH_TOKEN}"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} with {}: {e}", script.display(), python()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the peer's port");
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("fakesnow peer did not print LISTENING <port>, got {line:?}")
            });
        Self { child, port }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A source configuration pointing at this peer.
    pub fn config(&self, auth: SnowflakeAuth) -> SnowflakeConfig {
        let mut cfg = SnowflakeConfig::with_password("acme-org", USER, PASSWORD);
        cfg.auth = auth;
        cfg.role = Some("COST_READER".into());
        cfg.warehouse = Some("SNOWPATROL_WH".into());
        cfg.base_url = Some(self.base_url());
        cfg
    }

    /// Creates both metering views and loads `rows` with bind parameters (ACME_PROD's rows also go to
    /// ACCOUNT_USAGE, which has no ACCOUNT_NAME column), many rows per statement.
    pub async fn load(&self, rows: &[MeteringRow]) {
        let s = self.session().await;
        create_metering_views(&s).await;
        for chunk in rows.chunks(200) {
            insert_organization_rows(&s, chunk).await;
            let prod: Vec<&MeteringRow> = chunk
                .iter()
                .filter(|r| r.account_name == "ACME_PROD")
                .collect();
            if prod.is_empty() {
                continue;
            }
            insert_account_rows(&s, &prod).await;
        }
    }
}

/// The views root causes, tags and prices are read from, with the columns Snowpatrol reads (and a few it does
/// not, so a query naming a wrong column fails here as it would in Snowflake).
pub const CONTEXT_VIEWS: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS SNOWFLAKE",
    "CREATE SCHEMA IF NOT EXISTS SNOWFLAKE.ORGANIZATION_USAGE",
    "CREATE SCHEMA IF NOT EXISTS SNOWFLAKE.ACCOUNT_USAGE",
    "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.QUERY_ATTRIBUTION_HISTORY (QUERY_ID VARCHAR, PARENT_QUERY_ID VARCHAR, \
     ROOT_QUERY_ID VARCHAR, WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR, QUERY_HASH VARCHAR, QUERY_PARAMETERIZED_HASH VARCHAR, \
     QUERY_TAG VARCHAR, USER_NAME VARCHAR, START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, \
     CREDITS_ATTRIBUTED_COMPUTE FLOAT, CREDITS_USED_QUERY_ACCELERATION FLOAT)",
    "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY (QUERY_ID VARCHAR, QUERY_TEXT VARCHAR, QUERY_TYPE VARCHAR, \
     WAREHOUSE_NAME VARCHAR, USER_NAME VARCHAR, ROLE_NAME VARCHAR, QUERY_TAG VARCHAR, QUERY_PARAMETERIZED_HASH VARCHAR, \
     EXECUTION_STATUS VARCHAR, START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, EXECUTION_TIME NUMBER)",
    "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_EVENTS_HISTORY (TIMESTAMP TIMESTAMP_LTZ, WAREHOUSE_ID NUMBER, \
     WAREHOUSE_NAME VARCHAR, CLUSTER_NUMBER NUMBER, EVENT_NAME VARCHAR, EVENT_REASON VARCHAR, EVENT_STATE VARCHAR, \
     USER_NAME VARCHAR, ROLE_NAME VARCHAR, QUERY_ID VARCHAR, SIZE VARCHAR, CLUSTER_COUNT NUMBER)",
    "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.TAG_REFERENCES (TAG_DATABASE VARCHAR, TAG_SCHEMA VARCHAR, TAG_ID NUMBER, \
     TAG_NAME VARCHAR, TAG_VALUE VARCHAR, OBJECT_DATABASE VARCHAR, OBJECT_SCHEMA VARCHAR, OBJECT_ID NUMBER, \
     OBJECT_NAME VARCHAR, OBJECT_DELETED TIMESTAMP_LTZ, DOMAIN VARCHAR, COLUMN_ID NUMBER, COLUMN_NAME VARCHAR, \
     APPLY_METHOD VARCHAR)",
    "CREATE TABLE SNOWFLAKE.ORGANIZATION_USAGE.USAGE_IN_CURRENCY_DAILY (ORGANIZATION_NAME VARCHAR, \
     CONTRACT_NUMBER NUMBER, ACCOUNT_NAME VARCHAR, ACCOUNT_LOCATOR VARCHAR, REGION VARCHAR, SERVICE_LEVEL VARCHAR, \
     USAGE_DATE DATE, USAGE_TYPE VARCHAR, CURRENCY VARCHAR, USAGE NUMBER(38,9), USAGE_IN_CURRENCY NUMBER(38,9), \
     BALANCE_SOURCE VARCHAR)",
];

impl FakeSnowflake {
    /// A session of the peer's known user, for setting up its data.
    async fn session(&self) -> Session {
        let base = url::Url::parse(&self.base_url()).expect("peer URL");
        let client = Client::new(
            ClientConfig::new(USER, "acme-org", AuthConfig::password(PASSWORD))
                .with_endpoint(EndpointConfig::custom_base_url(base)),
        )
        .expect("connector client");
        client.create_session().await.expect("login to the peer")
    }

    /// Runs `statements` in one session, in order (DDL and inserts for a test's views).
    pub async fn execute(&self, statements: &[&str]) {
        let s = self.session().await;
        for sql in statements {
            s.query(sql.to_string())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// The SNOWFLAKE database with both schemas and their WAREHOUSE_METERING_HISTORY tables.
async fn create_metering_views(s: &Session) {
    for sql in [
        "CREATE DATABASE IF NOT EXISTS SNOWFLAKE",
        "CREATE SCHEMA IF NOT EXISTS SNOWFLAKE.ORGANIZATION_USAGE",
        "CREATE SCHEMA IF NOT EXISTS SNOWFLAKE.ACCOUNT_USAGE",
        "CREATE TABLE SNOWFLAKE.ORGANIZATION_USAGE.WAREHOUSE_METERING_HISTORY (ORGANIZATION_NAME VARCHAR, \
         ACCOUNT_NAME VARCHAR, REGION VARCHAR, SERVICE_TYPE VARCHAR, START_TIME TIMESTAMP_LTZ, END_TIME TIMESTAMP_LTZ, \
         WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR, CREDITS_USED NUMBER(38,9), CREDITS_USED_COMPUTE NUMBER(38,9), \
         CREDITS_USED_CLOUD_SERVICES NUMBER(38,9))",
        "CREATE TABLE SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY (START_TIME TIMESTAMP_LTZ, \
         END_TIME TIMESTAMP_LTZ, WAREHOUSE_ID NUMBER, WAREHOUSE_NAME VARCHAR, CREDITS_USED NUMBER(38,9), \
         CREDITS_USED_COMPUTE NUMBER(38,9), CREDITS_USED_CLOUD_SERVICES NUMBER(38,9))",
    ] {
        s.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// `rows` into ORGANIZATION_USAGE, in one statement.
async fn insert_organization_rows(s: &Session, rows: &[MeteringRow]) {
    let values =
        vec!["('ACME', ?, 'AWS_US_WEST_2', ?, ?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ");
    let mut st = Statement::new_positional(format!(
        "INSERT INTO SNOWFLAKE.ORGANIZATION_USAGE.WAREHOUSE_METERING_HISTORY (ORGANIZATION_NAME, ACCOUNT_NAME, \
         REGION, SERVICE_TYPE, START_TIME, END_TIME, WAREHOUSE_ID, WAREHOUSE_NAME, CREDITS_USED, \
         CREDITS_USED_COMPUTE, CREDITS_USED_CLOUD_SERVICES) VALUES {values}"
    ));
    for r in rows {
        st = bind_metering(
            st.bind(r.account_name.clone()).bind(r.service_type.clone()),
            r,
        );
    }
    s.query(st).await.expect("insert metering rows");
}

/// Binds the columns both metering views share, in their order: START_TIME, END_TIME, WAREHOUSE_ID,
/// WAREHOUSE_NAME and the three credit columns.
fn bind_metering(st: Statement<PositionalBinds>, r: &MeteringRow) -> Statement<PositionalBinds> {
    st.bind(TimestampLtz::try_from(r.start_time).expect("timestamp"))
        .bind(TimestampLtz::try_from(r.end_time).expect("timestamp"))
        .bind(r.warehouse_id)
        .bind(r.warehouse_name.clone())
        .bind(r.credits_used)
        .bind(r.credits_used_compute)
        .bind(r.credits_used_cloud_services)
}

/// `rows` (one account's) into ACCOUNT_USAGE, which has no ACCOUNT_NAME column, in one statement.
async fn insert_account_rows(s: &Session, rows: &[&MeteringRow]) {
    let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ");
    let mut st = Statement::new_positional(format!(
        "INSERT INTO SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY (START_TIME, END_TIME, WAREHOUSE_ID, \
         WAREHOUSE_NAME, CREDITS_USED, CREDITS_USED_COMPUTE, CREDITS_USED_CLOUD_SERVICES) VALUES {values}"
    ));
    for r in rows {
        st = bind_metering(st, r);
    }
    s.query(st).await.expect("insert account usage rows");
}

impl Drop for FakeSnowflake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
