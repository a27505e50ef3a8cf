//! The real Snowflake source against the fakesnow server (through scripts/fakesnow_json_server.py).
//!
//! Needs SNOWPATROL_TEST_PYTHON pointing at an interpreter with `fakesnow[server]` installed (the test script
//! sets it to .venv/bin/python). Each test starts its own peer on a free port, so tests run in
//! parallel and share nothing.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use chrono::{DateTime, TimeZone, Utc};
use pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use secrecy::SecretString;
use snowpatrol_sources::{
    MeteringRow, MeteringSource, SnowflakeAuth, SnowflakeConfig, SnowflakeSource, SourceError,
    UsageView, public_key_fingerprint,
};

use snowpatrol_sources::testing::{FakeSnowflake as Peer, PASSWORD, USER, python};

fn hour(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 9, d, h, 0, 0).unwrap()
}

/// Fetches the window the tests read (September 27, UTC) through a source configured by `cfg`.
async fn fetch_window(cfg: SnowflakeConfig) -> Result<Vec<MeteringRow>, SourceError> {
    SnowflakeSource::new(cfg)
        .unwrap()
        .fetch(hour(27, 0), hour(28, 0))
        .await
}

/// `cfg` reading ACCOUNT_USAGE as the account ACME_PROD (that view has no account column).
fn account_usage(mut cfg: SnowflakeConfig) -> SnowflakeConfig {
    cfg.view = UsageView::AccountUsage;
    cfg.account_name = Some("ACME_PROD".into());
    cfg
}

fn row(
    account: &str,
    id: i64,
    warehouse: &str,
    d: u32,
    h: u32,
    compute: f64,
    cloud: f64,
) -> MeteringRow {
    MeteringRow {
        account_name: account.into(),
        warehouse_id: id,
        warehouse_name: warehouse.into(),
        service_type: "WAREHOUSE_METERING".into(),
        start_time: hour(d, h),
        end_time: hour(d, h) + chrono::Duration::hours(1),
        credits_used: compute + cloud,
        credits_used_compute: compute,
        credits_used_cloud_services: cloud,
    }
}

/// The fixture: the same warehouse name in two accounts, a pseudo warehouse, and rows on both window edges.
fn fixture() -> Vec<MeteringRow> {
    vec![
        row("ACME_PROD", 3, "COMPUTE_WH", 26, 23, 1.0, 0.0), // before the window
        row("ACME_PROD", 3, "COMPUTE_WH", 27, 0, 2.5, 0.125), // first hour of the window
        row(
            "ACME_PROD",
            3,
            "COMPUTE_WH",
            27,
            17,
            7.123456789,
            0.000000001,
        ), // Snowflake's 9-digit credits
        row("ACME_PROD", 9, "ETL_WH", 27, 3, 16.0, 0.5),
        row("ACME_PROD", 0, "CLOUD_SERVICES_ONLY", 27, 5, 0.0, 0.75), // pseudo warehouse: excluded
        row("ACME_DEV", 3, "COMPUTE_WH", 27, 5, 0.25, 0.0), // same name and id, other account
        row("ACME_PROD", 3, "COMPUTE_WH", 28, 0, 4.0, 0.0), // == to: excluded
    ]
}

fn expected(rows: &[MeteringRow], account: Option<&str>) -> Vec<MeteringRow> {
    let mut want: Vec<MeteringRow> = rows
        .iter()
        .filter(|r| r.warehouse_id > 0 && r.start_time >= hour(27, 0) && r.start_time < hour(28, 0))
        .filter(|r| account.is_none_or(|a| r.account_name == a))
        .cloned()
        .collect();
    want.sort_by(|a, b| {
        (&a.account_name, &a.warehouse_name, a.start_time).cmp(&(
            &b.account_name,
            &b.warehouse_name,
            b.start_time,
        ))
    });
    want
}

