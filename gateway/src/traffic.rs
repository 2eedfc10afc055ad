//! Live traffic for the dashboard: per-second counts of chat requests, their
//! errors and their latency to the response head, over the last ten minutes.
//!
//! Latency is measured to the response head, so a stream counts its time to
//! first byte; the histograms in `/metrics` carry the full distributions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

use crate::app::{now_ms, App};

/// Seconds of history kept.
pub const KEEP_S: u64 = 600;

/// One second of traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Second {
    /// Unix second it covers.
    pub t: u64,
    /// Requests answered in it.
    pub requests: u64,
    /// Of those, answered with a 4xx or 5xx.
    pub errors: u64,
    /// Mean latency to the response head, ms (0 without requests).
    pub mean_latency_ms: f64,
    /// Highest latency to the response head, ms.
    pub max_latency_ms: f64,
}

/// The last [`KEEP_S`] seconds of chat traffic.
#[derive(Default)]
pub struct Traffic {
    seconds: Mutex<VecDeque<Second>>,
}

impl Traffic {
    /// Counts one answered request.
    pub fn record(&self, at_s: u64, error: bool, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        let mut q = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        if q.back().is_none_or(|s| s.t < at_s) {
            q.push_back(Second {
                t: at_s,
                ..Second::default()
            });
        }
        while q.front().is_some_and(|s| s.t + KEEP_S <= at_s) {
            q.pop_front();
        }
        // A request finishing in an earlier second than the newest (clock
        // granularity between threads) is counted in the newest.
        if let Some(s) = q.back_mut() {
            let n = s.requests as f64;
            s.mean_latency_ms = (s.mean_latency_ms * n + ms) / (n + 1.0);
            s.max_latency_ms = s.max_latency_ms.max(ms);
            s.requests += 1;
            s.errors += u64::from(error);
        }
    }

    /// The last `seconds` seconds up to `now_s`, one entry per second, zeros where nothing happened.
    pub fn series(&self, now_s: u64, seconds: u64) -> Vec<Second> {
        let seconds = seconds.clamp(1, KEEP_S);
        let q = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        let first = now_s + 1 - seconds.min(now_s + 1);
        (first..=now_s)
            .map(|t| {
                q.iter().find(|s| s.t == t).copied().unwrap_or(Second {
                    t,
                    ..Second::default()
                })
            })
            .collect()
    }
}

/// Middleware: counts every chat request with its status and latency to the response head.
pub async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    app.traffic.record(
        now_ms() / 1000,
        status.is_client_error() || status.is_server_error(),
        started.elapsed(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_count_requests_errors_and_latency() {
        let t = Traffic::default();
        t.record(100, false, Duration::from_millis(10));
        t.record(100, true, Duration::from_millis(30));
        t.record(102, false, Duration::from_millis(5));
        let s = t.series(103, 4);
        assert_eq!(
            s.iter().map(|x| x.t).collect::<Vec<_>>(),
            [100, 101, 102, 103]
        );
        assert_eq!((s[0].requests, s[0].errors), (2, 1));
        assert!((s[0].mean_latency_ms - 20.0).abs() < 1e-9);
        assert!((s[0].max_latency_ms - 30.0).abs() < 1e-9);
        assert_eq!(
            s[1],
            Second {
                t: 101,
                ..Second::default()
            }
        );
        assert_eq!(s[2].requests, 1);
    }

    #[test]
    fn history_older_than_the_window_is_dropped() {
        let t = Traffic::default();
        t.record(1, false, Duration::ZERO);
        t.record(1 + KEEP_S, false, Duration::ZERO);
        assert_eq!(t.seconds.lock().map(|q| q.len()).unwrap_or(0), 1);
        assert_eq!(t.series(1 + KEEP_S, KEEP_S)[0].requests, 0);
    }
}
