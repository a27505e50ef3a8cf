//! `SlackConfig::token_from_env_or_file`. One test function in its own binary: it sets
//! environment variables, which must not race other threads reading the environment.

use std::io::Write as _;

use secrecy::ExposeSecret as _;
use snowpatrol_alert::{AlertError, SlackConfig};

const VAR: &str = "SNOWPATROL_ALERT_TEST_SLACK_TOKEN";
const SECRET: &str = "xoxb-9999-SECRETVALUE";

#[test]
fn token_comes_from_env_then_file_and_never_shows_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slack-token");
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(f, "  {SECRET}-from-file  ").unwrap();
    drop(f);

    // SAFETY: this binary runs a single test, so no other thread reads the environment.
    unsafe { std::env::remove_var(VAR) };
    let t = SlackConfig::token_from_env_or_file(VAR, Some(&file)).unwrap();
    assert_eq!(
        t.expose_secret(),
        format!("{SECRET}-from-file"),
        "trimmed file contents"
    );

    unsafe { std::env::set_var(VAR, format!("{SECRET}-from-env\n")) };
    let t = SlackConfig::token_from_env_or_file(VAR, Some(&file)).unwrap();
    assert_eq!(
        t.expose_secret(),
        format!("{SECRET}-from-env"),
        "env wins over file"
    );
    assert!(!format!("{t:?}").contains("SECRETVALUE"));

    // An empty variable is "unset", not an empty token.
    unsafe { std::env::set_var(VAR, "   ") };
    let t = SlackConfig::token_from_env_or_file(VAR, Some(&file)).unwrap();
    assert_eq!(t.expose_secret(), format!("{SECRET}-from-file"));

    unsafe { std::env::remove_var(VAR) };
    let missing = dir.path().join("nope");
    let err = SlackConfig::token_from_env_or_file(VAR, Some(&missing)).unwrap_err();
    assert!(matches!(err, AlertError::TokenMissing { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(VAR) && text.contains("nope"), "{text}");

    let err = SlackConfig::token_from_env_or_file(VAR, None).unwrap_err();
    assert!(err.to_string().contains(VAR), "{err}");

    std::fs::write(&file, "\n \n").unwrap();
    let err = SlackConfig::token_from_env_or_file(VAR, Some(&file)).unwrap_err();
    assert!(matches!(err, AlertError::TokenEmpty { .. }), "{err:?}");

    // A directory cannot be read as a file: unreadable, with the path in the message.
    let err = SlackConfig::token_from_env_or_file(VAR, Some(dir.path())).unwrap_err();
    assert!(
        matches!(err, AlertError::TokenFileUnreadable { .. }),
        "{err:?}"
    );

    // No error, in Display or Debug, carries the secret.
    std::fs::write(&file, SECRET).unwrap();
    for err in [
        SlackConfig::token_from_env_or_file(VAR, Some(&missing)).unwrap_err(),
        SlackConfig::token_from_env_or_file(VAR, Some(dir.path())).unwrap_err(),
    ] {
        assert!(!err.to_string().contains("SECRETVALUE"));
        assert!(!format!("{err:?}").contains("SECRETVALUE"));
    }
}