fn password_auth(p: &str) -> SnowflakeAuth {
    SnowflakeAuth::Password {
        password: SecretString::from(p.to_owned()),
    }
}

#[tokio::test]
async fn organization_usage_extracts_exact_hourly_rows_for_the_window() {
    let peer = Peer::start(&[format!("--user={USER}:{PASSWORD}")]);
    let rows = fixture();
    peer.load(&rows).await;
    let source = SnowflakeSource::new(peer.config(password_auth(PASSWORD))).unwrap();
    let got = source.fetch(hour(27, 0), hour(28, 0)).await.unwrap();
    let want = expected(&rows, None);
    assert_eq!(want.len(), 4);
    assert_eq!(got, want);
    let names: Vec<String> = got.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(
        names,
        [
            "ACME_DEV.COMPUTE_WH",
            "ACME_PROD.COMPUTE_WH",
            "ACME_PROD.COMPUTE_WH",
            "ACME_PROD.ETL_WH"
        ]
    );

    // An empty window is an empty result, not an error.
    assert!(
        source
            .fetch(hour(20, 0), hour(21, 0))
            .await
            .unwrap()
            .is_empty()
    );
    let describe = source.describe();
    assert!(
        describe.contains("ORGANIZATION_USAGE") && !describe.contains(PASSWORD),
        "{describe}"
    );
}

#[tokio::test]
async fn account_usage_takes_account_name_from_config() {
    let peer = Peer::start(&[]);
    let rows = fixture();
    peer.load(&rows).await;
    let got = fetch_window(account_usage(peer.config(password_auth(PASSWORD))))
        .await
        .unwrap();
    assert_eq!(got, expected(&rows, Some("ACME_PROD")));
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_that_does_not_leak_it() {
    let peer = Peer::start(&[format!("--user={USER}:{PASSWORD}")]);
    let err = fetch_window(peer.config(password_auth("hunter2-wrong")))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    assert!(
        text.contains("Incorrect username or password")
            && text.contains("check snowflake.user (SNOWPATROL)"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{text}"
    );
}

#[tokio::test]
async fn missing_view_maps_to_the_missing_grant() {
    let peer = Peer::start(&[]); // no tables: what a role without access sees
    let err = fetch_window(peer.config(password_auth(PASSWORD)))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SourceError::Permission { .. }), "{err:?}");
    assert!(
        text.contains("ORGANIZATION_USAGE requires the ORGADMIN role"),
        "{text}"
    );
    assert!(
        text.contains(
            "GRANT DATABASE ROLE SNOWFLAKE.ORGANIZATION_USAGE_VIEWER TO ROLE COST_READER"
        ),
        "{text}"
    );

    let err = fetch_window(account_usage(peer.config(password_auth(PASSWORD))))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("GRANT IMPORTED PRIVILEGES ON DATABASE SNOWFLAKE TO ROLE COST_READER"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transient_network_error() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = SnowflakeConfig::with_password("acme-org", USER, PASSWORD);
    cfg.base_url = Some(format!("http://127.0.0.1:{port}"));
    let err = fetch_window(cfg).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn oauth_login_works() {
    let peer = Peer::start(&[]);
    let rows = fixture();
    peer.load(&rows).await;
    let got = fetch_window(peer.config(SnowflakeAuth::OAuth {
        token: SecretString::from(snowpatrol_sources::testing::OAUTH_TOKEN.to_owned()),
    }))
    .await
    .unwrap();
    assert_eq!(got, expected(&rows, None));
    // A token the peer does not know is refused, as Snowflake refuses it.
    let err = fetch_window(peer.config(SnowflakeAuth::OAuth {
        token: SecretString::from("expired-token".to_owned()),
    }))
    .await
    .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("OAuth"), "{err}");
}

struct Keys {
    dir: tempfile::TempDir,
    key: RsaPrivateKey,
}

impl Keys {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One 2048-bit key pair per test binary (key generation is the slow part), written plain, encrypted and
/// as PKCS#1, plus a second unrelated key.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let other = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("plain.p8"),
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("encrypted.p8"),
            key.to_pkcs8_encrypted_pem(&mut rng, b"s3cret-pass", LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            std::fs::write(
                dir.path().join("pkcs1.pem"),
                key.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes(),
            )
            .unwrap();
        }
        std::fs::write(
            dir.path().join("other.p8"),
            other.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("public.pem"),
            key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join("garbage.p8"), "not a key\n").unwrap();
        Keys { dir, key }
    })
}

