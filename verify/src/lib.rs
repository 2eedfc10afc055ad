//! Trust without trusting: Tollgate's audits of untrusted nodes.
//!
//! A node's completion is a claim. An audit tokenizes the returned text
//! with the claimed model's vocabulary (as the node split it, where its
//! reported tokens spell exactly that text) and runs the reference model (loaded
//! from the very GGUF file the node pins by hash) once, teacher-forced over
//! prompt + completion, as the verify step of speculative decoding does.
//! Where the request was greedy or seeded, the request's own sampler is
//! replayed on the reference logits, so an honest node's tokens are
//! reproduced exactly except at near-ties; the node's reported log-probs are
//! checked against the reference's, and so are its best alternatives.
//! Where those show the marks of a changed context, a second pass scores
//! the answer after the request without its system prompt, and a report
//! nearer that [`rival`] context than the claimed one fails.
//! [`position`] holds what is known of each token; [`stats`] turns these
//! per-token measures into a [`Verdict`] whose false-positive probability is bounded;
//! [`history`] pools a node's recent audits so that errors too few to fail
//! one answer still add up; [`trust`] folds verdicts into a per-node score;
//! [`evidence`] is what a failed audit leaves for slashing.
//!
//! Everything except [`audit`] is pure.

pub mod audit;
pub mod binomial;
pub mod claim;
pub mod evidence;
pub mod history;
pub mod position;
pub mod rival;
pub mod schedule;
pub mod stats;
pub mod trust;

pub use audit::{AuditError, Auditor, Report, RivalPass};
pub use claim::{Claim, ClaimBuilder, ReportedToken};
pub use evidence::{Earlier, Evidence, EvidenceError, Signed};
pub use history::{History, Pooled};
pub use position::Position;
pub use schedule::Schedule;
pub use stats::{Mode, Outcome, Thresholds, Verdict};
pub use trust::Trust;
