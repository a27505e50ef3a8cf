//! The run digest: one message for any number of incidents, within Slack's limits, ranked by excess, and the
//! report's wording fixes (no repeated date, no "everything was normal" after acknowledgements).

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{date, one_anomaly_report, report};
use serde_json::Value;
use snowpatrol_alert::{
    DIGEST_TOP_INCIDENTS, Digest, DigestIncident, digest_message, render_markdown, report_message,
};

fn incident(i: usize, excess: f64) -> DigestIncident {
    let first = date("2025-06-20") + Duration::days((i % 5) as i64);
    DigestIncident {
        // Every other incident with a long root cause: the limits must hold with it.
        excess_cost: None,
        root_cause: (i % 2 == 1).then(|| {
            "78 % of the excess (39.0 of 50.0 credits) came from 3 statements run 12 times by DBT_PROD \
             (query tag `dbt:orders_backfill`); the warehouse was resized to X-Large at 02:14 UTC by BOB (SYSADMIN); "
                .repeat(6)
        }),
        incident_id: i as i64 + 1,
        account_name: format!("ACCOUNT_{}", i % 3),
        warehouse_name: format!("WH_{i:05}"),
        first_day: first,
        last_day: first + Duration::days((i % 2) as i64),
        days: 1 + (i % 2) as u32,
        excess_credits: excess,
        expected_credits: Some(10.0),
        why: format!(
            "{first}: {:.2} credits vs 10.00 expected (+{excess:.2}); score 6.4 >= threshold 3.0; {}",
            10.0 + excess,
            "peak 58.67 credits/h vs its cap of 33.60 (resize or scale-out?) ".repeat(8)
        ),
    }
}

fn digest(n: usize) -> Digest {
    Digest {
        currency: None,
        run_id: "42".into(),
        generated_at: Utc.with_ymd_and_hms(2025, 6, 29, 6, 30, 0).unwrap(),
        price_per_credit: Some(3.0),
        // Excess grows with the index, so the largest come last in input order.
        incidents: (0..n).map(|i| incident(i, 5.0 + i as f64)).collect(),
        already_announced: 4,
        acknowledged: 2,
        held_back: 0,
        report_path: Some("/var/lib/snowpatrol/reports/run-42/report.md".into()),
        feedback: true,
    }
}

fn blocks(d: &Digest) -> (String, Vec<Value>) {
    let msg = digest_message(d).expect("a message");
    let json = msg.blocks_json();
    (msg.text, json.as_array().unwrap().clone())
}

/// Slack's documented limits: at most 50 blocks, a header of at most 150 characters, a section text of at most
/// 3,000, a context element of at most 3,000 (what `invalid_blocks` refuses).
fn assert_within_slack_limits(blocks: &[Value]) {
    assert!(blocks.len() <= 50, "{} blocks", blocks.len());
    for b in blocks {
        match b["type"].as_str().unwrap() {
            "header" => {
                let t = b["text"]["text"].as_str().unwrap();
                assert!(t.chars().count() <= 150, "header {t}");
                assert_eq!(b["text"]["type"], "plain_text");
            }
            "section" => {
                let t = b["text"]["text"].as_str().unwrap();
                assert!(
                    t.chars().count() <= 3000,
                    "section of {}",
                    t.chars().count()
                );
            }
            "context" => {
                for e in b["elements"].as_array().unwrap() {
                    assert!(e["text"].as_str().unwrap().chars().count() <= 3000);
                }
            }
            other => panic!("unexpected block {other}"),
        }
    }
}

#[test]
fn three_hundred_incidents_make_one_message_within_slacks_limits() {
    let d = digest(300);
    let (text, blocks) = blocks(&d);
    assert_within_slack_limits(&blocks);
    assert!(text.chars().count() <= 3000);
    let all = serde_json::to_string(&blocks).unwrap();
    // Totals: 300 incidents, sum of 5..=304 = 46,350 credits, cost x3.
    let header = blocks[0]["text"]["text"].as_str().unwrap();
    assert_eq!(
        header,
        "Snowflake spend: 300 new cost incidents · +46,350.00 credits, cost 139,050.00"
    );
    // The top incidents by excess are listed, the largest first; the rest are counted with their excess.
    let first = all
        .find("WH_00299")
        .expect("the largest incident is listed");
    let second = all.find("WH_00298").expect("the second largest is listed");
    assert!(first < second, "ranked by excess");
    let shown = (0..300)
        .filter(|i| all.contains(&format!("*ACCOUNT_{}.WH_{i:05}*", i % 3)))
        .count();
    assert_eq!(shown, DIGEST_TOP_INCIDENTS);
    let rest: f64 = (0..300 - DIGEST_TOP_INCIDENTS)
        .map(|i| 5.0 + i as f64)
        .sum();
    assert!(
        all.contains(&format!(
            "…and {} more incidents, +{} credits",
            300 - DIGEST_TOP_INCIDENTS,
            format_thousands(rest)
        )),
        "{all}"
    );
    assert!(all.contains("report.md"), "points at the full report");
    // What was not repeated, and why.
    assert!(
        all.contains("4 incidents announced before, not repeated"),
        "{all}"
    );
    assert!(
        all.contains("2 incidents acknowledged, not repeated"),
        "{all}"
    );
    // The why line does not repeat the date shown beside it.
    assert!(
        !all.contains("2025-06-24 · *+304.00 credits*, +3040%, cost 912.00\\n      _2025-06-24:"),
        "{all}"
    );
}

