//! The open-loop constant-rate load generator.
//!
//! Request `i` is due at `start + i / rps` whether or not earlier ones have
//! answered, and its latency counts from that due time, so a stalled server shows up
//! as latency instead of as a politely slower client (no coordinated omission).

mod outcome;
mod report;
mod target;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use http::header::{HeaderName, HeaderValue};
use http::Uri;
use tokio::runtime::Handle;

pub use outcome::{ErrorKind, Outcome};
pub use report::{Percentiles, Recorder, Report};
pub use target::{loopback_uri, parse_header, Target};

/// Lead time before the first request, so that start-up work does not count.
const LEAD: Duration = Duration::from_millis(20);
/// How far behind schedule the generator may fall before it stops sending.
const LATE_LIMIT: Duration = Duration::from_secs(1);

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Chat completions URL (loopback only).
    pub url: Uri,
    /// Requests per second.
    pub rps: f64,
    /// Measured window.
    pub duration: Duration,
    /// Unmeasured window before it, at the same rate.
    pub warmup: Duration,
    /// Ask for `stream: true`.
    pub stream: bool,
    /// Extra request headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Model to ask for.
    pub model: String,
    /// Outstanding requests beyond which new ones are counted as `overload`.
    pub max_in_flight: usize,
    /// How long to wait for stragglers after the last request is due.
    pub drain: Duration,
}

impl LoadConfig {
    /// A non-streaming run of `rps` for `duration` against `url`, with no warm-up.
    pub fn new(url: Uri, rps: f64, duration: Duration) -> LoadConfig {
        LoadConfig {
            url,
            rps,
            duration,
            warmup: Duration::ZERO,
            stream: false,
            headers: Vec::new(),
            model: "instant-1".into(),
            max_in_flight: 2000,
            drain: Duration::from_secs(10),
        }
    }
}

/// The schedule of one run, shared by the sender thread and the request tasks.
struct Plan {
    rps: f64,
    start: Instant,
    /// Requests in all, warm-up included.
    total: u64,
    /// Requests before this index are warm-up and not recorded.
    first_measured: u64,
    /// Every request task ends by this instant.
    give_up: Instant,
    max_in_flight: usize,
}

impl Plan {
    fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rps)
    }

    fn end(&self) -> Instant {
        self.due(self.total)
    }
}

struct Shared {
    plan: Plan,
    target: Target,
    recorder: Mutex<Recorder>,
    in_flight: AtomicUsize,
}

impl Shared {
    fn record(&self, outcome: &Outcome) {
        self.recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(outcome);
    }
}

/// Runs the load and reports on the measured window; ends within about
/// `warmup + duration + 1 s + drain`.
pub async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    if !(config.rps.is_finite() && config.rps > 0.0) {
        bail!("rps must be a positive number, got {}", config.rps);
    }
    if config.duration.is_zero() {
        bail!("duration must be positive");
    }
    let url = loopback_uri(&config.url.to_string())?;
    let target = Target::new(
        url,
        &config.headers,
        &config.model,
        config.stream,
        config.max_in_flight,
    );
    let start = Instant::now() + LEAD;
    let secs = |d: Duration| d.as_secs_f64() * config.rps;
    let first_measured = secs(config.warmup).round() as u64;
    let total = first_measured + secs(config.duration).ceil().max(1.0) as u64;
    let end = start + Duration::from_secs_f64(total as f64 / config.rps);
    let shared = Arc::new(Shared {
        plan: Plan {
            rps: config.rps,
            start,
            total,
            first_measured,
            give_up: end + LATE_LIMIT + config.drain,
            max_in_flight: config.max_in_flight.max(1),
        },
        target,
        recorder: Mutex::new(Recorder::new()),
        in_flight: AtomicUsize::new(0),
    });

    // A blocking thread paces the sends: std's sleep is precise to tens of
    // microseconds where tokio's timer rounds to whole milliseconds, which would
    // add up to a millisecond of fake latency to every request.
    let sender = shared.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || send_all(&sender, &handle))
        .await
        .context("sender thread failed")?;

    // Every task stops itself at give_up; the extra second only covers the last
    // of them being scheduled.
    let hard_stop = shared.plan.give_up + Duration::from_secs(1);
    while shared.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < hard_stop {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let recorder = shared
        .recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let measured = shared.plan.total - shared.plan.first_measured;
    let mut report = Report::new(&recorder, config.rps, config.duration, config.stream);
    // Tasks that never reported (only possible past hard_stop) are timeouts too.
    let missing = measured.saturating_sub(report.count);
    if missing > 0 {
        *report.errors_by_kind.entry("timeout".into()).or_default() += missing;
        report.count = measured;
    }
    Ok(report)
}

fn send_all(shared: &Arc<Shared>, handle: &Handle) {
    let plan = &shared.plan;
    let late_limit = plan.end() + LATE_LIMIT;
    let mut i = 0;
    while i < plan.total {
        let now = Instant::now();
        if now > late_limit {
            // Overloaded generator: what is left could not be sent on time.
            let unsent = plan.total - i.max(plan.first_measured);
            for _ in 0..unsent {
                shared.record(&Outcome::Err(ErrorKind::NotSent));
            }
            return;
        }
        while i < plan.total && plan.due(i) <= now {
            dispatch(shared, handle, i);
            i += 1;
        }
        if i < plan.total {
            std::thread::sleep(plan.due(i).saturating_duration_since(Instant::now()));
        }
    }
}

fn dispatch(shared: &Arc<Shared>, handle: &Handle, i: u64) {
    let plan = &shared.plan;
    let measured = i >= plan.first_measured;
    if shared.in_flight.load(Ordering::Acquire) >= plan.max_in_flight {
        if measured {
            shared.record(&Outcome::Err(ErrorKind::Overload));
        }
        return;
    }
    shared.in_flight.fetch_add(1, Ordering::AcqRel);
    let due = plan.due(i);
    let task = shared.clone();
    handle.spawn(async move {
        let give_up = tokio::time::Instant::from_std(task.plan.give_up);
        let outcome = tokio::time::timeout_at(give_up, task.target.send(due))
            .await
            .unwrap_or(Outcome::Err(ErrorKind::Timeout));
        if measured {
            task.record(&outcome);
        }
        task.in_flight.fetch_sub(1, Ordering::AcqRel);
    });
}
