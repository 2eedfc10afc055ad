//! Recording outcomes into histograms and rendering them as a table and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::outcome::{ErrorKind, Outcome};

// Microsecond resolution up to an hour: far past any run's drain limit.
const MAX_US: u64 = 3_600_000_000;

/// Latency histograms and error counts of the measured requests.
#[derive(Debug, Clone)]
pub struct Recorder {
    total: Histogram<u64>,
    ttfb: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<ErrorKind, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            total: histogram(),
            ttfb: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    /// Adds one outcome.
    pub fn record(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok { total, ttfb } => {
                self.ok += 1;
                self.total.saturating_record(micros(*total));
                if let Some(t) = ttfb {
                    self.ttfb.saturating_record(micros(*t));
                }
            }
            Outcome::Err(kind) => *self.errors.entry(*kind).or_default() += 1,
        }
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of a microsecond histogram; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// The result of one load run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Requested rate.
    pub rps_target: f64,
    /// Measured window (warm-up excluded).
    pub duration_s: f64,
    /// Whether requests streamed.
    pub stream: bool,
    /// Requests due in the measured window.
    pub count: u64,
    /// Complete 2xx answers among them.
    pub ok: u64,
    /// Failures among them, by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Successful answers per second of the measured window.
    pub rps_achieved: f64,
    /// Time from due to complete answer.
    pub latency: Option<Percentiles>,
    /// Time from due to first body bytes; streams only.
    pub ttfb: Option<Percentiles>,
}

impl Report {
    /// Summarises a recorder.
    pub fn new(recorder: &Recorder, rps_target: f64, duration: Duration, stream: bool) -> Report {
        let duration_s = duration.as_secs_f64();
        Report {
            rps_target,
            duration_s,
            stream,
            count: recorder.ok + recorder.errors(),
            ok: recorder.ok,
            errors_by_kind: recorder
                .errors
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            rps_achieved: if duration_s > 0.0 {
                (recorder.ok as f64 / duration_s * 10.0).round() / 10.0
            } else {
                0.0
            },
            latency: Percentiles::of(&recorder.total),
            ttfb: if stream {
                Percentiles::of(&recorder.ttfb)
            } else {
                None
            },
        }
    }

    /// Total failures.
    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    /// The one-line JSON form; percentiles are null when nothing succeeded.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("rps_target".into(), json!(self.rps_target));
        m.insert("duration_s".into(), json!(self.duration_s));
        m.insert("stream".into(), json!(self.stream));
        m.insert("count".into(), json!(self.count));
        m.insert("ok".into(), json!(self.ok));
        m.insert("errors".into(), json!(self.errors()));
        m.insert("errors_by_kind".into(), json!(self.errors_by_kind));
        m.insert("rps_achieved".into(), json!(self.rps_achieved));
        insert_percentiles(&mut m, "", self.latency);
        if self.stream {
            insert_percentiles(&mut m, "ttfb_", self.ttfb);
        }
        Value::Object(m)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mode = if self.stream { "stream" } else { "non-stream" };
        let _ = writeln!(
            out,
            "target {} rps, {} s measured, {mode}",
            self.rps_target, self.duration_s
        );
        let _ = writeln!(
            out,
            "requests {:>9}   ok {:>9}   errors {:>7}   achieved {:>9.1} rps",
            self.count,
            self.ok,
            self.errors(),
            self.rps_achieved
        );
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "errors by kind: {}", kinds.join(" "));
        }
        let _ = writeln!(
            out,
            "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency ms", "p50", "p90", "p99", "p99.9", "max"
        );
        let label = if self.stream {
            "to [DONE]"
        } else {
            "to full body"
        };
        row(&mut out, label, self.latency);
        if self.stream {
            row(&mut out, "to 1st byte", self.ttfb);
        }
        out
    }
}

fn insert_percentiles(m: &mut Map<String, Value>, prefix: &str, p: Option<Percentiles>) {
    let fields = [
        ("p50_ms", p.map(|p| p.p50)),
        ("p90_ms", p.map(|p| p.p90)),
        ("p99_ms", p.map(|p| p.p99)),
        ("p999_ms", p.map(|p| p.p999)),
        ("max_ms", p.map(|p| p.max)),
    ];
    for (name, value) in fields {
        m.insert(format!("{prefix}{name}"), json!(value));
    }
}

fn row(out: &mut String, label: &str, p: Option<Percentiles>) {
    match p {
        Some(p) => {
            let _ = writeln!(
                out,
                "{label:<14}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        None => {
            let _ = writeln!(out, "{label:<14}{:>10}", "-");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_ms(ms: u64) -> Outcome {
        Outcome::Ok {
            total: Duration::from_millis(ms),
            ttfb: Some(Duration::from_micros(ms * 100)),
        }
    }

    #[test]
    fn percentiles_of_known_distribution() {
        let mut r = Recorder::new();
        (1..=1000).for_each(|ms| r.record(&ok_ms(ms)));
        r.record(&Outcome::Err(ErrorKind::Status(500)));
        r.record(&Outcome::Err(ErrorKind::Status(500)));
        r.record(&Outcome::Err(ErrorKind::Body));
        let report = Report::new(&r, 1000.0, Duration::from_secs(1), true);
        let p = report.latency.expect("latency");
        // hdrhistogram keeps 3 significant digits: within 0.1% of the exact value.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(near(p.p50, 500.0), "{p:?}");
        assert!(near(p.p90, 900.0), "{p:?}");
        assert!(near(p.p99, 990.0), "{p:?}");
        assert!(near(p.p999, 999.0), "{p:?}");
        assert!(near(p.max, 1000.0), "{p:?}");
        let t = report.ttfb.expect("ttfb");
        assert!(near(t.p50, 50.0), "{t:?}");
        assert_eq!((report.count, report.ok, report.errors()), (1003, 1000, 3));
        assert_eq!(report.errors_by_kind.get("http_500"), Some(&2));
        assert_eq!(report.rps_achieved, 1000.0);

        let v = report.to_json();
        assert_eq!(v["errors"], 3);
        assert!(near(v["p99_ms"].as_f64().expect("p99"), 990.0));
        assert!(v["ttfb_p50_ms"].is_number());
        assert!(report.table().contains("http_500=2"));
    }

    #[test]
    fn empty_run_has_null_percentiles() {
        let mut r = Recorder::new();
        r.record(&Outcome::Err(ErrorKind::Connect));
        let report = Report::new(&r, 10.0, Duration::from_secs(1), false);
        let v = report.to_json();
        assert!(v["p50_ms"].is_null());
        assert!(v.get("ttfb_p50_ms").is_none());
        assert_eq!(v["errors_by_kind"]["connect"], 1);
        assert!(report.table().contains('-'));
    }
}