fn format_thousands(v: f64) -> String {
    let s = format!("{v:.2}");
    let (i, f) = s.split_once('.').unwrap();
    let mut out = String::new();
    for (k, c) in i.chars().enumerate() {
        if k > 0 && (i.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}.{f}")
}

#[test]
fn every_size_of_digest_stays_within_the_limits() {
    for n in [1, 2, 14, 15, 16, 49, 50, 51, 1000] {
        let (_, blocks) = blocks(&digest(n));
        assert_within_slack_limits(&blocks);
    }
    // Names that need escaping in mrkdwn, and huge ones.
    let mut d = digest(3);
    d.incidents[0].warehouse_name = "A<B>&C".repeat(200);
    d.price_per_credit = None;
    d.feedback = false;
    let (text, blocks) = blocks(&d);
    assert_within_slack_limits(&blocks);
    let all = serde_json::to_string(&blocks).unwrap();
    assert!(all.contains("A&lt;B&gt;&amp;C"), "escaped");
    assert!(!all.contains(", cost "), "no money without a price: {all}");
    assert!(text.contains("3 new cost incidents"));
    assert!(
        !all.contains("overflow"),
        "no feedback menu unless configured: {all}"
    );
}

/// Money at each account's own price, in the contract currency: an incident's own cost wins over the digest's
/// price, the totals add the costs up, and the root cause is a line of its own.
#[test]
fn money_is_per_account_and_in_the_contract_currency() {
    let mut d = digest(2);
    d.currency = Some("EUR".into());
    d.incidents[0].excess_cost = Some(14.0); // 5 credits at 2.80
    let (_, blocks) = blocks(&d);
    assert_within_slack_limits(&blocks);
    let all = serde_json::to_string(&blocks).unwrap();
    // 14.00 + 6 credits at the digest's 3.00 = 32.00.
    assert!(all.contains("+11.00 credits, cost EUR 32.00"), "{all}");
    assert!(
        all.contains("*+5.00 credits*, +50%, cost EUR 14.00"),
        "{all}"
    );
    assert!(
        all.contains("*+6.00 credits*, +60%, cost EUR 18.00"),
        "{all}"
    );
    assert!(
        all.contains("\\n      Root cause: 78 % of the excess"),
        "{all}"
    );
    let reply = snowpatrol_alert::reply_text(&d.incidents[1], &d);
    assert!(
        reply.contains("cost EUR 18.00") && reply.contains("*Root cause:* 78 %"),
        "{reply}"
    );
}

#[test]
fn nothing_new_means_no_message() {
    let mut d = digest(0);
    d.already_announced = 10;
    assert!(digest_message(&d).is_none());
}

#[test]
fn a_single_day_incident_reads_naturally() {
    let (text, blocks) = blocks(&digest(1));
    let all = serde_json::to_string(&blocks).unwrap();
    assert!(all.contains("1 new cost incident ·"), "{all}");
    assert!(all.contains("*1 new incident* in 1 warehouse"), "{all}");
    assert!(
        all.contains("2025-06-20 · *+5.00 credits*, +50%, cost 15.00"),
        "{all}"
    );
    assert!(
        text.contains("ACCOUNT_0.WH_00000 2025-06-20 +5.00 credits"),
        "{text}"
    );
}

#[test]
fn the_report_states_comparisons_neutrally_and_does_not_repeat_the_date() {
    let mut r = one_anomaly_report(None);
    for s in &mut r.sections {
        for a in &mut s.anomalies {
            // The default model's explanation starts with the date and flags high scores.
            a.explanation = format!(
                "{}: 50.29 credits vs 12.00 expected; score 6.4 >= threshold 1.5",
                a.date
            );
            a.score = 6.4013;
            a.threshold = 1.5;
        }
    }
    let md = render_markdown(&r);
    let day = r.sections[0].anomalies[0].date;
    assert!(md.contains(&format!("- {day}: 50.29 credits")), "{md}");
    assert!(!md.contains(&format!("{day}: {day}")), "{md}");
    let slack = serde_json::to_string(&report_message(&r).blocks_json()).unwrap();
    assert!(!slack.contains('≤'), "{slack}");
    assert!(slack.contains("score 6.4013 (threshold 1.5000)"), "{slack}");
    assert!(!slack.contains(&format!("_{day}: ")), "{slack}");
}

#[test]
fn the_report_lists_what_was_not_alerted_and_why() {
    let mut r = one_anomaly_report(None);
    r.acknowledged_incidents = 1;
    r.held_back = vec![snowpatrol_alert::HeldBack {
        warehouse: "ACME.BI_WH".into(),
        first_day: date("2025-03-10"),
        excess_credits: 4.1,
        reasons: vec!["route platform: excess 4.10 credits < min_excess_credits 10".into()],
    }];
    let md = render_markdown(&r);
    assert!(md.contains("## Not alerted"), "{md}");
    assert!(
        md.contains("- 1 acknowledged incident of the scored days: not repeated"),
        "{md}"
    );
    assert!(
        md.contains("- ACME.BI\\_WH from 2025-03-10, 4.10 excess credits: held back (route platform: excess 4.10 credits \\< min\\_excess\\_credits 10)"),
        "{md}"
    );
    r.acknowledged_incidents = 0;
    r.held_back.clear();
    assert!(!render_markdown(&r).contains("Not alerted"));
}

#[test]
fn a_report_with_everything_acknowledged_says_so() {
    let mut r = report(None, vec![]);
    r.acknowledged_incidents = 2;
    let md = render_markdown(&r);
    assert!(
        !md.contains("every scored warehouse-day was within its expected range"),
        "{md}"
    );
    assert!(
        md.contains("2 incidents of the scored days were acknowledged"),
        "{md}"
    );
    r.acknowledged_incidents = 0;
    assert!(
        render_markdown(&r).contains("every scored warehouse-day was within its expected range")
    );
}

/// Runs the official slack_sdk block models (scripts/validate_slack_messages.py) over `messages`.
fn slack_sdk_verdict(messages: &[serde_json::Value]) -> (bool, String) {
    let python = std::env::var("SNOWPATROL_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SNOWPATROL_TEST_PYTHON is not set: point it at a Python with slack_sdk \
             (scripts/test.sh creates .venv with it)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.json");
    std::fs::write(&file, serde_json::to_vec(messages).unwrap()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/validate_slack_messages.py"
    );
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .expect("run the slack_sdk validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn as_json(m: &snowpatrol_alert::SlackMessage) -> serde_json::Value {
    serde_json::json!({ "text": m.text, "blocks": m.blocks_json() })
}

#[test]
fn every_message_passes_the_official_slack_sdk_block_models() {
    let mut messages = Vec::new();
    for n in [1, 2, 15, 16, 51, 300, 1000] {
        for price in [None, Some(3.0)] {
            let mut d = digest(n);
            d.price_per_credit = price;
            messages.push(as_json(&digest_message(&d).unwrap()));
        }
    }
    let mut odd = digest(20);
    odd.incidents[3].warehouse_name = "\"Quoted <wh> & *bold* _x_ `tick`\"".repeat(60);
    odd.incidents[4].why = "🙂 ünïcödé ".repeat(400);
    odd.report_path = Some("/tmp/`odd` path".repeat(100));
    messages.push(as_json(&digest_message(&odd).unwrap()));
    messages.push(as_json(&report_message(&one_anomaly_report(Some(3.0)))));
    messages.push(as_json(&snowpatrol_alert::failure_message(
        "predict",
        "score_warehouse",
        Some("ACME.ETL_WH"),
        "17",
        &"connection reset ```by peer``` ".repeat(300),
    )));
    let count = messages.len();
    let (ok, out) = slack_sdk_verdict(&messages);
    assert!(ok, "slack_sdk refused: {out}");
    assert!(out.contains(&format!("{count} messages valid")), "{out}");

    // The validator is not a rubber stamp: Slack's limits, broken on purpose, are refused.
    let broken = vec![
        serde_json::json!({ "text": "x", "blocks": [{ "type": "header", "text": { "type": "plain_text", "text": "h".repeat(151) } }] }),
        serde_json::json!({ "text": "x", "blocks": vec![serde_json::json!({ "type": "divider" }); 51] }),
    ];
    let (ok, out) = slack_sdk_verdict(&broken);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot exceed 150 characters"), "{out}");
    assert!(out.contains("51 blocks"), "{out}");
}
