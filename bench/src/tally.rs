//! Auditing one group of answers, and what the audits found.

use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tollgate_verify::stats::{aligned, judge, Mode, Outcome};
use tollgate_verify::{Auditor, Claim, History, Position, RivalPass, Thresholds};

use crate::workload::Answer;

/// What the audits of one group of completions found.
#[derive(Default)]
pub struct Tally {
    pub completions: usize,
    pub long: usize,
    pub long_failed: usize,
    /// Long answers whose text differs from the honest node's for the same request.
    pub long_differs: usize,
    pub long_differs_failed: usize,
    pub failed: usize,
    pub inconclusive: usize,
    /// (prefix length, judged, failed)
    pub by_length: Vec<(usize, usize, usize)>,
    pub audit_time: Duration,
    pub latencies_ms: Vec<f64>,
    /// A line per failed audit: what was asked and why it failed.
    pub failures: Vec<String>,
    /// Per-token |reported - reference| log-prob gaps.
    pub gaps: Vec<f64>,
    /// Per-token gaps of the reported alternatives (rank by rank, the largest).
    pub alternative_gaps: Vec<f64>,
    /// Per-token shape gaps of the reported alternatives (token by token).
    pub shape_gaps: Vec<f64>,
    /// Failed by its own audit or by the node's recent audits pooled.
    pub failed_pooled: usize,
    pub long_failed_pooled: usize,
    /// The node's first audit (1-based) that failed, alone or pooled.
    pub first_caught: Option<usize>,
    /// Long answers failed by the decisive test (one position far off).
    pub long_failed_decisive: usize,
    /// The farthest an aligned position was off (a replay miss's margin in
    /// logits, a reported log-prob's gap in nats): what the decisive test
    /// would see, against its tolerance.
    pub worst_aligned: f32,
    /// Every audit, as JSON (for `--reports`).
    pub reports: Vec<Value>,
    /// Every answer's audited positions and mode, in order (for the honest
    /// nodes' headroom).
    pub judged: Vec<(Vec<Position>, Mode)>,
    /// Audits whose first pass called for the rival pass.
    pub rival_wanted: usize,
    /// Per answer in `judged`, whether its first pass called for it.
    pub rival_called: Vec<bool>,
    /// Long answers the rival test failed, and those no other test failed.
    pub long_failed_rival: usize,
    pub long_failed_rival_only: usize,
}

pub const LENGTHS: &[usize] = &[8, 16, 24, 32, 48];

/// Audits `answers`; `honest_texts`, where given, are the honest node's
/// answers to the same requests (a cheat that wrote exactly those is
/// indistinguishable from honesty, and harmless for that answer). With
/// [`RivalPass::Always`] every answer is judged by the rival test too (a
/// stricter verdict than the gateway's), while the time counted is what
/// the gateway's audit spends.
pub async fn audit_all(
    label: &str,
    auditor: &Auditor,
    sha: &str,
    answers: &[Answer],
    honest_texts: Option<&[String]>,
    replayable: bool,
    rival: RivalPass,
) -> anyhow::Result<Tally> {
    let mut t = Tally {
        by_length: LENGTHS.iter().map(|&k| (k, 0, 0)).collect(),
        ..Default::default()
    };
    let thresholds = Thresholds::default();
    // The answers are one node's, audited in order: its pooled history.
    let mut history = History::<()>::default();
    for (n, a) in answers.iter().enumerate() {
        let claim = Claim::from_completion(a.body.clone(), &a.completion)
            .context("answer is not a chat completion")?;
        let report = auditor.audit_with(&claim, sha, replayable, rival).await?;
        let spent = if report.rival_wanted {
            report.elapsed
        } else {
            report.elapsed.saturating_sub(report.rival_elapsed)
        };
        t.audit_time += spent;
        t.latencies_ms.push(spent.as_secs_f64() * 1e3);
        t.completions += 1;
        t.rival_wanted += usize::from(report.rival_wanted);
        t.rival_called.push(report.rival_wanted);
        for p in &report.positions {
            t.gaps.extend(p.logprob_gap().map(f64::from));
            t.alternative_gaps.extend(p.top_gap().map(f64::from));
            t.shape_gaps.extend(p.shape_gap().map(f64::from));
        }
        let replays = report.verdict.mode != Mode::Unreplayable;
        for p in aligned(&report.positions) {
            t.worst_aligned = t.worst_aligned.max(p.decisive_off(replays));
        }
        t.judged
            .push((report.positions.clone(), report.verdict.mode));
        t.reports.push(json!({
            "node": label,
            "request": a.body,
            "text": claim.text,
            "honest_text": honest_texts.and_then(|h| h.get(n)),
            "verdict": report.verdict,
            "positions": report.positions,
        }));
        let pooled = history.observe(&report.verdict, (), &thresholds);
        let pooled =
            tollgate_verify::history::with_pooled(report.verdict.clone(), pooled, &thresholds);
        let caught = pooled.outcome == Outcome::Fail;
        t.failed_pooled += usize::from(caught);
        t.long_failed_pooled += usize::from(caught && report.verdict.tokens >= 32);
        if caught && t.first_caught.is_none() {
            t.first_caught = Some(n + 1);
        }
        match report.verdict.outcome {
            Outcome::Fail => {
                t.failed += 1;
                let misses: Vec<String> = report
                    .positions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let r = p.replayed?;
                        let gap = p.logprob_gap().unwrap_or(0.0);
                        (r.token != p.claimed || gap > thresholds.logprob_tolerance).then(|| {
                            format!(
                                "#{i} {}->{} margin {:.2} gap {:.2}",
                                p.claimed, r.token, r.margin, gap
                            )
                        })
                    })
                    .collect();
                t.failures.push(format!(
                    "temperature {} seed {}: {:?}; text {:?}; {}",
                    a.body["temperature"],
                    a.body["seed"],
                    report.verdict.reasons,
                    claim.text,
                    misses.join(", ")
                ));
            }
            Outcome::Inconclusive => t.inconclusive += 1,
            Outcome::Pass => {}
        }
        if report.verdict.tokens >= 32 {
            let failed = usize::from(report.verdict.outcome == Outcome::Fail);
            t.long += 1;
            t.long_failed += failed;
            t.long_failed_decisive += usize::from(report.verdict.decisive.failed());
            if report.verdict.rival.failed() {
                t.long_failed_rival += 1;
                t.long_failed_rival_only += usize::from(report.verdict.reasons.len() == 1);
            }
            if honest_texts.is_some_and(|h| h.get(n).is_some_and(|h| h != a.text())) {
                t.long_differs += 1;
                t.long_differs_failed += failed;
            }
        }
        for (k, judged, failed) in &mut t.by_length {
            if report.positions.len() >= *k {
                *judged += 1;
                let v = judge(&report.positions[..*k], report.verdict.mode, &thresholds);
                *failed += usize::from(v.outcome == Outcome::Fail);
            }
        }
    }
    Ok(t)
}

/// Per-token gaps summed up: percentiles and the share beyond a tolerance.
pub struct Spread {
    pub tokens: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub beyond: f64,
}

impl Spread {
    pub fn of(mut values: Vec<f64>, tolerance: f64) -> Self {
        let beyond = values.iter().filter(|&&g| g > tolerance).count();
        Self {
            tokens: values.len(),
            p50: percentile(&mut values, 0.5),
            p99: percentile(&mut values, 0.99),
            max: percentile(&mut values, 1.0),
            beyond: if values.is_empty() {
                0.0
            } else {
                beyond as f64 / values.len() as f64
            },
        }
    }
}

pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[((values.len() - 1) as f64 * p).round() as usize]
}
