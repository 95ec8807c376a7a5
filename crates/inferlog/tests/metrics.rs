//! `/metrics` of a real gateway: every family described, every drop reason exported at 0
//! before any traffic, and the whole-exchange, first-token and token histograms after a
//! streamed chat completion.

use crate::support::*;
use std::time::Duration;

/// The value of the sample `name{labels}` (labels in any order), if exported.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let wanted = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (metric == name && wanted).then(|| value.parse().ok()).flatten()
    })
}

/// Families that have a `# TYPE` line but no `# HELP` line.
fn undescribed(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .filter(|name| !page.lines().any(|l| l.starts_with(&format!("# HELP {name} "))))
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_are_described_exported_from_the_start_and_time_whole_streams() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gateway = Gateway::start(d, &format!("commit_interval_ms = 200\n{}", endpoint_toml("llm", &upstream.url(), "")));
    let http = client();
    let page = || http.get(gateway.url("/metrics")).send().unwrap().text().unwrap();

    // Before any traffic: every reason a record can be dropped for, at 0.
    let before = page();
    for reason in ["queue_full", "log_full", "low_disk_space", "log_write_error", "shutting_down", "undecodable"] {
        let labels = [("endpoint", "llm"), ("reason", reason)];
        assert_eq!(sample(&before, "inferlog_capture_dropped_total", &labels), Some(0.0), "{reason}: {before}");
    }
    assert!(before.matches("# TYPE ").count() >= 3, "{before}");
    assert_eq!(undescribed(&before), Vec::<String>::new(), "{before}");

    // A streamed chat completion, read to its end.
    let request = serde_json::json!({"model": "fake-model", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(gateway.url("/endpoints/llm/v1/chat/completions")).json(&request).send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().unwrap().contains("[DONE]"));
    assert_eq!(wait_rows(d, "llm_payload", 1, Duration::from_secs(30)), 1);

    let after = page();
    let llm = [("endpoint", "llm")];
    let value = |name: &str| sample(&after, name, &llm).unwrap_or_else(|| panic!("no {name}{{endpoint=\"llm\"}}: {after}"));
    for histogram in ["inferlog_exchange_duration_seconds", "inferlog_llm_time_to_first_token_seconds", "inferlog_upstream_duration_seconds"] {
        assert_eq!(value(&format!("{histogram}_count")), 1.0, "{histogram}");
    }
    assert_eq!((value("inferlog_llm_prompt_tokens_count"), value("inferlog_llm_prompt_tokens_sum")), (1.0, 12.0));
    assert_eq!((value("inferlog_llm_completion_tokens_count"), value("inferlog_llm_completion_tokens_sum")), (1.0, 5.0));
    // The upstream answers with headers before its first token, and the exchange ends after it.
    let upstream_headers = value("inferlog_upstream_duration_seconds_sum");
    let first_token = value("inferlog_llm_time_to_first_token_seconds_sum");
    let whole = value("inferlog_exchange_duration_seconds_sum");
    assert!(upstream_headers <= first_token && first_token <= whole, "{upstream_headers} {first_token} {whole}");
    assert!(sample(&after, "inferlog_exchange_duration_seconds_bucket", &[("endpoint", "llm"), ("le", "+Inf")]) == Some(1.0), "a histogram, with buckets: {after}");
    assert_eq!(undescribed(&after), Vec::<String>::new(), "{after}");
}
