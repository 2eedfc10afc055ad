//! The Rust receipt leaf and Merkle tree reproduce the root the Solidity test
//! `test_knownAnswer_fiveReceipts` checks on chain (computed there by the
//! contract itself), so off-chain proofs verify on chain.

use alloy::primitives::{keccak256, Address, B256, U256};
use sha2::{Digest, Sha256};
use tollgate_contracts::bindings::Settlement;
use tollgate_contracts::merkle::{verify, MerkleTree};
use tollgate_contracts::receipt::leaf;
use tollgate_ledger::Receipt;

#[test]
fn five_receipts_give_the_contracts_leaves_and_root() {
    let expected_leaf0: B256 = "0xd3797f1fca6dfc4fafa3b4f2f01d49eff689b0259ac0ec18e8b36ef8ae7137ed"
        .parse()
        .unwrap();
    let expected_leaf4: B256 = "0xda724897460172b4be7988a57bde1ff0c9793917dca846e0f99da95a265d92c0"
        .parse()
        .unwrap();
    let expected_root: B256 = "0xb74a072d336cd0b32b631a7178463dd4391848deffb0b64775bec1dc0fe4bd17"
        .parse()
        .unwrap();
    let (pin, pout) = (150_000_000_000_000_000u128, 600_000_000_000_000_000u128);
    let leaves: Vec<B256> = (0u64..5)
        .map(|i| {
            let (prompt, completion) = (100 + 7 * i, 20 + 3 * i);
            let r = Settlement::Receipt {
                requestId: keccak256(format!("req-{i}")),
                payer: Address::from_word(B256::from(U256::from(0x1000 + i % 2))),
                provider: Address::from_word(B256::from(U256::from(0x2000 + i % 3))),
                model: keccak256("smollm2-135m-instruct"),
                promptTokens: prompt,
                completionTokens: completion,
                priceInPer1M: U256::from(pin),
                priceOutPer1M: U256::from(pout),
                amount: U256::from(Receipt::amount_for(prompt, completion, pin, pout)),
                responseHash: B256::from_slice(&Sha256::digest(format!("response-{i}"))),
            };
            leaf(&r)
        })
        .collect();
    assert_eq!(leaves[0], expected_leaf0);
    assert_eq!(leaves[4], expected_leaf4);
    let tree = MerkleTree::new(leaves.clone()).unwrap();
    assert_eq!(tree.root(), expected_root);
    assert_eq!(tree.proof(4).unwrap().len(), 1, "the carried fifth leaf");
    for (i, l) in leaves.iter().enumerate() {
        assert!(verify(&tree.proof(i).unwrap(), expected_root, *l));
    }
}
