//! Feedback from Slack: requests signed like Slack signs them (HMAC-SHA256 with the signing secret) are
//! accepted; a wrong signature, a missing header or a timestamp outside five minutes is refused; the click is
//! read from the form-encoded payload; the message update marks the incident and keeps every other block.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use serde_json::json;
use sha2::Sha256;
use snowpatrol_alert::{
    Digest, DigestIncident, FEEDBACK_ACTION_ID, FeedbackError, acknowledged_blocks, digest_message,
    parse_click, verify_request,
};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn sign(secret: &str, ts: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn click_body(value: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": "U123", "username": "ana" },
        "response_url": "http://127.0.0.1:9/response",
        "actions": [{ "action_id": FEEDBACK_ACTION_ID, "type": "overflow", "selected_option": { "value": value } }],
        "message": { "text": "digest", "blocks": [
            { "type": "section", "block_id": "incident:7", "text": { "type": "mrkdwn", "text": "• *A.WH* · +5 credits" },
              "accessory": { "type": "overflow", "action_id": FEEDBACK_ACTION_ID, "options": [] } },
            { "type": "section", "block_id": "incident:8", "text": { "type": "mrkdwn", "text": "• *A.OTHER*" },
              "accessory": { "type": "overflow", "action_id": FEEDBACK_ACTION_ID, "options": [] } }
        ]}
    });
    form_encode(&payload.to_string())
}

fn form_encode(payload: &str) -> String {
    let mut out = String::from("payload=");
    for b in payload.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[test]
fn a_request_signed_with_the_secret_is_accepted_and_anything_else_refused() {
    let secret = SecretString::from(SECRET);
    let body = click_body("ack:7:planned");
    let ts = now().to_string();
    let good = sign(SECRET, &ts, &body);
    assert_eq!(
        verify_request(&secret, Some(&ts), Some(&good), &body),
        Ok(())
    );

    let refused = |ts: &str, sig: Option<&str>, body: &str| {
        matches!(
            verify_request(&secret, Some(ts), sig, body),
            Err(FeedbackError::Unauthorized(_))
        )
    };
    // Another secret, a changed body, a missing signature, a changed timestamp.
    assert!(refused(
        &ts,
        Some(&sign("another-secret", &ts, &body)),
        &body
    ));
    assert!(refused(&ts, Some(&good), &click_body("ack:8:planned")));
    assert!(refused(&ts, None, &body));
    assert!(refused(&(now() + 1).to_string(), Some(&good), &body));
    // A replay: correctly signed, but six minutes old (or from the future).
    for skew in [-360, 360] {
        let old = (now() + skew).to_string();
        assert!(
            refused(&old, Some(&sign(SECRET, &old, &body)), &body),
            "skew {skew}"
        );
    }
    // An empty secret never verifies anything.
    assert!(matches!(
        verify_request(
            &SecretString::from(""),
            Some(&ts),
            Some(&sign("", &ts, &body)),
            &body
        ),
        Err(FeedbackError::Unauthorized(_))
    ));
}

#[test]
fn the_click_is_read_from_the_payload_and_bad_ones_are_refused() {
    let c = parse_click(&click_body("ack:7:false_positive")).unwrap();
    assert_eq!((c.incident_id, c.reason.as_str()), (7, "false_positive"));
    assert_eq!((c.user_id.as_str(), c.user_name.as_str()), ("U123", "ana"));
    assert_eq!(c.response_url, "http://127.0.0.1:9/response");
    for bad in [
        "ack:7:because",
        "ack:x:planned",
        "delete:7:planned",
        "ack:7",
    ] {
        let e = parse_click(&click_body(bad)).unwrap_err();
        assert!(matches!(e, FeedbackError::Malformed(_)), "{bad}: {e}");
    }
    let e = parse_click(&click_body("ack:7:because"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("false_positive, planned, expected"),
        "names the allowed reasons: {e}"
    );
    assert!(parse_click("payload=%7Bnot+json").is_err());
    assert!(parse_click("nothing=here").is_err());
}

#[test]
fn the_updated_message_marks_the_incident_and_keeps_the_rest() {
    let c = parse_click(&click_body("ack:7:planned")).unwrap();
    let blocks = acknowledged_blocks(c.message_blocks.as_ref().unwrap(), &c).unwrap();
    let b = blocks.as_array().unwrap();
    assert!(
        b[0].get("accessory").is_none(),
        "the menu is gone: {}",
        b[0]
    );
    let text = b[0]["text"]["text"].as_str().unwrap();
    assert!(text.starts_with("• *A.WH* · +5 credits"), "{text}");
    assert!(
        text.contains("acknowledged as *Planned* by <@U123>"),
        "{text}"
    );
    assert_eq!(
        b[1],
        c.message_blocks.as_ref().unwrap()[1],
        "other incidents unchanged"
    );
    let mut other = c.clone();
    other.incident_id = 99;
    assert!(acknowledged_blocks(c.message_blocks.as_ref().unwrap(), &other).is_none());
}

#[test]
fn the_digest_offers_the_menu_on_each_listed_incident() {
    let d = Digest {
        currency: None,
        run_id: "5".into(),
        generated_at: chrono::Utc::now(),
        price_per_credit: None,
        incidents: vec![DigestIncident {
            excess_cost: None,
            root_cause: None,
            incident_id: 41,
            account_name: "A".into(),
            warehouse_name: "WH".into(),
            first_day: chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
            last_day: chrono::NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
            days: 1,
            excess_credits: 12.0,
            expected_credits: Some(10.0),
            why: "why".into(),
        }],
        already_announced: 0,
        acknowledged: 0,
        held_back: 0,
        report_path: None,
        feedback: true,
    };
    let blocks = digest_message(&d).unwrap().blocks_json();
    let section = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["block_id"] == "incident:41")
        .expect("the incident's own section");
    assert_eq!(section["accessory"]["type"], "overflow");
    assert_eq!(section["accessory"]["action_id"], FEEDBACK_ACTION_ID);
    let values: Vec<&str> = section["accessory"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        values,
        ["ack:41:false_positive", "ack:41:planned", "ack:41:expected"]
    );
}
