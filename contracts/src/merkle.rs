//! The receipt Merkle tree, built exactly as the `Settlement` contract checks it.
//!
//! Leaves stay in the order given. Each level hashes pairs (i, i+1) with the
//! sorted-pair keccak256 of OpenZeppelin's `MerkleProof`; an odd last node is
//! carried up unchanged, so its proof simply has no element for that level.
//! Sorted pairs mean a proof needs no left/right flags.

use alloy::primitives::{keccak256, B256};

/// keccak256 of the two nodes in ascending order (OpenZeppelin's commutative hash).
pub fn hash_pair(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// Every level of a tree, leaves first, root last.
#[derive(Clone, Debug)]
pub struct MerkleTree {
    levels: Vec<Vec<B256>>,
}

impl MerkleTree {
    /// Builds the tree; `None` for no leaves (an invoice has at least one).
    pub fn new(leaves: Vec<B256>) -> Option<Self> {
        if leaves.is_empty() {
            return None;
        }
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => hash_pair(*a, *b),
                    [carried] => *carried,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(next);
        }
        Some(Self { levels })
    }

    /// The root.
    pub fn root(&self) -> B256 {
        self.levels.last().map(|l| l[0]).unwrap_or_default()
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.levels[0].len()
    }

    /// Always false: a tree has at least one leaf.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The sibling path of leaf `index`, bottom up; `None` past the end.
    pub fn proof(&self, index: usize) -> Option<Vec<B256>> {
        if index >= self.len() {
            return None;
        }
        let mut proof = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(i ^ 1) {
                proof.push(*sibling);
            }
            i /= 2;
        }
        Some(proof)
    }
}

/// Whether `proof` puts `leaf` under `root` (what the contract computes).
pub fn verify(proof: &[B256], root: B256, leaf: B256) -> bool {
    proof
        .iter()
        .fold(leaf, |node, sibling| hash_pair(node, *sibling))
        == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(i: u64) -> B256 {
        keccak256(i.to_be_bytes())
    }

    #[test]
    fn one_leaf_is_its_own_root_with_an_empty_proof() {
        let t = MerkleTree::new(vec![leaf(1)]).unwrap();
        assert_eq!(t.root(), leaf(1));
        assert_eq!(t.proof(0).unwrap(), Vec::<B256>::new());
        assert!(t.proof(1).is_none());
        assert!(MerkleTree::new(vec![]).is_none());
    }

    #[test]
    fn three_leaves_carry_the_odd_one() {
        let (a, b, c) = (leaf(1), leaf(2), leaf(3));
        let t = MerkleTree::new(vec![a, b, c]).unwrap();
        assert_eq!(t.root(), hash_pair(hash_pair(a, b), c));
        assert_eq!(t.proof(2).unwrap(), vec![hash_pair(a, b)]);
        assert_eq!(t.proof(0).unwrap(), vec![b, c]);
    }

    #[test]
    fn pair_hash_is_commutative() {
        assert_eq!(hash_pair(leaf(1), leaf(2)), hash_pair(leaf(2), leaf(1)));
        assert_ne!(hash_pair(leaf(1), leaf(2)), hash_pair(leaf(1), leaf(3)));
    }

    proptest! {
        #[test]
        fn every_leaf_proves_and_nothing_else_does(n in 1usize..200, pick in any::<usize>(), flip in 0usize..32) {
            let leaves: Vec<B256> = (0..n as u64).map(leaf).collect();
            let t = MerkleTree::new(leaves.clone()).unwrap();
            for (i, l) in leaves.iter().enumerate() {
                prop_assert!(verify(&t.proof(i).unwrap(), t.root(), *l));
            }
            let i = pick % n;
            let proof = t.proof(i).unwrap();
            prop_assert!(!verify(&proof, t.root(), leaf(n as u64 + 1)), "a foreign leaf fails");
            let mut tampered_root = t.root();
            tampered_root.0[flip] ^= 1;
            prop_assert!(!verify(&proof, tampered_root, leaves[i]));
            if !proof.is_empty() {
                let mut bad = proof.clone();
                bad[pick % proof.len()].0[flip] ^= 1;
                prop_assert!(!verify(&bad, t.root(), leaves[i]), "a tampered proof fails");
            }
        }
    }
}
