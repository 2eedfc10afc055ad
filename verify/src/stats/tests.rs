//! The verdict's tests, measure by measure.

use super::*;

fn pos(claimed: u32, replayed: Option<(u32, f32)>, reported: Option<f32>) -> Position {
    Position {
        claimed,
        ref_logprob: -0.1,
        ref_best: replayed.map_or(claimed, |r| r.0),
        ref_best_logprob: -0.05,
        replayed: replayed.map(|(token, margin)| Replayed {
            token,
            margin,
            runner_up: None,
        }),
        reported_logprob: reported,
        other_split: false,
        reported_top: Vec::new(),
        ref_top: Vec::new(),
        paired: Vec::new(),
        unpaired: 0,
        rival: Vec::new(),
    }
}

#[test]
fn honest_greedy_passes_and_excuses_near_ties() {
    let mut ps: Vec<Position> = (0..32).map(|i| pos(i, Some((i, 0.0)), None)).collect();
    // Three near-ties (rounding) and one re-tokenization accident.
    for i in [3, 9, 20] {
        ps[i].replayed = Some(Replayed {
            token: 999,
            margin: 0.01,
            runner_up: None,
        });
    }
    ps[25].replayed = Some(Replayed {
        token: 999,
        margin: 6.0,
        runner_up: None,
    });
    ps[25].other_split = true;
    let v = judge(&ps, Mode::Greedy, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    assert_eq!(v.replay.errors, 1);
    assert_eq!((v.decisive.errors, v.decisive.checked), (0, 26));
    assert_eq!(v.replay.checked, 32);
    assert!(v.reasons.is_empty());
}

#[test]
fn many_wide_misses_fail() {
    let ps: Vec<Position> = (0..32)
        .map(|i| {
            if i % 3 == 0 {
                pos(i, Some((i + 1, 3.0)), None)
            } else {
                pos(i, Some((i, 0.0)), None)
            }
        })
        .collect();
    let v = judge(&ps, Mode::Greedy, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.replay.errors, 11);
    assert!(v.reasons[0].contains("11 of 32"), "{:?}", v.reasons);
    // Seeded requests are judged the same way.
    let v = judge(&ps, Mode::Seeded, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Fail);
    let near: Vec<Position> = ps
        .iter()
        .map(|p| Position {
            replayed: p.replayed.map(|r| Replayed {
                margin: r.margin.min(0.01),
                ..r
            }),
            ..p.clone()
        })
        .collect();
    assert_eq!(
        judge(&near, Mode::Seeded, &Thresholds::default()).outcome,
        Outcome::Pass
    );
}

#[test]
fn fabricated_logprobs_fail_and_honest_ones_pass() {
    let honest: Vec<Position> = (0..40).map(|i| pos(i, None, Some(-0.1 + 0.01))).collect();
    let v = judge(&honest, Mode::Unreplayable, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Pass);
    assert_eq!(v.logprobs.checked, 40);
    assert!((v.mean_acceptance.unwrap() - (-0.01f64).exp()).abs() < 1e-6);
    let forged: Vec<Position> = (0..40).map(|i| pos(i, None, Some(-3.0))).collect();
    let v = judge(&forged, Mode::Unreplayable, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(
        v.mean_acceptance,
        Some(1.0),
        "claiming less certainty is always accepted"
    );
    assert!(v.reasons[0].contains("reported log-probs"));
    // A NaN log-prob is a gap, not a pass.
    let nan: Vec<Position> = (0..40).map(|i| pos(i, None, Some(f32::NAN))).collect();
    assert_eq!(
        judge(&nan, Mode::Unreplayable, &Thresholds::default()).outcome,
        Outcome::Fail
    );
}

#[test]
fn too_little_is_inconclusive_not_a_pass() {
    let short: Vec<Position> = (0..4).map(|i| pos(i, Some((i, 0.0)), None)).collect();
    let v = judge(&short, Mode::Greedy, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Inconclusive);
    let nothing: Vec<Position> = (0..40).map(|i| pos(i, Some((i + 1, 5.0)), None)).collect();
    let v = judge(&nothing, Mode::Unreplayable, &Thresholds::default());
    assert_eq!(
        v.outcome,
        Outcome::Inconclusive,
        "replays are ignored when unreplayable"
    );
    assert_eq!(v.replay.checked, 0);
    // But a short answer that is plainly wrong still fails.
    let wrong: Vec<Position> = (0..4).map(|i| pos(i, Some((i + 1, 5.0)), None)).collect();
    let t = Thresholds {
        honest_miss_rate: 0.001,
        ..Default::default()
    };
    assert_eq!(judge(&wrong, Mode::Greedy, &t).outcome, Outcome::Fail);
}

/// A greedy answer of 48 tokens, all picked as the reference picks.
fn clean(n: u32) -> Vec<Position> {
    (0..n).map(|i| pos(i, Some((i, 0.0)), Some(-0.1))).collect()
}

fn far_miss(p: &mut Position, margin: f32) {
    p.replayed = Some(Replayed {
        token: 999,
        margin,
        runner_up: None,
    });
}

#[test]
fn one_far_miss_where_the_text_is_aligned_fails_the_answer() {
    // A dropped system prompt: the first word is another one, by far;
    // teacher-forced on it, the rest agrees.
    let mut ps = clean(48);
    far_miss(&mut ps[0], 7.5);
    let v = judge(&ps, Mode::Greedy, &Thresholds::default());
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!((v.decisive.errors, v.decisive.limit), (1, 1));
    assert_eq!(v.replay.errors, 1, "far below the count test's limit");
    assert!(!v.replay.failed());
    assert!(v.reasons[0].contains("more than 4"), "{:?}", v.reasons);
    // Seeded answers alike.
    assert_eq!(
        judge(&ps, Mode::Seeded, &Thresholds::default()).outcome,
        Outcome::Fail
    );
    // A miss within the decisive tolerance is only counted.
    far_miss(&mut ps[0], 3.9);
    assert_eq!(
        judge(&ps, Mode::Greedy, &Thresholds::default()).outcome,
        Outcome::Pass
    );
}

#[test]
fn far_misses_after_another_split_was_within_reach_are_only_counted() {
    let mut ps = clean(48);
    far_miss(&mut ps[30], 9.0);
    // The pick at 30 spells the same text: a split, not other words.
    ps[30].other_split = true;
    let v = judge(&ps, Mode::Greedy, &Thresholds::default());
    assert_eq!(
        (v.outcome, v.decisive.errors, v.decisive.checked),
        (Outcome::Pass, 0, 31)
    );
    // A split within reach at 10: the node may have seen other tokens
    // from there on, so a far miss at 30 proves nothing.
    ps[30].other_split = false;
    ps[10].other_split = true;
    let v = judge(&ps, Mode::Greedy, &Thresholds::default());
    assert_eq!((v.outcome, v.decisive.checked), (Outcome::Pass, 11));
    // Before it, it does.
    far_miss(&mut ps[9], 9.0);
    assert_eq!(
        judge(&ps, Mode::Greedy, &Thresholds::default()).outcome,
        Outcome::Fail
    );
}

#[test]
fn an_undrawable_claim_or_an_unreplayable_miss_is_not_decisive() {
    let mut ps = clean(48);
    // Rounding can move a nucleus boundary past the claimed token.
    far_miss(&mut ps[3], tollgate_engine::sampler::UNDRAWABLE);
    assert_eq!(
        judge(&ps, Mode::Seeded, &Thresholds::default())
            .decisive
            .errors,
        0
    );
    far_miss(&mut ps[3], 9.0);
    let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
    assert_eq!((v.outcome, v.decisive.errors), (Outcome::Pass, 0));
}

#[test]
fn one_far_reported_log_prob_fails_the_answer() {
    // The node's own context made its token certain; the claimed one's
    // makes it unlikely.
    let mut ps: Vec<Position> = (0..40).map(|i| pos(i, None, Some(-0.1))).collect();
    ps[0].reported_logprob = Some(-0.1 + 0.2);
    assert_eq!(
        judge(&ps, Mode::Unreplayable, &Thresholds::default()).outcome,
        Outcome::Pass
    );
    ps[5].reported_logprob = Some(-6.0);
    let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
    assert_eq!(
        (v.outcome, v.decisive.errors, v.logprobs.errors),
        (Outcome::Fail, 1, 1)
    );
    // Unknown alignment (an old record) judges no position decisive.
    for p in &mut ps {
        p.other_split = true;
    }
    let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
    assert_eq!((v.outcome, v.decisive.checked), (Outcome::Pass, 1));
}

/// A position whose node reported `top` as its alternatives where the
/// reference's best are -0.1, -2.5, -3.0, -4.0, -6.0.
fn with_alternatives(mut p: Position, top: &[f32]) -> Position {
    p.ref_top = vec![-0.1, -2.5, -3.0, -4.0, -6.0];
    p.reported_top = top.to_vec();
    p
}

#[test]
fn alternatives_from_another_context_fail_the_answer() {
    let honest = [-0.12, -2.6, -2.95, -4.1, -5.9];
    // Another context: as sure of the token, other runners-up.
    let other = [-0.1, -1.9, -3.6, -4.5, -5.2];
    let answer = |off: usize| -> Vec<Position> {
        (0..48)
            .map(|i| {
                let top = if i < off { &other } else { &honest };
                with_alternatives(pos(i as u32, Some((i as u32, 0.0)), Some(-0.1)), top)
            })
            .collect()
    };
    let t = Thresholds::default();
    let v = judge(&answer(0), Mode::Greedy, &t);
    assert_eq!(
        (v.outcome, v.alternatives.checked, v.alternatives.errors),
        (Outcome::Pass, 48, 0)
    );
    // Honest nodes exceed the tolerance now and then: a few such
    // positions are within what rounding does.
    let few = t.honest_alternatives_rate * 48.0;
    let v = judge(&answer(few.ceil() as usize), Mode::Greedy, &t);
    assert_eq!(v.outcome, Outcome::Pass);
    let limit = v.alternatives.limit;
    assert!(limit > few.ceil() as usize && limit < 48, "{limit}");
    let v = judge(&answer(limit), Mode::Greedy, &t);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(v.alternatives.failed() && !v.logprobs.failed() && !v.replay.failed());
    assert!(v.reasons[0].contains("alternatives"), "{:?}", v.reasons);
    // Without alternatives reported the test has nothing to check.
    let bare: Vec<Position> = (0..48)
        .map(|i| pos(i, Some((i, 0.0)), Some(-0.1)))
        .collect();
    let v = judge(&bare, Mode::Greedy, &t);
    assert_eq!((v.outcome, v.alternatives.checked), (Outcome::Pass, 0));
}

#[test]
fn alternatives_weighed_otherwise_fail_the_answer_though_sorted_they_line_up() {
    // The reference's best: a -0.5, b -1.5, c -2.0, d -3.0. Another
    // context swapped how likely b and c are: sorted, the values are the
    // same; token by token, b and c are 0.5 off, a and d exact.
    let honest = [(-0.52, -0.5), (-1.49, -1.5), (-2.02, -2.0), (-2.98, -3.0)];
    let other = [(-0.5, -0.5), (-2.0, -1.5), (-1.5, -2.0), (-3.0, -3.0)];
    let answer = |off: usize| -> Vec<Position> {
        (0..48)
            .map(|i| {
                let pairs = if i < off { &other } else { &honest };
                let mut p = pos(i as u32, Some((i as u32, 0.0)), Some(-0.5));
                p.paired = pairs.to_vec();
                p.ref_top = pairs.iter().map(|(_, f)| *f).collect();
                p.reported_top = pairs.iter().map(|(r, _)| *r).collect();
                p
            })
            .collect()
    };
    let t = Thresholds::default();
    let v = judge(&answer(0), Mode::Greedy, &t);
    assert_eq!(
        (v.outcome, v.shape.checked, v.shape.errors),
        (Outcome::Pass, 48, 0)
    );
    let v = judge(&answer(48), Mode::Greedy, &t);
    assert_eq!(v.alternatives.errors, 0, "sorted, the values line up");
    assert!(v.shape.failed(), "{:?}", v.shape);
    assert_eq!(v.outcome, Outcome::Fail);
    assert!(
        v.reasons[0].contains("weighs its alternatives"),
        "{:?}",
        v.reasons
    );
    // A few such positions are within what rounding does; the limit
    // is not.
    let limit = v.shape.limit;
    assert!(limit > 1 && limit < 48, "{limit}");
    assert_eq!(
        judge(&answer(limit - 1), Mode::Greedy, &t).outcome,
        Outcome::Pass
    );
    assert_eq!(
        judge(&answer(limit), Mode::Greedy, &t).outcome,
        Outcome::Fail
    );
    // Without pairs (a reference that cannot name tokens) the test has
    // nothing to check.
    let bare: Vec<Position> = (0..48)
        .map(|i| pos(i, Some((i, 0.0)), Some(-0.1)))
        .collect();
    assert_eq!(judge(&bare, Mode::Greedy, &t).shape.checked, 0);
}

#[test]
fn one_alternative_far_off_where_the_text_is_aligned_is_decisive() {
    let honest = [-0.12, -2.6, -2.95, -4.1, -5.9];
    let mut ps: Vec<Position> = (0..40)
        .map(|i| with_alternatives(pos(i, None, Some(-0.1)), &honest))
        .collect();
    ps[7].reported_top = vec![-0.1, -2.5, -3.0, -4.0, -10.5];
    let v = judge(&ps, Mode::Unreplayable, &Thresholds::default());
    assert_eq!((v.outcome, v.decisive.errors), (Outcome::Fail, 1));
    assert!((ps[7].decisive_off(false) - 4.5).abs() < 1e-5);
}

#[test]
fn the_six_tests_share_the_false_positive_budget() {
    let t = Thresholds::default();
    // One decisive position fails answers of up to a thousand tokens.
    let decisive = t.alpha * DECISIVE_SHARE;
    assert_eq!(limit(1000, t.honest_decisive_rate, decisive), 1);
    assert_eq!(limit(1100, t.honest_decisive_rate, decisive), 2);
    let v = judge(&clean(48), Mode::Greedy, &t);
    assert_eq!(
        v.replay.limit,
        limit(48, t.honest_miss_rate, t.alpha * 0.2125)
    );
    assert_eq!(
        v.logprobs.limit,
        limit(48, t.honest_gap_rate, t.alpha * 0.2125)
    );
    assert!((DECISIVE_SHARE + RIVAL_SHARE + 4.0 * COUNT_SHARE - 1.0).abs() < 1e-12);
    assert!((v.false_positive_bound - t.alpha).abs() < 1e-18);
    // Old records without the test still read.
    let mut json = serde_json::to_value(&v).expect("verdict serializes");
    json.as_object_mut().expect("an object").remove("decisive");
    json.as_object_mut()
        .expect("an object")
        .remove("alternatives");
    json.as_object_mut().expect("an object").remove("shape");
    json.as_object_mut().expect("an object").remove("rival");
    let old: Verdict = serde_json::from_value(json).expect("an old verdict reads");
    assert_eq!(old.decisive, Count::default());
    assert_eq!(old.alternatives, Count::default());
    assert_eq!(old.shape, Count::default());
    assert_eq!(old.rival, Count::default());
    let p: Position = serde_json::from_value(serde_json::json!({
        "claimed": 1, "ref_logprob": -0.1, "ref_best": 1, "ref_best_logprob": -0.1,
        "replayed": null, "reported_logprob": null
    }))
    .expect("an old position reads");
    assert!(p.other_split, "unknown alignment is the careful default");
    assert!(p.reported_top.is_empty() && p.ref_top.is_empty() && p.paired.is_empty());
    assert!(p.rival.is_empty());
}

/// An answer of 48 tokens whose reports sit `along` of the way from the
/// claimed context's log-probs to the rival's, the two `apart` apart
/// (centred, over three tokens), at the first `leaning` tokens; exactly at
/// the claimed context's at the others.
fn rival_answer(apart: f32, leaning: usize, along: f32) -> Vec<Position> {
    // Centred direction (+1, -1, 0) / sqrt(2), scaled to `apart`.
    let step = apart / 2f32.sqrt();
    let claimed = [-0.2f32, -2.0, -3.0];
    let rival = [claimed[0] + step, claimed[1] - step, claimed[2]];
    (0..48)
        .map(|i| {
            let share = if i < leaning { along } else { 0.0 };
            let mut p = pos(i as u32, Some((i as u32, 0.0)), Some(-0.2));
            p.rival = (0..3)
                .map(|k| {
                    let reported = claimed[k] + share * (rival[k] - claimed[k]) - 0.05;
                    [reported, claimed[k], rival[k]]
                })
                .collect();
            p
        })
        .collect()
}

#[test]
fn reports_nearer_the_rival_context_fail_the_answer() {
    let t = Thresholds::default();
    // Contexts 0.6 apart: a report leans by rounding at a normal's tail
    // beyond 0.3 / 0.2 = 1.5 spreads, 6.7% per token.
    let rate = honest_rival_rate(0.6, &t);
    assert!((rate - 0.0668).abs() < 1e-3, "{rate}");
    let needed = limit(48, rate, t.alpha * RIVAL_SHARE);
    assert!(needed > 4 && needed < 24, "{needed}");
    // The cheat's reports are the rival's: every token leans.
    let v = judge(&rival_answer(0.6, 48, 1.0), Mode::Greedy, &t);
    assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    assert_eq!(
        (v.rival.checked, v.rival.errors, v.rival.limit),
        (48, 48, needed)
    );
    assert!(
        v.reasons[0].contains("without its system prompt"),
        "{:?}",
        v.reasons
    );
    // Honest reports lean at a few tokens by rounding; one short of the
    // limit passes, the limit fails.
    let v = judge(&rival_answer(0.6, needed - 1, 0.7), Mode::Greedy, &t);
    assert_eq!((v.outcome, v.rival.errors), (Outcome::Pass, needed - 1));
    let v = judge(&rival_answer(0.6, needed, 0.7), Mode::Greedy, &t);
    assert_eq!(v.outcome, Outcome::Fail);
    // Less than half way is no lean.
    let v = judge(&rival_answer(0.6, 48, 0.45), Mode::Greedy, &t);
    assert_eq!((v.outcome, v.rival.errors), (Outcome::Pass, 0));
}

#[test]
fn contexts_too_close_for_rounding_say_nothing() {
    let t = Thresholds::default();
    // 0.1 apart: rounding alone leans at 40% of tokens, beyond the 30%
    // that still counts; every token leaning fails nothing.
    assert!(honest_rival_rate(0.1, &t) > t.rival_max_rate);
    let v = judge(&rival_answer(0.1, 48, 1.0), Mode::Greedy, &t);
    assert_eq!((v.outcome, v.rival.checked), (Outcome::Pass, 0));
    // Far apart, the floor holds: rounding's tail is heavier than a
    // normal's.
    assert_eq!(honest_rival_rate(5.0, &t), t.honest_rival_floor);
    // Each token counts at its own rate: tokens far apart lower the limit
    // below what the nearest pair alone would need.
    let mut mixed = rival_answer(0.6, 0, 0.0);
    mixed.extend(rival_answer(2.0, 0, 0.0));
    let v = judge(&mixed, Mode::Greedy, &t);
    let mut rates = vec![honest_rival_rate(0.6, &t); 48];
    rates.extend(vec![honest_rival_rate(2.0, &t); 48]);
    assert_eq!(v.rival.limit, limit_each(&rates, t.alpha * RIVAL_SHARE));
    assert!(v.rival.limit < limit(96, honest_rival_rate(0.6, &t), t.alpha * RIVAL_SHARE));
}

#[test]
fn the_rival_pass_runs_where_the_answer_shows_a_changed_context() {
    let t = Thresholds::default();
    let mut v = judge(&clean(48), Mode::Greedy, &t);
    v.shape = Count {
        checked: 48,
        errors: 1,
        limit: 14,
    };
    assert!(!rival_wanted(&v, &t), "one shape gap is rounding's");
    v.shape.errors = 3;
    assert!(rival_wanted(&v, &t));
    v.shape.errors = 0;
    v.alternatives = Count {
        checked: 48,
        errors: 3,
        limit: 15,
    };
    assert!(rival_wanted(&v, &t));
    v.outcome = Outcome::Fail;
    assert!(!rival_wanted(&v, &t), "a failed answer needs no more");
}

#[test]
fn the_normal_tail_is_accurate() {
    for (z, want) in [
        (0.0, 0.5),
        (1.0, 0.158_655_25),
        (2.5, 0.006_209_665),
        (-1.0, 0.841_344_75),
        (5.0, 2.866_515_7e-7),
    ] {
        let got = normal_tail(z);
        assert!(
            (got - want).abs() <= 1e-6 * want,
            "{z}: {got} against {want}"
        );
    }
}

#[test]
fn per_token_measures() {
    let p = Position {
        claimed: 5,
        ref_logprob: (0.25f32).ln(),
        ref_best: 7,
        ref_best_logprob: (0.5f32).ln(),
        replayed: None,
        reported_logprob: Some((0.5f32).ln()),
        other_split: false,
        reported_top: Vec::new(),
        ref_top: Vec::new(),
        paired: Vec::new(),
        unpaired: 0,
        rival: Vec::new(),
    };
    assert!((p.ref_prob() - 0.25).abs() < 1e-6);
    assert!(!p.greedy_agrees());
    assert!((p.acceptance().unwrap() - 0.5).abs() < 1e-6);
    assert!((p.logprob_gap().unwrap() - 2f32.ln()).abs() < 1e-6);
    assert_eq!(p.top_gap(), None, "no alternatives reported");
    let v = judge(&[p], Mode::Greedy, &Thresholds::default());
    assert_eq!(v.greedy_agreement, 0.0);
    assert!((v.mean_ref_prob - 0.25).abs() < 1e-6);
}
