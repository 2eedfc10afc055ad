//! The load generator against an in-process upstream.

use std::time::Duration;

use serde_json::json;
use tollgate_loadtest::load::{loopback_uri, run, LoadConfig};
use tollgate_loadtest::upstream::{Config, Upstream};

async fn upstream(fault: &str) -> (Upstream, http::Uri) {
    let up = Upstream::start(Config::instant(&["instant-1"]))
        .await
        .expect("start");
    up.settings()
        .apply(&serde_json::from_value(json!({"fault": fault})).expect("patch"))
        .expect("apply");
    let url = loopback_uri(&format!("http://{}/v1/chat/completions", up.addr())).expect("url");
    (up, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_rate_gets_every_answer() {
    let (up, url) = upstream("none").await;
    let mut config = LoadConfig::new(url, 200.0, Duration::from_secs(1));
    config.warmup = Duration::from_millis(200);
    let report = run(config).await.expect("run");
    assert_eq!(report.count, 200);
    assert_eq!(report.ok, 200, "{:?}", report.errors_by_kind);
    assert!((report.rps_achieved - 200.0).abs() < 1.0);
    assert!(report.latency.is_some() && report.ttfb.is_none());
    // The warm-up requests reached the server too, but were not measured.
    assert_eq!(up.view().requests, 240);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_report_time_to_first_byte() {
    let (_up, url) = upstream("none").await;
    let mut config = LoadConfig::new(url, 100.0, Duration::from_millis(500));
    config.stream = true;
    let report = run(config).await.expect("run");
    assert_eq!(
        (report.count, report.ok),
        (50, 50),
        "{:?}",
        report.errors_by_kind
    );
    let (ttfb, total) = (report.ttfb.expect("ttfb"), report.latency.expect("latency"));
    assert!(ttfb.p50 <= total.p50);
    let v = report.to_json();
    assert!(v["ttfb_p99_ms"].is_number() && v["errors"] == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn die_mid_stream_is_an_error() {
    let (_up, url) = upstream("die-mid-stream").await;
    let mut config = LoadConfig::new(url, 50.0, Duration::from_millis(400));
    config.stream = true;
    let report = run(config).await.expect("run");
    assert_eq!(report.ok, 0);
    assert_eq!(report.errors_by_kind.get("body"), Some(&20), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_counted_by_kind() {
    let (_up, url) = upstream("500").await;
    let report = run(LoadConfig::new(
        url.clone(),
        50.0,
        Duration::from_millis(200),
    ))
    .await
    .expect("run");
    assert_eq!(
        report.errors_by_kind.get("http_500"),
        Some(&10),
        "{report:?}"
    );

    let (_up, url) = upstream("refuse").await;
    let report = run(LoadConfig::new(url, 50.0, Duration::from_millis(200)))
        .await
        .expect("run");
    assert_eq!(
        report.errors_by_kind.get("connection"),
        Some(&10),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_bounded_by_drain_and_in_flight_cap() {
    let (_up, url) = upstream("hang").await;
    let mut config = LoadConfig::new(url, 100.0, Duration::from_millis(300));
    config.drain = Duration::from_millis(300);
    config.max_in_flight = 10;
    let started = std::time::Instant::now();
    let report = run(config).await.expect("run");
    // 300 ms of schedule + 1 s late limit + 300 ms drain, plus slack.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.count, 30);
    assert_eq!(
        report.errors_by_kind.get("timeout"),
        Some(&10),
        "{report:?}"
    );
    assert_eq!(
        report.errors_by_kind.get("overload"),
        Some(&20),
        "{report:?}"
    );
}
