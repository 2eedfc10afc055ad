// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {FeeToken} from "../../FeeToken.sol";
import {Settlement} from "../../Settlement.sol";
import {MerkleTree} from "./MerkleTree.sol";

/// @notice A deployed Settlement with funded payers, shared by Tollgate's settlement tests.
abstract contract SettlementFixture is Test {
    uint16 internal constant FEE_BPS = 250; // 2.5%
    uint64 internal constant WITHDRAWAL_DELAY = 1 days;

    FeeToken internal token;
    Settlement internal settlement;

    address internal admin = makeAddr("admin");
    address internal settler = makeAddr("settler");
    address internal treasury = makeAddr("treasury");
    address internal payerA = makeAddr("payerA");
    address internal payerB = makeAddr("payerB");
    address internal providerX = makeAddr("providerX");
    address internal providerY = makeAddr("providerY");

    function setUp() public virtual {
        token = new FeeToken(address(this));
        settlement = _deploy(FEE_BPS);
    }

    function _deploy(uint16 bps) internal returns (Settlement s) {
        s = new Settlement(token, admin, settler, treasury, bps, WITHDRAWAL_DELAY);
    }

    /// @dev Mints to `payer` and deposits it, as a payer topping up its escrow would.
    function _fund(address payer, uint256 amount) internal {
        _fund(settlement, payer, amount);
    }

    function _fund(Settlement s, address payer, uint256 amount) internal {
        token.mint(payer, amount);
        vm.startPrank(payer);
        token.approve(address(s), amount);
        s.deposit(amount);
        vm.stopPrank();
    }

    function _line(address payer, address provider, uint256 amount) internal pure returns (Settlement.Line memory) {
        return Settlement.Line({payer: payer, provider: provider, amount: amount});
    }

    function _lines1(Settlement.Line memory a) internal pure returns (Settlement.Line[] memory lines) {
        lines = new Settlement.Line[](1);
        lines[0] = a;
    }

    function _post(bytes32 root, uint32 count, Settlement.Line[] memory lines) internal returns (bytes32) {
        return _post(settlement, root, count, lines);
    }

    function _post(Settlement s, bytes32 root, uint32 count, Settlement.Line[] memory lines)
        internal
        returns (bytes32 batchId)
    {
        vm.prank(settler);
        batchId = s.postInvoice(root, count, lines, "ipfs://batch");
    }

    /// @dev The reference formula, written independently of the contract's.
    function _amount(uint64 prompt, uint64 completion, uint256 priceIn, uint256 priceOut)
        internal
        pure
        returns (uint256)
    {
        return (uint256(prompt) * priceIn + uint256(completion) * priceOut) / 1e6;
    }

    function _fee(uint256 paid, uint16 bps) internal pure returns (uint256) {
        return paid * bps / 10_000;
    }

    /// @dev A receipt with fields derived from `seed`; prices stay below 2**128 so
    /// the amount formula cannot overflow, as with any real price.
    function _receipt(uint256 seed) internal pure returns (Settlement.Receipt memory r) {
        r.requestId = keccak256(abi.encode("request", seed));
        r.payer = address(uint160(uint256(keccak256(abi.encode("payer", seed)))));
        r.provider = address(uint160(uint256(keccak256(abi.encode("provider", seed)))));
        r.model = keccak256(abi.encode("model", seed % 3));
        r.promptTokens = uint64(uint256(keccak256(abi.encode("prompt", seed))));
        r.completionTokens = uint64(uint256(keccak256(abi.encode("completion", seed))));
        r.priceInPer1M = uint128(uint256(keccak256(abi.encode("priceIn", seed))));
        r.priceOutPer1M = uint128(uint256(keccak256(abi.encode("priceOut", seed))));
        r.amount = _amount(r.promptTokens, r.completionTokens, r.priceInPer1M, r.priceOutPer1M);
        r.responseHash = sha256(abi.encode("response", seed));
    }

    function _leaf(Settlement.Receipt memory r) internal pure returns (bytes32) {
        return keccak256(abi.encode(r));
    }

    function _leaves(Settlement.Receipt[] memory receipts) internal pure returns (bytes32[] memory leaves) {
        leaves = new bytes32[](receipts.length);
        for (uint256 i; i < receipts.length; ++i) {
            leaves[i] = _leaf(receipts[i]);
        }
    }

    function _root(bytes32[] memory leaves) internal pure returns (bytes32) {
        return MerkleTree.root(leaves);
    }

    function _proof(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32[] memory) {
        return MerkleTree.proof(leaves, index);
    }
}
