// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "forge-std/Vm.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Settlement} from "../Settlement.sol";
import {SettlementFixture} from "./utils/SettlementFixture.sol";

/// @notice Property tests: billing conserves tokens for any amounts and fee, and the
/// batch Merkle proofs accept exactly the receipts that were posted.
contract SettlementFuzzTest is SettlementFixture {
    uint256 internal constant MAX_AMOUNT = 1e30; // a trillion tokens at 18 decimals

    address[4] internal payers;
    address[3] internal providers;

    function setUp() public override {
        super.setUp();
        payers = [payerA, payerB, makeAddr("payerC"), makeAddr("payerD")];
        providers = [providerX, providerY, makeAddr("providerZ")];
    }

    // ----------------------------------------------------------------- money

    /// @dev What the contract should hold after an invoice, computed line by line.
    struct Expected {
        uint256[4] escrow;
        uint256[3] earned;
        uint256 fees;
        uint256 billed;
        uint256 paid;
        uint256 shortfalls;
    }

    /// Every line draws its payer in order, short payers are reported rather than
    /// skipped, and afterwards every token is still owed to exactly one party:
    /// paying everyone out leaves the contract empty.
    function testFuzz_postInvoice_conservesTokens(
        uint256[4] memory deposits,
        uint256[8] memory amounts,
        uint8[8] memory pairs,
        uint16 bps
    ) public {
        bps = uint16(_bound(bps, 0, 10_000));
        Settlement s = _deploy(bps);
        Expected memory e;
        for (uint256 i; i < 4; ++i) {
            e.escrow[i] = _bound(deposits[i], 0, MAX_AMOUNT);
            if (e.escrow[i] != 0) _fund(s, payers[i], e.escrow[i]);
        }

        Settlement.Line[] memory lines = new Settlement.Line[](8);
        for (uint256 i; i < 8; ++i) {
            uint256 p = pairs[i] % 4;
            uint256 q = (pairs[i] / 4) % 3;
            uint256 owed = _bound(amounts[i], 0, MAX_AMOUNT);
            lines[i] = _line(payers[p], providers[q], owed);
            _expectLine(e, p, q, owed, bps);
        }

        vm.recordLogs();
        bytes32 batchId = _post(s, keccak256(abi.encode(deposits, amounts)), 8, lines);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        uint256 shortfallEvents;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == Settlement.PayerShortfall.selector) ++shortfallEvents;
        }
        assertEq(shortfallEvents, e.shortfalls, "one PayerShortfall per short line");

        for (uint256 i; i < 4; ++i) {
            assertEq(s.escrowOf(payers[i]), e.escrow[i], "escrow");
        }
        for (uint256 i; i < 3; ++i) {
            assertEq(s.earningsOf(providers[i]), e.earned[i], "earnings");
        }
        assertEq(s.protocolFees(), e.fees, "fees");
        assertEq(s.invoices(batchId).billed, e.billed);
        assertEq(s.invoices(batchId).paid, e.paid);
        _assertConserved(s);

        _drain(s);
        assertEq(token.balanceOf(address(s)), 0, "every token was owed to someone");
    }

    function _expectLine(Expected memory e, uint256 p, uint256 q, uint256 owed, uint16 bps) internal pure {
        uint256 paid = Math.min(owed, e.escrow[p]);
        uint256 fee = _fee(paid, bps);
        e.escrow[p] -= paid;
        e.earned[q] += paid - fee;
        e.fees += fee;
        e.billed += owed;
        e.paid += paid;
        if (paid < owed) ++e.shortfalls;
    }

    /// The overflow-free fee split equals floor(paid * bps / 10000) over the whole range.
    function testFuzz_fee_isExactFloor(uint256 paid, uint16 bps) public {
        paid = _bound(paid, 1, type(uint128).max);
        bps = uint16(_bound(bps, 0, 10_000));
        Settlement s = _deploy(bps);
        _fund(s, payerA, paid);
        _post(s, keccak256("root"), 1, _lines1(_line(payerA, providerX, paid)));
        uint256 fee = Math.mulDiv(paid, bps, 10_000);
        assertEq(s.protocolFees(), fee);
        assertEq(s.earningsOf(providerX), paid - fee);
        _assertConserved(s);
    }

    function testFuzz_receiptAmount_matchesFormula(uint64 prompt, uint64 completion, uint128 priceIn, uint128 priceOut)
        public
        view
    {
        assertEq(settlement.receiptAmount(prompt, completion, priceIn, priceOut), _amount(prompt, completion, priceIn, priceOut));
    }

    // ---------------------------------------------------------------- merkle

    function testFuzz_merkle_everyLeafVerifies(uint256 seed, uint256 n) public {
        n = _bound(n, 1, 64);
        (Settlement.Receipt[] memory receipts, bytes32[] memory leaves, bytes32 batchId) = _postBatch(seed, n);
        for (uint256 i; i < n; ++i) {
            assertTrue(settlement.verifyReceipt(batchId, receipts[i], _proof(leaves, i)), "leaf verifies");
        }
    }

    /// Changing any one field breaks the proof, whether or not the amount is
    /// recomputed to stay consistent with the (changed) counts and prices.
    function testFuzz_merkle_tamperedReceiptFails(
        uint256 seed,
        uint256 n,
        uint256 index,
        uint256 field,
        uint256 delta,
        bool keepAmountConsistent
    ) public {
        n = _bound(n, 1, 64);
        index = _bound(index, 0, n - 1);
        field = _bound(field, 0, 9);
        // Nonzero modulo 2**64, so it changes every field width below.
        delta = _bound(delta, 1, type(uint64).max);
        (Settlement.Receipt[] memory receipts, bytes32[] memory leaves, bytes32 batchId) = _postBatch(seed, n);
        bytes32[] memory proof = _proof(leaves, index);

        Settlement.Receipt memory r = receipts[index];
        _tamper(r, field, delta);
        if (keepAmountConsistent && field != 8) {
            r.amount = _amount(r.promptTokens, r.completionTokens, r.priceInPer1M, r.priceOutPer1M);
        }
        assertFalse(settlement.verifyReceipt(batchId, r, proof), "tampered receipt rejected");
    }

    function testFuzz_merkle_tamperedProofFails(uint256 seed, uint256 n, uint256 index, uint256 element, uint8 bit)
        public
    {
        n = _bound(n, 2, 64);
        index = _bound(index, 0, n - 1);
        (Settlement.Receipt[] memory receipts, bytes32[] memory leaves, bytes32 batchId) = _postBatch(seed, n);
        Settlement.Receipt memory r = receipts[index];
        bytes32[] memory proof = _proof(leaves, index);
        assertTrue(proof.length != 0);

        // One flipped bit in one sibling.
        bytes32[] memory flipped = _copy(proof, proof.length);
        element = _bound(element, 0, proof.length - 1);
        flipped[element] ^= bytes32(uint256(1) << bit);
        assertFalse(settlement.verifyReceipt(batchId, r, flipped), "flipped sibling");

        // A sibling missing or one too many.
        assertFalse(settlement.verifyReceipt(batchId, r, _copy(proof, proof.length - 1)), "truncated");
        bytes32[] memory extended = _copy(proof, proof.length + 1);
        extended[proof.length] = keccak256(abi.encode(seed));
        assertFalse(settlement.verifyReceipt(batchId, r, extended), "extended");

        // Another leaf's proof, and the right proof against another batch.
        uint256 otherIndex = (index + 1) % n;
        assertFalse(settlement.verifyReceipt(batchId, r, _proof(leaves, otherIndex)), "other leaf's proof");
        bytes32 otherBatch = settlement.batchIdOf(_root(leaves), uint32(n + 1));
        assertFalse(settlement.verifyReceipt(otherBatch, r, proof), "unposted batch");
    }

    // --------------------------------------------------------------- helpers

    function _postBatch(uint256 seed, uint256 n)
        internal
        returns (Settlement.Receipt[] memory receipts, bytes32[] memory leaves, bytes32 batchId)
    {
        receipts = new Settlement.Receipt[](n);
        for (uint256 i; i < n; ++i) {
            receipts[i] = _receipt(uint256(keccak256(abi.encode(seed, i))));
        }
        leaves = _leaves(receipts);
        batchId = _post(_root(leaves), uint32(n), _lines1(_line(payerA, providerX, 0)));
    }

    /// @dev Wrapping arithmetic: the point is a different value, not a valid one.
    function _tamper(Settlement.Receipt memory r, uint256 field, uint256 delta) internal pure {
        unchecked {
            if (field == 0) r.requestId ^= bytes32(delta);
            else if (field == 1) r.payer = address(uint160(r.payer) ^ uint160(delta));
            else if (field == 2) r.provider = address(uint160(r.provider) ^ uint160(delta));
            else if (field == 3) r.model ^= bytes32(delta);
            else if (field == 4) r.promptTokens += uint64(delta);
            else if (field == 5) r.completionTokens += uint64(delta);
            else if (field == 6) r.priceInPer1M += delta;
            else if (field == 7) r.priceOutPer1M += delta;
            else if (field == 8) r.amount += delta;
            else r.responseHash ^= bytes32(delta);
        }
    }

    function _copy(bytes32[] memory a, uint256 len) internal pure returns (bytes32[] memory b) {
        b = new bytes32[](len);
        for (uint256 i; i < len && i < a.length; ++i) {
            b[i] = a[i];
        }
    }

    function _assertConserved(Settlement s) internal view {
        uint256 sum = s.protocolFees();
        for (uint256 i; i < 4; ++i) {
            sum += s.escrowOf(payers[i]);
        }
        for (uint256 i; i < 3; ++i) {
            sum += s.earningsOf(providers[i]);
        }
        assertEq(token.balanceOf(address(s)), sum, "balance == escrows + earnings + fees");
    }

    /// @dev Pays every party out through the public exits.
    function _drain(Settlement s) internal {
        for (uint256 i; i < 4; ++i) {
            uint256 balance = s.escrowOf(payers[i]);
            if (balance == 0) continue;
            vm.prank(payers[i]);
            s.requestWithdrawal(balance);
        }
        skip(WITHDRAWAL_DELAY);
        for (uint256 i; i < 4; ++i) {
            (, uint64 unlockAt) = s.pendingWithdrawalOf(payers[i]);
            if (unlockAt == 0) continue;
            vm.prank(payers[i]);
            s.withdraw();
        }
        for (uint256 i; i < 3; ++i) {
            if (s.earningsOf(providers[i]) == 0) continue;
            vm.prank(providers[i]);
            s.withdrawEarnings();
        }
        if (s.protocolFees() != 0) {
            vm.prank(treasury);
            s.withdrawProtocolFees();
        }
    }
}
