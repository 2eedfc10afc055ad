// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";

/// @notice Test-only copy of the tree the Tollgate gateway builds off-chain over a
/// batch's receipt leaves, so tests can post real roots and real proofs. The
/// contract itself never builds trees: it only checks proofs.
/// Leaves stay in batch order; each level hashes pairs (i, i+1) with the
/// commutative keccak256 and carries an odd last node up unchanged.
library MerkleTree {
    function root(bytes32[] memory leaves) internal pure returns (bytes32) {
        require(leaves.length != 0, "MerkleTree: no leaves");
        bytes32[] memory level = leaves;
        while (level.length > 1) {
            level = _up(level);
        }
        return level[0];
    }

    /// @notice Siblings from the leaf up; a level where the node is carried adds none.
    function proof(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32[] memory path) {
        require(index < leaves.length, "MerkleTree: index out of range");
        path = new bytes32[](256);
        uint256 depth;
        bytes32[] memory level = leaves;
        while (level.length > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < level.length) path[depth++] = level[sibling];
            level = _up(level);
            index >>= 1;
        }
        assembly ("memory-safe") {
            mstore(path, depth)
        }
    }

    function _up(bytes32[] memory level) private pure returns (bytes32[] memory next) {
        uint256 n = level.length;
        next = new bytes32[]((n + 1) / 2);
        for (uint256 i; i < n; i += 2) {
            next[i / 2] = i + 1 < n ? Hashes.commutativeKeccak256(level[i], level[i + 1]) : level[i];
        }
    }
}
