//! Run-time settings of the instant upstream: fault, pacing and counters.
//!
//! Held in atomics so that the hot path reads them without a lock and `/control`
//! can flip them while requests are in flight.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

/// A misbehaviour the upstream can be told to show on `/v1/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Close the connection before any response byte.
    Refuse,
    /// HTTP 500 with an OpenAI `server_error` body.
    ServerError,
    /// HTTP 429 with `retry-after`.
    RateLimit,
    /// Never answer chat completions (the connection stays open).
    Hang,
    /// Send the start of the answer, then abort the connection.
    DieMidStream,
    /// HTTP 200 whose body is not JSON.
    BadJson,
}

const FAULTS: [(Fault, &str); 7] = [
    (Fault::None, "none"),
    (Fault::Refuse, "refuse"),
    (Fault::ServerError, "500"),
    (Fault::RateLimit, "429"),
    (Fault::Hang, "hang"),
    (Fault::DieMidStream, "die-mid-stream"),
    (Fault::BadJson, "bad-json"),
];

impl Fault {
    /// The name used on the command line and in `/control`.
    pub fn name(self) -> &'static str {
        FAULTS[self as usize].1
    }

    fn from_index(index: u8) -> Fault {
        FAULTS.get(index as usize).map_or(Fault::None, |(f, _)| *f)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FAULTS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = FAULTS.iter().map(|(_, n)| *n).collect();
                format!("unknown fault {s:?}, expected one of {}", names.join("|"))
            })
    }
}

/// The live, mutable settings shared by all connections.
#[derive(Debug, Default)]
pub struct Settings {
    fault: AtomicU8,
    latency_ms: AtomicU64,
    // f64 bits, so fractional rates such as 0.5 tokens/s work.
    tokens_per_s: AtomicU64,
    completion_tokens: AtomicU64,
    requests: AtomicU64,
    served: AtomicU64,
}

/// A consistent-enough copy of the settings for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Current fault.
    pub fault: Fault,
    /// Delay before response headers.
    pub latency_ms: u64,
    /// Streaming pace; 0 means as fast as possible.
    pub tokens_per_s: f64,
    /// Tokens generated when the request does not cap them lower.
    pub completion_tokens: u64,
}

/// Fields of a `POST /control` body; absent fields stay unchanged.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPatch {
    /// New fault name.
    pub fault: Option<String>,
    /// New header delay.
    pub latency_ms: Option<u64>,
    /// New streaming pace.
    pub tokens_per_s: Option<f64>,
    /// New default completion length.
    pub completion_tokens: Option<u64>,
    /// Zero the request counters.
    #[serde(default)]
    pub reset_counters: bool,
}

/// What `GET /control` answers.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ControlView {
    /// `--node-name`, empty when not given.
    pub node_name: String,
    /// Models served.
    pub models: Vec<String>,
    /// Current fault name.
    pub fault: String,
    /// Delay before response headers.
    pub latency_ms: u64,
    /// Streaming pace; 0 means as fast as possible.
    pub tokens_per_s: f64,
    /// Default completion length.
    pub completion_tokens: u64,
    /// Chat completion requests received (refused ones excluded).
    pub requests: u64,
    /// Chat completion requests answered with a complete 200.
    pub served: u64,
}

impl Settings {
    /// Settings starting from the given values, counters at zero.
    pub fn new(initial: Snapshot) -> Settings {
        let s = Settings::default();
        s.store(initial);
        s
    }

    /// Reads the current settings.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            fault: Fault::from_index(self.fault.load(Ordering::Relaxed)),
            latency_ms: self.latency_ms.load(Ordering::Relaxed),
            tokens_per_s: f64::from_bits(self.tokens_per_s.load(Ordering::Relaxed)),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
        }
    }

    fn store(&self, s: Snapshot) {
        self.fault.store(s.fault as u8, Ordering::Relaxed);
        self.latency_ms.store(s.latency_ms, Ordering::Relaxed);
        self.tokens_per_s
            .store(s.tokens_per_s.to_bits(), Ordering::Relaxed);
        self.completion_tokens
            .store(s.completion_tokens, Ordering::Relaxed);
    }

    /// Applies a control patch, validating it whole before changing anything.
    pub fn apply(&self, patch: &ControlPatch) -> Result<(), String> {
        let mut next = self.snapshot();
        if let Some(name) = &patch.fault {
            next.fault = name.parse()?;
        }
        if let Some(ms) = patch.latency_ms {
            next.latency_ms = ms;
        }
        if let Some(tps) = patch.tokens_per_s {
            if !tps.is_finite() || tps < 0.0 {
                return Err(format!("tokens_per_s must be >= 0, got {tps}"));
            }
            next.tokens_per_s = tps;
        }
        if let Some(n) = patch.completion_tokens {
            next.completion_tokens = n;
        }
        self.store(next);
        if patch.reset_counters {
            self.requests.store(0, Ordering::Relaxed);
            self.served.store(0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts a chat completion request that reached the handler.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a chat completion answered completely with 200.
    pub fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// The `/control` view of these settings.
    pub fn view(&self, node_name: &str, models: &[String]) -> ControlView {
        let s = self.snapshot();
        ControlView {
            node_name: node_name.to_owned(),
            models: models.to_vec(),
            fault: s.fault.name().to_owned(),
            latency_ms: s.latency_ms,
            tokens_per_s: s.tokens_per_s,
            completion_tokens: s.completion_tokens,
            requests: self.requests.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for (fault, name) in FAULTS {
            assert_eq!(name.parse::<Fault>(), Ok(fault));
            assert_eq!(fault.name(), name);
            assert_eq!(Fault::from_index(fault as u8), fault);
        }
        assert!("teapot".parse::<Fault>().is_err());
    }

    #[test]
    fn bad_patch_changes_nothing() {
        let s = Settings::new(Snapshot {
            fault: Fault::None,
            latency_ms: 0,
            tokens_per_s: 0.0,
            completion_tokens: 16,
        });
        let patch = ControlPatch {
            latency_ms: Some(50),
            fault: Some("teapot".into()),
            ..ControlPatch::default()
        };
        assert!(s.apply(&patch).is_err());
        assert_eq!(s.snapshot().latency_ms, 0);
    }
}