fn key_pair(path: PathBuf, passphrase: Option<&str>) -> SnowflakeAuth {
    SnowflakeAuth::KeyPair {
        private_key_path: path,
        passphrase: passphrase.map(|p| SecretString::from(p.to_owned())),
    }
}

#[tokio::test]
async fn key_pair_login_with_plain_encrypted_and_pkcs1_keys() {
    let k = keys();
    let peer = Peer::start(&[format!(
        "--rsa-public-key={USER}={}",
        k.path("public.pem").display()
    )]);
    let rows = fixture();
    peer.load(&rows).await;
    for auth in [
        key_pair(k.path("plain.p8"), None),
        key_pair(k.path("encrypted.p8"), Some("s3cret-pass")),
        key_pair(k.path("pkcs1.pem"), None),
    ] {
        assert_eq!(
            fetch_window(peer.config(auth.clone())).await.unwrap(),
            expected(&rows, None),
            "{auth:?}"
        );
    }

    // A key Snowflake does not know: the hint names the fingerprint DESC USER must show for OUR key.
    let err = fetch_window(peer.config(key_pair(k.path("other.p8"), None)))
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    assert!(
        err.to_string().contains("JWT token is invalid")
            && err.to_string().contains("RSA_PUBLIC_KEY_FP = SHA256:"),
        "{err}"
    );
}

#[test]
fn key_loading_errors_say_what_to_fix() {
    let k = keys();
    // Why a source with the key file `file` (and `passphrase`) cannot be built.
    let refusal = |file: &str, passphrase: Option<&str>| {
        let mut c = SnowflakeConfig::with_password("acme-org", USER, "x");
        c.auth = key_pair(k.path(file), passphrase);
        SnowflakeSource::new(c).unwrap_err()
    };
    let err = refusal("missing.p8", None);
    assert!(
        matches!(
            err,
            SourceError::Setting {
                key: "auth.private_key_path",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("cannot read Snowflake private key file")
            && err.to_string().contains("missing.p8"),
        "{err}"
    );

    let err = refusal("encrypted.p8", None);
    assert!(
        err.to_string()
            .contains("is encrypted but no passphrase is set"),
        "{err}"
    );

    let err = refusal("encrypted.p8", Some("wrong-pass"));
    assert!(
        err.to_string().contains("cannot decrypt private key")
            && !err.to_string().contains("wrong-pass"),
        "{err}"
    );

    let err = refusal("garbage.p8", None);
    assert!(
        err.to_string()
            .contains("does not contain a PEM private key"),
        "{err}"
    );
}

#[test]
fn fingerprint_matches_the_one_snowflake_tools_compute() {
    let k = keys();
    // The cryptography package (a snowflake-connector-python dependency) computes it independently.
    let out = Command::new(python())
        .args([
            "-c",
            "import sys,hashlib,base64;from cryptography.hazmat.primitives import serialization as s;\
             k=s.load_pem_public_key(open(sys.argv[1],'rb').read());\
             print('SHA256:'+base64.b64encode(hashlib.sha256(k.public_bytes(s.Encoding.DER,s.PublicFormat.SubjectPublicKeyInfo)).digest()).decode())",
        ])
        .arg(k.path("public.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        public_key_fingerprint(&k.key).unwrap(),
        String::from_utf8(out.stdout).unwrap().trim()
    );
}
