//! `deploy/prometheus/pgflow-alerts.yml` matches what it watches: the
//! gauges the services export and the dashboard's default thresholds.

use std::path::PathBuf;

use pgflow_core::dashboard::alerts::{DEFAULT_DLQ_MAX, DEFAULT_LATENCY};
use pgflow_core::ops::prometheus::{DLQ_MESSAGES, QUEUE_OLDEST_AGE_SECONDS};
use yaml_rust2::YamlLoader;

#[test]
fn alert_rules_watch_exported_gauges_with_the_dashboards_thresholds() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/pgflow-alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let rules = doc["groups"][0]["rules"].as_vec().expect("groups[0].rules");
    let rule = |name: &str| {
        rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no alert {name} in {}", path.display()))
    };
    let expected = [
        ("DlqTooLarge", DLQ_MESSAGES, DEFAULT_DLQ_MAX as f64),
        (
            "QueueLatencyHigh",
            QUEUE_OLDEST_AGE_SECONDS,
            DEFAULT_LATENCY.as_secs_f64(),
        ),
    ];
    for (name, metric, threshold) in expected {
        let r = rule(name);
        let expr = r["expr"].as_str().unwrap();
        assert!(expr.contains(&format!("({metric})")), "{name}: {expr}");
        assert!(expr.contains("by (queue)"), "{name}: {expr}");
        let bound: f64 = expr.rsplit('>').next().unwrap().trim().parse().unwrap();
        assert_eq!(bound, threshold, "{name}: {expr}");
        assert!(r["for"].as_str().is_some(), "{name}: no `for`");
        assert!(
            r["labels"]["severity"].as_str().is_some(),
            "{name}: no severity"
        );
        assert!(
            r["annotations"]["summary"].as_str().is_some(),
            "{name}: no summary"
        );
    }
    assert_eq!(rules.len(), expected.len());
}
