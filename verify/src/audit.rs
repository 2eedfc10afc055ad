//! Running an audit: tokenize (the answer as the node split it, where that
//! checks out), one teacher-forced pass of the reference model with the
//! request's sampler replayed, per-token measures, verdict; and where that
//! verdict shows the marks of a changed context, a second pass after the
//! rival context's prompt, and the verdict again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tollgate_engine::{Engine, EngineError, Replay};

use crate::claim::{Claim, ReportedToken, ALTERNATIVES};
use crate::position::Position;
use crate::rival;
use crate::stats::{judge, rival_wanted, Mode, Thresholds, Verdict};

/// Re-splits of the text an audit tries before judging (each costs a pass).
const MAX_RESPLITS: usize = 8;

/// How many of the reference's best tokens a node's reported alternatives
/// are looked up among (the most an engine reports): an honest node's
/// alternatives are nearly always there.
const REFERENCE_DEPTH: usize = tollgate_engine::logits::MAX_TOP;

/// U+FFFD in UTF-8: where a generator's text lost bytes it could not spell.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Whether a token's bytes could start the rest of the text, up to the
/// text's end (a stop sequence may cut a token) and, at its start, leading
/// whitespace (a generator may trim it); an empty token (a special one)
/// always could.
fn spells_same_text(token: &[u8], rest: &[u8], at_start: bool) -> bool {
    let (token, rest) = if at_start {
        (token.trim_ascii_start(), rest.trim_ascii_start())
    } else {
        (token, rest)
    };
    rest.starts_with(token) || token.starts_with(rest)
}

/// Why an audit could not run (the answer is neither passed nor failed).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The reference engine is not the model the node claims.
    #[error("the reference model is {reference}, the node claims {claimed}")]
    WrongReference {
        /// sha256 of the reference GGUF.
        reference: String,
        /// sha256 the node claims.
        claimed: String,
    },
    /// The reference engine could not tokenize or score.
    #[error("reference engine: {0}")]
    Engine(#[from] EngineError),
}

/// The result of one audit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// Per completion token measures.
    pub positions: Vec<Position>,
    /// Prompt tokens the reference saw.
    pub prompt_tokens: usize,
    /// Time spent in the reference passes and the statistics.
    pub elapsed: Duration,
    /// Whether the answer called for the rival pass ([`rival_wanted`]) and
    /// had a rival context to score.
    pub rival_wanted: bool,
    /// Time spent in the rival pass (zero where it did not run).
    pub rival_elapsed: Duration,
}

/// When an audit scores the rival context ([`crate::rival`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RivalPass {
    /// Where the first pass calls for it ([`rival_wanted`]): what the
    /// gateway runs.
    AsNeeded,
    /// On every answer with a rival context, to measure how honest nodes
    /// lean (a benchmark's calibration).
    Always,
}

/// Audits answers against a reference engine.
#[derive(Clone)]
pub struct Auditor {
    engine: Arc<Engine>,
    thresholds: Thresholds,
}

impl Auditor {
    /// Audits with `engine` as the reference.
    pub fn new(engine: Arc<Engine>, thresholds: Thresholds) -> Self {
        Self { engine, thresholds }
    }

    /// The reference engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Audits a claim of a node that says it serves the GGUF file with
    /// sha256 `model_sha256`. `replayable_sampler` says whether the node's
    /// sampler is Tollgate's (seeded draws can then be replayed).
    pub async fn audit(
        &self,
        claim: &Claim,
        model_sha256: &str,
        replayable_sampler: bool,
    ) -> Result<Report, AuditError> {
        self.audit_with(claim, model_sha256, replayable_sampler, RivalPass::AsNeeded)
            .await
    }

