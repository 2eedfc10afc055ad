//! Passive health and the circuit breaker of one node.
//!
//! Every call's outcome feeds exponentially weighted averages (latency, time
//! to first token, decode speed, error rate). Consecutive failures open the
//! circuit: the node leaves routing for a cool-down, then one probe request is
//! let through (half-open); its success closes the circuit, its failure opens
//! it again. Time is passed in, so the state machine is tested without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Tuning of the breaker and the averages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HealthConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit keeps the node out before a probe.
    pub open_for: Duration,
    /// Weight of the newest sample in the averages (0..1].
    pub ewma_alpha: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_secs(5),
            ewma_alpha: 0.2,
        }
    }
}

/// What one successful call measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// Whole call, from send to last byte.
    pub latency: Duration,
    /// Time to the first token, when streamed.
    pub ttft: Option<Duration>,
    /// Decode speed over the call, when it produced tokens.
    pub tokens_per_s: Option<f64>,
}

/// Whether a call may go to the node now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Circuit closed: go ahead.
    Allowed,
    /// Circuit half-open: this call is the probe.
    Probe,
    /// Circuit open: do not call.
    Denied,
}

/// A point-in-time view of a node's health, for routing, status and metrics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthSnapshot {
    /// "closed", "open" or "half_open".
    pub circuit: &'static str,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Average whole-call latency, ms.
    pub latency_ms: Option<f64>,
    /// Average time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Average decode speed.
    pub tokens_per_s: Option<f64>,
    /// Recent share of failed calls.
    pub error_rate: f64,
    /// Whether routing may send the node traffic now.
    pub available: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Circuit {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_since: Instant },
}

#[derive(Debug)]
struct Inner {
    circuit: Circuit,
    consecutive_failures: u32,
    latency_ms: Option<f64>,
    ttft_ms: Option<f64>,
    tokens_per_s: Option<f64>,
    error_rate: f64,
}

/// The health of one node; shared by every request that calls it.
#[derive(Debug)]
pub struct NodeHealth {
    cfg: HealthConfig,
    inner: Mutex<Inner>,
}

impl NodeHealth {
    /// A node with no history: circuit closed, nothing measured.
    pub fn new(cfg: HealthConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner {
                circuit: Circuit::Closed,
                consecutive_failures: 0,
                latency_ms: None,
                ttft_ms: None,
                tokens_per_s: None,
                error_rate: 0.0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is plain numbers; a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to call the node at `now`; a half-open circuit admits one probe at
    /// a time (a probe abandoned for longer than the cool-down is replaced).
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.lock();
        match s.circuit {
            Circuit::Closed => Admission::Allowed,
            Circuit::Open { until } if now < until => Admission::Denied,
            Circuit::Open { .. } => {
                s.circuit = Circuit::HalfOpen { probe_since: now };
                Admission::Probe
            }
            Circuit::HalfOpen { probe_since }
                if now.duration_since(probe_since) >= self.cfg.open_for =>
            {
                s.circuit = Circuit::HalfOpen { probe_since: now };
                Admission::Probe
            }
            Circuit::HalfOpen { .. } => Admission::Denied,
        }
    }

    /// Whether routing should consider the node at `now` (closed, or due a probe).
    pub fn is_available(&self, now: Instant) -> bool {
        let s = self.lock();
        match s.circuit {
            Circuit::Closed => true,
            Circuit::Open { until } => now >= until,
            Circuit::HalfOpen { probe_since } => {
                now.duration_since(probe_since) >= self.cfg.open_for
            }
        }
    }

    /// Records a successful call: closes the circuit and updates the averages.
    pub fn record_success(&self, obs: Observation) {
        let a = self.cfg.ewma_alpha;
        let mut s = self.lock();
        s.circuit = Circuit::Closed;
        s.consecutive_failures = 0;
        s.error_rate = ewma(Some(s.error_rate), 0.0, a);
        s.latency_ms = Some(ewma(s.latency_ms, obs.latency.as_secs_f64() * 1e3, a));
        if let Some(t) = obs.ttft {
            s.ttft_ms = Some(ewma(s.ttft_ms, t.as_secs_f64() * 1e3, a));
        }
        if let Some(tps) = obs.tokens_per_s.filter(|v| v.is_finite() && *v > 0.0) {
            s.tokens_per_s = Some(ewma(s.tokens_per_s, tps, a));
        }
    }

    /// Records a failed call at `now`; may open the circuit.
    pub fn record_failure(&self, now: Instant) {
        let a = self.cfg.ewma_alpha;
        let mut s = self.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        s.error_rate = ewma(Some(s.error_rate), 1.0, a);
        let trips = match s.circuit {
            Circuit::Closed => s.consecutive_failures >= self.cfg.failure_threshold,
            // A failed probe, or a failure racing the cool-down, re-opens at once.
            Circuit::HalfOpen { .. } | Circuit::Open { .. } => true,
        };
        if trips {
            s.circuit = Circuit::Open {
                until: now + self.cfg.open_for,
            };
        }
    }

    /// The node's health now.
    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let available = self.is_available(now);
        let s = self.lock();
        HealthSnapshot {
            circuit: match s.circuit {
                Circuit::Closed => "closed",
                Circuit::Open { .. } => "open",
                Circuit::HalfOpen { .. } => "half_open",
            },
            consecutive_failures: s.consecutive_failures,
            latency_ms: s.latency_ms,
            ttft_ms: s.ttft_ms,
            tokens_per_s: s.tokens_per_s,
            error_rate: s.error_rate,
            available,
        }
    }
}

