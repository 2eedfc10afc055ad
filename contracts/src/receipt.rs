//! A ledger receipt as the `Settlement` contract sees it, and invoice lines.

use std::collections::BTreeMap;

use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::sol_types::SolValue;
use tollgate_ledger::Receipt;

use crate::bindings::Settlement;

/// Why a receipt cannot go on chain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// The payer or provider is not a 20-byte hex address.
    #[error("receipt {request_id}: {field} '{value}' is not an address")]
    Address {
        /// The receipt.
        request_id: String,
        /// `payer` or `provider`.
        field: &'static str,
        /// What was there.
        value: String,
    },
    /// The response hash is not 32 bytes of hex.
    #[error("receipt {request_id}: response_hash '{value}' is not 32 bytes of hex")]
    ResponseHash {
        /// The receipt.
        request_id: String,
        /// What was there.
        value: String,
    },
    /// The amount is not tokens times prices.
    #[error("receipt {request_id}: amount {amount} is not tokens x prices ({expected})")]
    Amount {
        /// The receipt.
        request_id: String,
        /// What the receipt says.
        amount: u128,
        /// What the prices give.
        expected: u128,
    },
}

fn address(r: &Receipt, field: &'static str, value: &str) -> Result<Address, ReceiptError> {
    value.parse().map_err(|_| ReceiptError::Address {
        request_id: r.request_id.clone(),
        field,
        value: value.to_string(),
    })
}

/// The on-chain form of a receipt; refuses one whose amount is not its price.
pub fn onchain(r: &Receipt) -> Result<Settlement::Receipt, ReceiptError> {
    let expected = Receipt::amount_for(
        r.prompt_tokens,
        r.completion_tokens,
        r.price_in_per_1m,
        r.price_out_per_1m,
    );
    if r.amount != expected {
        return Err(ReceiptError::Amount {
            request_id: r.request_id.clone(),
            amount: r.amount,
            expected,
        });
    }
    let response_hash = hex::decode(r.response_hash.trim_start_matches("0x"))
        .ok()
        .filter(|b| b.len() == 32)
        .map(|b| B256::from_slice(&b))
        .ok_or_else(|| ReceiptError::ResponseHash {
            request_id: r.request_id.clone(),
            value: r.response_hash.clone(),
        })?;
    Ok(Settlement::Receipt {
        requestId: keccak256(r.request_id.as_bytes()),
        payer: address(r, "payer", &r.payer)?,
        provider: address(r, "provider", &r.provider)?,
        model: keccak256(r.model.as_bytes()),
        promptTokens: r.prompt_tokens,
        completionTokens: r.completion_tokens,
        priceInPer1M: U256::from(r.price_in_per_1m),
        priceOutPer1M: U256::from(r.price_out_per_1m),
        amount: U256::from(r.amount),
        responseHash: response_hash,
    })
}

/// The Merkle leaf: keccak256 of the ABI-encoded receipt, as on chain.
pub fn leaf(r: &Settlement::Receipt) -> B256 {
    keccak256(r.abi_encode())
}

/// The content-derived batch id: keccak256(abi.encode(root, count)).
pub fn batch_id(root: B256, receipt_count: u32) -> B256 {
    keccak256((root, receipt_count).abi_encode())
}

/// One invoice line per (payer, provider), sorted, amounts summed.
pub fn lines(receipts: &[Settlement::Receipt]) -> Vec<Settlement::Line> {
    let mut sums: BTreeMap<(Address, Address), U256> = BTreeMap::new();
    for r in receipts {
        *sums.entry((r.payer, r.provider)).or_default() += r.amount;
    }
    sums.into_iter()
        .map(|((payer, provider), amount)| Settlement::Line {
            payer,
            provider,
            amount,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_ledger::{Outcome, UsageSource};

    pub(crate) fn receipt(id: &str, payer: u8, provider: u8, completion: u64) -> Receipt {
        let (pin, pout) = (100_000_000_000_000_000u128, 200_000_000_000_000_000u128);
        Receipt {
            request_id: id.into(),
            account: "demo".into(),
            payer: Address::repeat_byte(payer).to_string(),
            node: "local".into(),
            provider: Address::repeat_byte(provider).to_string(),
            model: "smollm2".into(),
            prompt_tokens: 40,
            completion_tokens: completion,
            price_in_per_1m: pin,
            price_out_per_1m: pout,
            amount: Receipt::amount_for(40, completion, pin, pout),
            response_hash: "ab".repeat(32),
            outcome: Outcome::Completed,
            usage_source: UsageSource::Upstream,
            finished_at_ms: 1,
        }
    }

    #[test]
    fn onchain_form_hashes_ids_and_keeps_amounts() {
        let r = receipt("req-1", 1, 2, 7);
        let c = onchain(&r).unwrap();
        assert_eq!(c.requestId, keccak256("req-1"));
        assert_eq!(c.payer, Address::repeat_byte(1));
        assert_eq!(c.amount, U256::from(r.amount));
        assert_eq!(c.responseHash, B256::repeat_byte(0xab));
        // Ten 32-byte words, as Solidity's abi.encode of the struct.
        assert_eq!(c.abi_encode().len(), 320);
    }

    #[test]
    fn bad_receipts_are_refused_with_the_field_named() {
        let mut r = receipt("req-1", 1, 2, 7);
        r.payer = "acme".into();
        assert!(matches!(
            onchain(&r),
            Err(ReceiptError::Address { field: "payer", .. })
        ));
        let mut r = receipt("req-1", 1, 2, 7);
        r.response_hash = "abcd".into();
        assert!(matches!(
            onchain(&r),
            Err(ReceiptError::ResponseHash { .. })
        ));
        let mut r = receipt("req-1", 1, 2, 7);
        r.amount += 1;
        assert!(matches!(onchain(&r), Err(ReceiptError::Amount { .. })));
    }

    #[test]
    fn lines_sum_per_payer_and_provider_in_order() {
        let rs: Vec<_> = [(2, 9, 1), (1, 9, 2), (2, 9, 3), (1, 8, 4)]
            .iter()
            .map(|&(p, q, n)| onchain(&receipt(&format!("r{n}"), p, q, n)).unwrap())
            .collect();
        let ls = lines(&rs);
        let keys: Vec<_> = ls.iter().map(|l| (l.payer, l.provider)).collect();
        assert_eq!(
            keys,
            [
                (Address::repeat_byte(1), Address::repeat_byte(8)),
                (Address::repeat_byte(1), Address::repeat_byte(9)),
                (Address::repeat_byte(2), Address::repeat_byte(9)),
            ]
        );
        assert_eq!(ls[2].amount, rs[0].amount + rs[2].amount);
        let total: U256 = ls.iter().map(|l| l.amount).sum();
        assert_eq!(total, rs.iter().map(|r| r.amount).sum::<U256>());
    }
}