    /// [`Self::audit`], with the rival pass run as `rival` says.
    pub async fn audit_with(
        &self,
        claim: &Claim,
        model_sha256: &str,
        replayable_sampler: bool,
        rival: RivalPass,
    ) -> Result<Report, AuditError> {
        let started = Instant::now();
        if !model_sha256.eq_ignore_ascii_case(self.engine.sha256()) {
            return Err(AuditError::WrongReference {
                reference: self.engine.sha256().to_string(),
                claimed: model_sha256.to_string(),
            });
        }
        let sampling = Engine::sampling_of(&claim.request).map_err(EngineError::from)?;
        let mode = if sampling.is_greedy() {
            Mode::Greedy
        } else if sampling.seed.is_some() && replayable_sampler {
            Mode::Seeded
        } else {
            Mode::Unreplayable
        };
        // The prompt is the claimed model's own tokenization of the request.
        // The answer is split as the node says it generated it where that
        // split checks out, else by the claimed model's tokenizer.
        let prompt = self.engine.tokenize_chat(&claim.request).await?;
        let node_split = claim
            .logprobs
            .as_deref()
            .and_then(|reported| self.node_split(reported, &claim.text));
        let own_split = node_split.is_some();
        let mut completion = match node_split {
            Some(split) => split,
            None => self.engine.tokenize_text(&claim.text).await?,
        };
        let replay = (mode != Mode::Unreplayable).then_some(Replay {
            from: prompt.len(),
            sampling,
            choice: 0,
        });
        let mut resplits = 0;
        let mut tried = std::collections::HashSet::new();
        let scores = loop {
            let mut tokens = prompt.clone();
            tokens.extend(&completion);
            // Only the answer is judged: the prompt's positions are skipped.
            let scores = self
                .engine
                .score_from(tokens, prompt.len(), REFERENCE_DEPTH, replay.clone())
                .await?;
            // The node's own split is judged as it is: re-splitting guesses
            // at a split nobody reported.
            if own_split || resplits == MAX_RESPLITS {
                break scores;
            }
            match self
                .resplit(&completion, &scores.positions, &claim.text, &mut tried)
                .await?
            {
                Some(better) => {
                    completion = better;
                    resplits += 1;
                }
                None => break scores,
            }
        };
        let reported = match claim.logprobs.as_deref() {
            // The node's own split is its report, token for token.
            Some(r) if own_split => r.iter().map(Reported::of).collect(),
            Some(r) => self.align(r, &completion, &claim.text),
            None => vec![Reported::default(); completion.len()],
        };
        let judged = &scores.positions;
        // In the node's own split no other split can have parted from the
        // node's: every position is surely its own.
        let splits = if own_split {
            vec![false; completion.len()]
        } else {
            self.other_splits(&completion, judged, &claim.text)
        };
        // Without token bytes from the reference nothing is paired and
        // nothing counted.
        let claimed: Vec<Option<ByBytes>> = judged
            .iter()
            .zip(&reported)
            .map(|(s, r)| {
                (!r.top_bytes.is_empty())
                    .then(|| self.by_bytes(&s.top))
                    .flatten()
            })
            .collect();
        let mut positions: Vec<Position> = judged
            .iter()
            .zip(&reported)
            .zip(splits)
            .zip(&claimed)
            .map(|(((s, reported), other_split), claimed)| {
                let (paired, unpaired) = claimed.as_ref().map_or_else(
                    || (Vec::new(), 0),
                    |c| pair_by_bytes(&reported.top, &reported.top_bytes, c),
                );
                Position {
                    claimed: s.token,
                    ref_logprob: s.logprob,
                    ref_best: s.argmax,
                    ref_best_logprob: s.top.first().map_or(s.logprob, |t| t.1),
                    replayed: s.replayed,
                    reported_logprob: reported.logprob,
                    other_split,
                    paired,
                    unpaired,
                    reported_top: reported.top.clone(),
                    ref_top: s.top.iter().take(ALTERNATIVES).map(|t| t.1).collect(),
                    rival: Vec::new(),
                }
            })
            .collect();
        let mut verdict = judge(&positions, mode, &self.thresholds);
        // The rival pass costs as much as the first; it runs where no test
        // failed the answer but the node already weighs its alternatives
        // otherwise than the claimed model at more tokens than usual. Only
        // tokens both the node and the reference name by their bytes can be
        // placed between the two contexts.
        let rival_request =
            rival::without_system(&claim.request).filter(|_| claimed.iter().any(Option::is_some));
        let wanted = rival_request.is_some() && rival_wanted(&verdict, &self.thresholds);
        let mut rival_elapsed = Duration::ZERO;
        if let Some(request) = rival_request.filter(|_| wanted || rival == RivalPass::Always) {
            let rival_started = Instant::now();
            // The rival pass can only add a failure: where the reference
            // cannot score it, the first verdict stands.
            match self.rival_scores(&request, &prompt, &completion).await {
                Ok(Some(rival)) => {
                    for ((p, r), (reported, claimed)) in positions
                        .iter_mut()
                        .zip(&rival)
                        .zip(reported.iter().zip(&claimed))
                    {
                        let Some(c) = claimed else { continue };
                        if let Some(r) = self.by_bytes(&r.top) {
                            p.rival = contrast_by_bytes(&reported.top, &reported.top_bytes, c, &r);
                        }
                    }
                    verdict = judge(&positions, mode, &self.thresholds);
                    rival_elapsed = rival_started.elapsed();
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("the rival pass could not run: {e}"),
            }
        }
        Ok(Report {
            verdict,
            positions,
            prompt_tokens: prompt.len(),
            elapsed: started.elapsed(),
            rival_wanted: wanted,
            rival_elapsed,
        })
    }

    /// The node's own split of the answer: its reported tokens, where they
    /// spell exactly the returned text and each is one token of the claimed
    /// model's vocabulary. A sampler may draw a split the tokenizer would
    /// not make ("Par" + "is" for "Paris"); scoring the tokenizer's split then
    /// puts the reference in another context than the node's from there on,
    /// and every later position looks off. The split is only the context
    /// the node claims; its tokens and log-probs are judged like any others,
    /// so an invented split gains a cheat nothing.
    fn node_split(&self, reported: &[ReportedToken], text: &str) -> Option<Vec<u32>> {
        let mut spelled = Vec::with_capacity(text.len());
        let split = reported
            .iter()
            .map(|t| {
                spelled.extend_from_slice(&t.bytes);
                self.engine.token_spelled(&t.bytes)
            })
            .collect::<Option<Vec<u32>>>()?;
        (!split.is_empty() && spelled == text.as_bytes()).then_some(split)
    }

    /// Where the node's report gives no split to take: a generator does not
    /// always split its text as the tokenizer would (sampling "Par" then
    /// "is" where the tokenizer says "Paris"); after
    /// such a split the replay judges other tokens than were drawn, and a
    /// seeded replay's random stream falls out of step. So where the replay
    /// first picks a token other than the claimed one and that token also
    /// spells the text at this point, the text is re-split there the way the
    /// model's own sampler went. The split follows only the reference's
    /// choices, so a text the claimed model would not write gains nothing.
    async fn resplit(
        &self,
        completion: &[u32],
        judged: &[tollgate_engine::PositionScore],
        text: &str,
        tried: &mut std::collections::HashSet<(usize, u32)>,
    ) -> Result<Option<Vec<u32>>, AuditError> {
        let Some(pieces) = self.engine.pieces(completion) else {
            return Ok(None);
        };
        let tolerance = self.thresholds.tie_tolerance;
        let starts: Vec<usize> = pieces
            .iter()
            .scan(0usize, |at, p| {
                let start = *at;
                *at += p.len();
                Some(start)
            })
            .collect();
        // The first miss rounding does not explain.
        let Some(t) = judged.iter().position(|s| {
            s.replayed
                .is_some_and(|r| r.token != s.token && r.margin > tolerance)
        }) else {
            return Ok(None);
        };
        // Re-split there with the pick or a near runner-up; failing that, at
        // the nearest earlier near-tie, whose other side may be what the
        // node drew (its text then splits differently from there on).
        for u in (t.saturating_sub(8)..=t).rev() {
            let (Some(s), Some(&start)) = (judged.get(u), starts.get(u)) else {
                continue;
            };
            let Some(r) = s.replayed else { continue };
            let near = r
                .runner_up
                .filter(|&(_, gap)| gap <= tolerance)
                .map(|(token, _)| token);
            let pick = (u == t).then_some(r.token);
            let rest = &text.as_bytes()[start.min(text.len())..];
            for alt in pick
                .into_iter()
                .chain(near)
                .chain((u < t).then_some(r.token))
            {
                if alt == s.token || !tried.insert((u, alt)) {
                    continue;
                }
                let Some(alt_bytes) = self
                    .engine
                    .pieces(&[alt])
                    .and_then(|p| p.into_iter().next())
                else {
                    continue;
                };
                if alt_bytes.is_empty() || !rest.starts_with(&alt_bytes) {
                    continue;
                }
                let Ok(tail) = std::str::from_utf8(&rest[alt_bytes.len()..]) else {
                    continue;
                };
                let mut split = completion[..u].to_vec();
                split.push(alt);
                split.extend(self.engine.tokenize_text(tail).await?);
                return Ok(Some(split));
            }
        }
        Ok(None)
    }

    /// Per judged position, whether another token the node may have drawn
    /// there (the replayed pick, or a runner-up within the tie tolerance)
    /// spells the same text, so that the node's split may part from the
    /// audit's there ([`Position::other_split`]). Without a replay or token
    /// bytes nothing is known, and every position may be split otherwise.
    fn other_splits(
        &self,
        completion: &[u32],
        judged: &[tollgate_engine::PositionScore],
        text: &str,
    ) -> Vec<bool> {
        let Some(pieces) = self.engine.pieces(completion) else {
            return vec![true; completion.len()];
        };
        let tolerance = self.thresholds.tie_tolerance;
        let text = text.as_bytes();
        let mut at = 0usize;
        pieces
            .iter()
            .zip(judged)
            .map(|(piece, s)| {
                let rest = text.get(at..).unwrap_or_default();
                let span = &rest[..(piece.len() + REPLACEMENT.len()).min(rest.len())];
                let at_start = at == 0;
                at += piece.len();
                let Some(r) = s.replayed else { return true };
                // Text a generator could not spell in UTF-8 lost its bytes:
                // nothing says how the node split it.
                if span.windows(REPLACEMENT.len()).any(|w| w == REPLACEMENT) {
                    return true;
                }
                let near = r
                    .runner_up
                    .filter(|&(_, gap)| gap <= tolerance)
                    .map(|(token, _)| token);
                [Some(r.token), near]
                    .into_iter()
                    .flatten()
                    .filter(|&alt| alt != s.token)
                    .any(|alt| {
                        self.engine
                            .pieces(&[alt])
                            .and_then(|p| p.into_iter().next())
                            .is_none_or(|bytes| spells_same_text(&bytes, rest, at_start))
                    })
            })
            .collect()
    }

    /// The reference's best `top` by their tokens' bytes ([`ByBytes`]);
    /// `None` where the reference cannot name tokens' bytes.
    fn by_bytes(&self, top: &[(u32, f32)]) -> Option<ByBytes> {
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        let pieces = self.engine.pieces(&ids)?;
        Some(index_by_bytes(
            pieces.into_iter().zip(top.iter().map(|t| t.1)),
        ))
    }

    /// The reference's scores of the answer after the rival context's
    /// prompt (`request`, [`crate::rival`]); `None` where that prompt is the
    /// claimed one (a template that puts its own system prompt first).
    async fn rival_scores(
        &self,
        request: &serde_json::Value,
        prompt: &[u32],
        completion: &[u32],
    ) -> Result<Option<Vec<tollgate_engine::PositionScore>>, AuditError> {
        let mut tokens = self.engine.tokenize_chat(request).await?;
        if tokens == prompt {
            return Ok(None);
        }
        let from = tokens.len();
        tokens.extend(completion);
        let scores = self
            .engine
            .score_from(tokens, from, REFERENCE_DEPTH, None)
            .await?;
        Ok(Some(scores.positions))
    }

    /// Lines the node's reported tokens up with the re-tokenized ones: a
    /// reported log-prob is compared where a reported token covers the same
    /// bytes as a re-tokenized one. Reported tokens that do not spell the
    /// returned text are lies about it: they line up with every position
    /// as an impossible log-prob, so the log-prob test counts them.
    fn align(&self, reported: &[ReportedToken], completion: &[u32], text: &str) -> Vec<Reported> {
        let spelled: Vec<u8> = reported
            .iter()
            .flat_map(|t| t.bytes.iter().copied())
            .collect();
        if spelled != text.as_bytes() {
            let lie = Reported {
                logprob: Some(f32::NAN),
                ..Reported::default()
            };
            return vec![lie; completion.len()];
        }
        let Some(pieces) = self.engine.pieces(completion) else {
            // Without token bytes only a one-to-one split can be compared.
            return if reported.len() == completion.len() {
                reported.iter().map(Reported::of).collect()
            } else {
                vec![Reported::default(); completion.len()]
            };
        };
        let mut by_span = std::collections::HashMap::new();
        let mut at = 0usize;
        for t in reported {
            by_span.insert((at, t.bytes.len()), t);
            at += t.bytes.len();
        }
        let mut at = 0usize;
        pieces
            .iter()
            .map(|p| {
                let found = by_span
                    .get(&(at, p.len()))
                    .map_or_else(Reported::default, |t| Reported::of(t));
                at += p.len();
                found
            })
            .collect()
    }
}

/// Reference log-probs by their tokens' bytes (`None`: bytes several
/// tokens share, which name no token surely).
type ByBytes = std::collections::HashMap<Vec<u8>, Option<f32>>;

/// Indexes (bytes, log-prob) of the reference's best tokens by bytes.
fn index_by_bytes(tokens: impl Iterator<Item = (Vec<u8>, f32)>) -> ByBytes {
    let mut map = ByBytes::new();
    for (bytes, logprob) in tokens {
        map.entry(bytes)
            .and_modify(|v| *v = None)
            .or_insert(Some(logprob));
    }
    map
}

/// Pairs reported alternatives (log-probs `top`, bytes `top_bytes`) with the
/// reference's log-probs of the tokens spelled the same, as (reported,
/// reference), and counts the alternatives spelled like none of the
/// reference's best. Tokens without bytes (special ones) and ambiguous
/// bytes are neither paired nor counted.
fn pair_by_bytes(
    top: &[f32],
    top_bytes: &[Vec<u8>],
    reference: &ByBytes,
) -> (Vec<(f32, f32)>, usize) {
    let mut paired = Vec::new();
    let mut unpaired = 0;
    for (bytes, &reported) in top_bytes.iter().zip(top) {
        if bytes.is_empty() {
            continue;
        }
        match reference.get(bytes) {
            Some(Some(reference)) => paired.push((reported, *reference)),
            Some(None) => {}
            None => unpaired += 1,
        }
    }
    (paired, unpaired)
}

/// The reported alternatives that both the claimed context and the rival
/// one rank among their best, as (reported, claimed's, rival's) log-prob.
fn contrast_by_bytes(
    top: &[f32],
    top_bytes: &[Vec<u8>],
    claimed: &ByBytes,
    rival: &ByBytes,
) -> Vec<[f32; 3]> {
    top_bytes
        .iter()
        .zip(top)
        .filter(|(bytes, _)| !bytes.is_empty())
        .filter_map(|(bytes, &reported)| {
            let (Some(Some(c)), Some(Some(r))) = (claimed.get(bytes), rival.get(bytes)) else {
                return None;
            };
            Some([reported, *c, *r])
        })
        .collect()
}

/// What the node reported at one re-tokenized position.
#[derive(Clone, Debug, Default)]
struct Reported {
    logprob: Option<f32>,
    top: Vec<f32>,
    top_bytes: Vec<Vec<u8>>,
}

impl Reported {
    fn of(t: &ReportedToken) -> Self {
        Self {
            logprob: Some(t.logprob),
            top: t.top.clone(),
            top_bytes: t.top_bytes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{contrast_by_bytes, index_by_bytes, pair_by_bytes, spells_same_text, ByBytes};

    fn bytes(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn index(tokens: &[(&str, f32)]) -> ByBytes {
        index_by_bytes(tokens.iter().map(|(w, lp)| (w.as_bytes().to_vec(), *lp)))
    }

    #[test]
    fn alternatives_pair_with_the_reference_token_spelled_the_same() {
        let reference = index(&[
            (" the", -0.2),
            (" a", -1.9),
            ("", -3.0),
            (" an", -3.5),
            (" an", -6.0),
            (" this", -4.0),
        ]);
        // Order follows the node's report. A special token (no bytes) and
        // bytes two of the reference's tokens share pair with nothing; a
        // token the reference does not rank among its best is counted.
        let top = [-1.8, -0.25, -3.1, -3.4, -5.0, -3.9];
        let top_bytes = bytes(&[" a", " the", "", " an", " that", " this"]);
        assert_eq!(
            pair_by_bytes(&top, &top_bytes, &reference),
            (vec![(-1.8, -1.9), (-0.25, -0.2), (-3.9, -4.0)], 1)
        );
        // Fewer bytes than log-probs (a malformed report) pair as far as
        // both go.
        assert_eq!(
            pair_by_bytes(&top, &bytes(&[" a"]), &reference),
            (vec![(-1.8, -1.9)], 0)
        );
        assert_eq!(pair_by_bytes(&top, &[], &reference), (Vec::new(), 0));
    }

    #[test]
    fn the_rival_contrast_takes_tokens_both_contexts_rank() {
        let claimed = index(&[(" the", -0.2), (" a", -1.9), (" an", -3.5), (" this", -4.0)]);
        let rival = index(&[(" the", -0.3), (" a", -1.5), (" an", -3.6), (" an", -7.0)]);
        let top = [-0.25, -1.8, -3.4, -3.9, -5.0];
        let top_bytes = bytes(&[" the", " a", " an", " this", ""]);
        // " an" is ambiguous in the rival, " this" is not among its best,
        // and a special token names nothing.
        assert_eq!(
            contrast_by_bytes(&top, &top_bytes, &claimed, &rival),
            vec![[-0.25, -0.2, -0.3], [-1.8, -1.9, -1.5]]
        );
    }

    #[test]
    fn another_split_of_the_same_text_is_told_from_other_words() {
        // "Par" + "is" against "Paris": the same text.
        assert!(spells_same_text(b"Par", b"Paris is", false));
        assert!(spells_same_text(b"Paris", b"Paris is", false));
        // A stop sequence cut the text inside the pick.
        assert!(spells_same_text(b" world", b" wor", false));
        // A special token (no bytes) may stand for anything.
        assert!(spells_same_text(b"", b"Arr", false));
        // Other words.
        assert!(!spells_same_text(b"Arr", b"Photosynthesis", false));
        assert!(!spells_same_text(b"\n", b" The", false));
        // Only the answer's start may have lost its leading whitespace.
        assert!(spells_same_text(b" Arr", b"Arr, matey", true));
        assert!(!spells_same_text(b" Arr", b"Arr, matey", false));
    }
}
