//! What the rival test saw: how often honest reports lean to the rival
//! context (the request without its system prompt) at each distance apart,
//! against the rate the test assumes for them, and what it caught.

use tollgate_verify::stats::{honest_rival_rate, judge};
use tollgate_verify::Thresholds;

use crate::tally::Tally;

/// Distances apart (nats) the calibration is shown by: the test counts a
/// token from where its assumed rate falls to `rival_max_rate` up.
const BINS: &[f32] = &[0.3, 0.5, 0.8, 1.2];

/// Bins with fewer tokens are shown but not weighed in the worst ratio: a
/// few tokens' share says little about a rate.
const WEIGHED_FROM: usize = 200;

/// The rival test's figures for the summary line.
pub struct RivalSummary {
    /// Honest answers the rival test failed, run on every one.
    pub honest_failed: usize,
    /// Share of honest audits whose first pass called for the rival pass.
    pub honest_wanted: f64,
    /// The highest measured over assumed leaning rate in any bin of at
    /// least [`WEIGHED_FROM`] tokens.
    pub worst_ratio: f64,
}

/// One bin's honest tokens.
#[derive(Clone, Copy, Default)]
struct Bin {
    leaning: usize,
    counted: usize,
    /// The assumed rates, summed.
    assumed: f64,
}

/// Honest tokens leaning to the rival, measured and assumed, by distance.
struct Calibration {
    bins: Vec<Bin>,
}

impl Calibration {
    fn new() -> Self {
        Self {
            bins: vec![Bin::default(); BINS.len() + 1],
        }
    }

    fn add(&mut self, positions: &[tollgate_verify::Position], t: &Thresholds) {
        for lean in positions.iter().filter_map(|p| p.rival_lean()) {
            let rate = honest_rival_rate(lean.apart, t);
            if rate > t.rival_max_rate {
                continue;
            }
            let bin = &mut self.bins[BINS.partition_point(|&b| b <= lean.apart)];
            bin.counted += 1;
            bin.assumed += rate;
            bin.leaning += usize::from(lean.leans(t.rival_share));
        }
    }

    /// Prints one line; returns the highest measured over assumed rate.
    fn print(&self, what: &str) -> f64 {
        let mut worst_ratio = 0.0f64;
        let mut cells = Vec::new();
        for (i, bin) in self.bins.iter().enumerate() {
            if bin.counted == 0 {
                continue;
            }
            let measured = bin.leaning as f64 / bin.counted as f64;
            let assumed = bin.assumed / bin.counted as f64;
            if bin.counted >= WEIGHED_FROM {
                worst_ratio = worst_ratio.max(measured / assumed);
            }
            let range = match (i.checked_sub(1).map(|j| BINS[j]), BINS.get(i)) {
                (None, Some(hi)) => format!("< {hi}"),
                (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
                (Some(lo), None) => format!(">= {lo}"),
                (None, None) => String::new(),
            };
            cells.push(format!(
                "{range}: {:.1}% / {:.1}% of {}",
                measured * 100.0,
                assumed * 100.0,
                bin.counted
            ));
        }
        if !cells.is_empty() {
            println!("  {what}: {}", cells.join("; "));
        }
        worst_ratio
    }
}

/// Prints the rival test's calibration on honest answers (judged by it
/// everywhere) and its catch of the cheat that drops the system prompt.
pub fn report<'a>(
    honest: impl Iterator<Item = &'a Tally>,
    drop: Option<&Tally>,
    t: &Thresholds,
) -> RivalSummary {
    let (mut every, mut called) = (Calibration::new(), Calibration::new());
    let (mut audits, mut wanted, mut failed) = (0, 0, 0);
    for tally in honest {
        audits += tally.completions;
        wanted += tally.rival_wanted;
        for ((positions, mode), &call) in tally.judged.iter().zip(&tally.rival_called) {
            every.add(positions, t);
            if call {
                called.add(positions, t);
            }
            failed += usize::from(judge(positions, *mode, t).rival.failed());
        }
    }
    let honest_wanted = wanted as f64 / audits.max(1) as f64;
    println!("\nthe rival context (the request without its system prompt), scored where the first pass calls for it");
    println!(
        "  honest audits calling for it: {wanted} of {audits} ({:.1}%); scored for every honest answer all the same: {failed} failed by the rival test",
        honest_wanted * 100.0
    );
    println!(
        "  honest tokens leaning to it, measured / assumed, by nats apart between the contexts"
    );
    let worst_ratio = every
        .print("every honest answer")
        .max(called.print("answers calling for it"));
    if let Some(d) = drop {
        println!(
            "  drops the system prompt: called for it {} times; of {} long answers the rival test failed {}, {} of them failed by no other test",
            d.rival_wanted, d.long, d.long_failed_rival, d.long_failed_rival_only
        );
    }
    RivalSummary {
        honest_failed: failed,
        honest_wanted,
        worst_ratio,
    }
}