fn ewma(prev: Option<f64>, sample: f64, alpha: f64) -> f64 {
    match prev {
        Some(p) => p + alpha * (sample - p),
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> NodeHealth {
        NodeHealth::new(HealthConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(5),
            ewma_alpha: 0.5,
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let h = health();
        let t0 = Instant::now();
        h.record_failure(t0);
        h.record_failure(t0);
        assert_eq!(h.admit(t0), Admission::Allowed);
        h.record_success(Observation::default());
        h.record_failure(t0);
        h.record_failure(t0);
        assert_eq!(
            h.admit(t0),
            Admission::Allowed,
            "a success resets the count"
        );
        h.record_failure(t0);
        assert_eq!(h.admit(t0), Admission::Denied);
        assert!(!h.is_available(t0));
        assert_eq!(h.snapshot(t0).circuit, "open");
    }

    #[test]
    fn half_open_admits_one_probe_and_its_outcome_decides() {
        let h = health();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(t0);
        }
        let later = t0 + Duration::from_secs(5);
        assert!(h.is_available(later));
        assert_eq!(h.admit(later), Admission::Probe);
        assert_eq!(
            h.admit(later),
            Admission::Denied,
            "only one probe at a time"
        );
        h.record_failure(later);
        assert_eq!(
            h.admit(later + Duration::from_secs(1)),
            Admission::Denied,
            "failed probe re-opens"
        );
        let again = later + Duration::from_secs(5);
        assert_eq!(h.admit(again), Admission::Probe);
        h.record_success(Observation::default());
        assert_eq!(h.admit(again), Admission::Allowed);
        assert_eq!(h.snapshot(again).circuit, "closed");
    }

    #[test]
    fn abandoned_probe_is_replaced_after_cool_down() {
        let h = health();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(h.admit(t1), Admission::Probe);
        assert_eq!(h.admit(t1 + Duration::from_secs(4)), Admission::Denied);
        assert_eq!(h.admit(t1 + Duration::from_secs(5)), Admission::Probe);
    }

    #[test]
    fn averages_follow_samples() {
        let h = health();
        let t0 = Instant::now();
        h.record_success(Observation {
            latency: Duration::from_millis(100),
            ttft: Some(Duration::from_millis(10)),
            tokens_per_s: Some(50.0),
        });
        h.record_success(Observation {
            latency: Duration::from_millis(200),
            ttft: None,
            tokens_per_s: Some(f64::NAN),
        });
        let s = h.snapshot(t0);
        assert_eq!(s.latency_ms, Some(150.0));
        assert_eq!(s.ttft_ms, Some(10.0));
        assert_eq!(s.tokens_per_s, Some(50.0), "NaN samples are ignored");
        h.record_failure(t0);
        assert_eq!(h.snapshot(t0).error_rate, 0.5);
    }
}
