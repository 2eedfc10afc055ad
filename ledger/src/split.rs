//! One request served by a chain of stages becomes one receipt per stage:
//! each stage's provider is paid for the share of the model's blocks it ran.
//!
//! Every part is an ordinary receipt (tokens × its own prices = its amount),
//! so parts settle on chain and prove by Merkle path like any other; they
//! share the request's id with a `.s<i>` suffix.

use crate::receipt::Receipt;

/// One stage's part in a request: who ran it and for how many blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageShare {
    /// The stage (its address), recorded as the part's node.
    pub stage: String,
    /// The address paid for its work.
    pub provider: String,
    /// The model blocks it ran.
    pub blocks: u32,
}

/// The receipt's prices divided among `shares` by blocks, one receipt per
/// stage. Each part's prices are rounded down and the last stage takes what
/// rounding left, so the parts' prices add up to the request's exactly, and
/// their amounts to the request's less at most one atto-unit per part.
/// No shares (or no blocks at all) leave the receipt whole.
pub fn split_by_blocks(receipt: &Receipt, shares: &[StageShare]) -> Vec<Receipt> {
    let total: u128 = shares.iter().map(|s| u128::from(s.blocks)).sum();
    if shares.is_empty() || total == 0 {
        return vec![receipt.clone()];
    }
    let mut left_in = receipt.price_in_per_1m;
    let mut left_out = receipt.price_out_per_1m;
    shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let (price_in, price_out) = if i + 1 == shares.len() {
                (left_in, left_out)
            } else {
                let part = |price: u128| {
                    price / total * u128::from(share.blocks)
                        + price % total * u128::from(share.blocks) / total
                };
                (
                    part(receipt.price_in_per_1m),
                    part(receipt.price_out_per_1m),
                )
            };
            left_in -= price_in;
            left_out -= price_out;
            Receipt {
                request_id: format!("{}.s{i}", receipt.request_id),
                node: format!("{}/{}", receipt.node, share.stage),
                provider: share.provider.clone(),
                price_in_per_1m: price_in,
                price_out_per_1m: price_out,
                amount: Receipt::amount_for(
                    receipt.prompt_tokens,
                    receipt.completion_tokens,
                    price_in,
                    price_out,
                ),
                ..receipt.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{Outcome, UsageSource};

    fn receipt(prompt: u64, completion: u64, price_in: u128, price_out: u128) -> Receipt {
        Receipt {
            request_id: "req-1".into(),
            account: "acme".into(),
            payer: "0x01".into(),
            node: "chain".into(),
            provider: "0x02".into(),
            model: "m".into(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            price_in_per_1m: price_in,
            price_out_per_1m: price_out,
            amount: Receipt::amount_for(prompt, completion, price_in, price_out),
            response_hash: "00".into(),
            outcome: Outcome::Completed,
            usage_source: UsageSource::Upstream,
            finished_at_ms: 1,
        }
    }

    fn shares(blocks: &[u32]) -> Vec<StageShare> {
        blocks
            .iter()
            .enumerate()
            .map(|(i, &b)| StageShare {
                stage: format!("10.0.0.{i}:9200"),
                provider: format!("0x0{i}"),
                blocks: b,
            })
            .collect()
    }

    #[test]
    fn three_even_stages_each_get_a_third() {
        let r = receipt(30, 12, 300_000, 900_000);
        let parts = split_by_blocks(&r, &shares(&[10, 10, 10]));
        let ids: Vec<_> = parts.iter().map(|p| p.request_id.as_str()).collect();
        assert_eq!(ids, ["req-1.s0", "req-1.s1", "req-1.s2"]);
        assert_eq!(parts[1].node, "chain/10.0.0.1:9200");
        assert_eq!(parts[2].provider, "0x02");
        for p in &parts {
            assert_eq!((p.price_in_per_1m, p.price_out_per_1m), (100_000, 300_000));
            assert_eq!(
                (p.prompt_tokens, p.completion_tokens, &p.account),
                (30, 12, &r.account)
            );
        }
    }

    #[test]
    fn prices_add_up_exactly_and_amounts_lose_at_most_an_atto_per_part() {
        let prices = [
            0u128,
            1,
            7,
            999_999,
            1_000_001,
            150_000_000_000_000_000,
            u128::MAX / 1_000_000_000,
        ];
        let spans: [&[u32]; 6] = [
            &[1],
            &[1, 1],
            &[3, 27],
            &[10, 10, 10],
            &[1, 0, 29],
            &[7, 8, 7, 8],
        ];
        for &price_in in &prices {
            for &price_out in &prices {
                for blocks in spans {
                    for (p, c) in [(0, 0), (1, 1), (36, 64), (4096, 1)] {
                        let r = receipt(p, c, price_in, price_out);
                        let parts = split_by_blocks(&r, &shares(blocks));
                        assert_eq!(parts.len(), blocks.len());
                        let sum_in: u128 = parts.iter().map(|x| x.price_in_per_1m).sum();
                        let sum_out: u128 = parts.iter().map(|x| x.price_out_per_1m).sum();
                        assert_eq!((sum_in, sum_out), (price_in, price_out));
                        let sum: u128 = parts.iter().map(|x| x.amount).sum();
                        assert!(sum <= r.amount && r.amount - sum < parts.len() as u128);
                        let total: u128 = blocks.iter().map(|&b| u128::from(b)).sum();
                        for (i, (x, &b)) in parts.iter().zip(blocks).enumerate() {
                            // Each part is a valid receipt: its amount is its price.
                            assert_eq!(
                                x.amount,
                                Receipt::amount_for(p, c, x.price_in_per_1m, x.price_out_per_1m)
                            );
                            // Shares follow blocks: rounded down, the last takes the rest.
                            if i + 1 < parts.len() {
                                // (These prices are small enough to multiply first.)
                                assert_eq!(x.price_in_per_1m, price_in * u128::from(b) / total);
                                assert_eq!(x.price_out_per_1m, price_out * u128::from(b) / total);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nothing_to_split_leaves_the_receipt_whole() {
        let r = receipt(3, 4, 10, 20);
        assert_eq!(split_by_blocks(&r, &[]), vec![r.clone()]);
        assert_eq!(split_by_blocks(&r, &shares(&[0, 0])), vec![r]);
    }
}
