//! Which running stages make a chain: spans that are already loaded, joined
//! end to start so they cover every block of the model.
//!
//! [`crate::chain::plan_chain`] decides which spans nodes *should* load;
//! this module works with what a pool of stages *has* loaded. It picks the
//! chain with the fewest stages (every stage is one more network hop per
//! token), the earliest-listed stage among equals (the operator's order is
//! their preference), and keeps every other stage with exactly the same
//! span as a spare for that link, since a spare must slot in where the dead
//! stage was without moving any boundary.

use std::collections::VecDeque;
use std::ops::Range;

/// A chain over a pool of stages, by index into the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// The stages, in chain order.
    pub chain: Vec<usize>,
    /// For each link of the chain, the stages that can replace it, in pool order.
    pub spares: Vec<Vec<usize>>,
}

/// Why no chain exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TilingError {
    /// The model has no blocks.
    #[error("the model has no blocks")]
    NoLayers,
    /// Some span is empty, reversed, or runs past the model.
    #[error("stage {index} serves blocks {span:?}, which is not a span of 0..{layers}")]
    BadSpan {
        /// The stage's index in the pool.
        index: usize,
        /// What it claims.
        span: Range<u32>,
        /// Blocks in the model.
        layers: u32,
    },
    /// The spans leave a gap.
    #[error(
        "no stage in the pool starts at block {at}, so blocks {at}..{layers} cannot be reached"
    )]
    Gap {
        /// The first block no chain reaches.
        at: u32,
        /// Blocks in the model.
        layers: u32,
    },
}

/// The shortest chain of `spans` covering blocks `0..layers`.
pub fn tile(spans: &[Range<u32>], layers: u32) -> Result<Tiling, TilingError> {
    if layers == 0 {
        return Err(TilingError::NoLayers);
    }
    for (index, span) in spans.iter().enumerate() {
        if span.start >= span.end || span.end > layers {
            return Err(TilingError::BadSpan {
                index,
                span: span.clone(),
                layers,
            });
        }
    }
    // Breadth-first over block boundaries: the first time a boundary is
    // reached is by the fewest stages, and scanning the pool in order makes
    // the earliest-listed stage win among equals.
    let n = layers as usize;
    let mut via: Vec<Option<usize>> = vec![None; n + 1];
    let mut seen = vec![false; n + 1];
    seen[0] = true;
    let mut queue = VecDeque::from([0u32]);
    while let Some(at) = queue.pop_front() {
        for (i, span) in spans.iter().enumerate() {
            let end = span.end as usize;
            if span.start == at && !seen[end] {
                seen[end] = true;
                via[end] = Some(i);
                queue.push_back(span.end);
            }
        }
    }
    if !seen[n] {
        let at = (0..=n).rev().find(|&b| seen[b]).unwrap_or(0) as u32;
        return Err(TilingError::Gap { at, layers });
    }
    let mut chain = Vec::new();
    let mut at = n;
    while at > 0 {
        let Some(i) = via[at] else {
            return Err(TilingError::Gap { at: 0, layers });
        };
        chain.push(i);
        at = spans[i].start as usize;
    }
    chain.reverse();
    let spares = chain
        .iter()
        .map(|&c| {
            (0..spans.len())
                .filter(|&j| j != c && spans[j] == spans[c])
                .collect()
        })
        .collect();
    Ok(Tiling { chain, spares })
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // pools of one span are meant
mod tests {
    use super::*;

    #[test]
    fn three_even_spans_with_a_spare_for_the_middle() {
        let pool = [0..10, 10..20, 20..30, 10..20];
        let t = tile(&pool, 30).unwrap();
        assert_eq!(t.chain, vec![0, 1, 2]);
        assert_eq!(t.spares, vec![vec![], vec![3], vec![]]);
    }

    #[test]
    fn fewest_stages_win_and_order_breaks_ties() {
        // 0..30 alone beats any split; among two-stage chains the earlier
        // listed stages win.
        assert_eq!(tile(&[0..15, 15..30, 0..30], 30).unwrap().chain, vec![2]);
        let t = tile(&[0..10, 0..15, 15..30, 10..30], 30).unwrap();
        assert_eq!(t.chain, vec![0, 3]);
        // A longer chain is taken when it is the only one.
        assert_eq!(
            tile(&[0..5, 5..12, 12..30, 0..12], 30).unwrap().chain,
            vec![3, 2]
        );
    }

    #[test]
    fn overlapping_spans_that_do_not_meet_leave_a_gap() {
        // 0..12 then 10..30 overlap but no stage starts at 12.
        assert_eq!(
            tile(&[0..12, 10..30], 30),
            Err(TilingError::Gap { at: 12, layers: 30 })
        );
        assert_eq!(tile(&[], 30), Err(TilingError::Gap { at: 0, layers: 30 }));
        assert_eq!(
            tile(&[0..10, 20..30], 30),
            Err(TilingError::Gap { at: 10, layers: 30 })
        );
    }

    #[test]
    fn impossible_spans_are_refused() {
        assert_eq!(tile(&[0..30], 0), Err(TilingError::NoLayers));
        assert!(matches!(
            tile(&[0..10, 10..31], 30),
            Err(TilingError::BadSpan { index: 1, .. })
        ));
        assert!(matches!(
            tile(&[5..5], 30),
            Err(TilingError::BadSpan { index: 0, .. })
        ));
    }

    /// Every chain returned covers 0..layers exactly, and no chain with
    /// fewer stages exists (checked against brute force on small pools).
    #[test]
    fn chains_are_exact_covers_of_minimal_length() {
        let layers = 6u32;
        let all: Vec<Range<u32>> = (0..layers)
            .flat_map(|a| (a + 1..=layers).map(move |b| a..b))
            .collect();
        // Every pool of up to 3 spans drawn from all spans of a 6-block model.
        for x in 0..all.len() {
            for y in x..all.len() {
                for z in y..all.len() {
                    let pool = [all[x].clone(), all[y].clone(), all[z].clone()];
                    let best = brute_force(&pool, layers);
                    match tile(&pool, layers) {
                        Ok(t) => {
                            let mut at = 0;
                            for &i in &t.chain {
                                assert_eq!(pool[i].start, at, "{pool:?}");
                                at = pool[i].end;
                            }
                            assert_eq!(at, layers, "{pool:?}");
                            assert_eq!(Some(t.chain.len()), best, "{pool:?}");
                        }
                        Err(_) => assert_eq!(best, None, "{pool:?}"),
                    }
                }
            }
        }
    }

    fn brute_force(pool: &[Range<u32>], layers: u32) -> Option<usize> {
        (1u32..1 << pool.len())
            .filter_map(|mask| {
                let mut picked: Vec<&Range<u32>> = (0..pool.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| &pool[i])
                    .collect();
                picked.sort_by_key(|r| r.start);
                let mut at = 0;
                for r in &picked {
                    if r.start != at {
                        return None;
                    }
                    at = r.end;
                }
                (at == layers).then_some(picked.len())
            })
            .min()
    }
}
