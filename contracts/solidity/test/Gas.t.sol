// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {console} from "forge-std/console.sol";
import {Settlement} from "../Settlement.sol";
import {SettlementFixture} from "./utils/SettlementFixture.sol";

/// @notice Tollgate's settlement budget: one invoice covering 1,000 requests must
/// cost under 1,000 gas per request, and proving any one request (a dispute or an
/// audit) under 100,000 gas. Prints the measured numbers for the README/bench.
contract GasTest is SettlementFixture {
    uint256 internal constant RECEIPTS = 1_000;
    uint256 internal constant PAYERS = 10;
    uint256 internal constant PROVIDERS = 4;

    address[PAYERS] internal payers;
    address[PROVIDERS] internal providers;

    function setUp() public override {
        super.setUp();
        for (uint256 i; i < PAYERS; ++i) {
            payers[i] = makeAddr(string.concat("payer", vm.toString(i)));
            _fund(payers[i], 1_000e18);
        }
        for (uint256 i; i < PROVIDERS; ++i) {
            providers[i] = makeAddr(string.concat("provider", vm.toString(i)));
        }
    }

    function test_gas_invoice_1000_receipts() public {
        // Requests round-robin over 10 (payer, provider) pairs, so the invoice has
        // 10 lines, each drawing a payer with escrow into a provider with none yet:
        // the costliest storage writes a line can make.
        Settlement.Receipt[] memory receipts = new Settlement.Receipt[](RECEIPTS);
        Settlement.Line[] memory lines = new Settlement.Line[](PAYERS);
        for (uint256 k; k < PAYERS; ++k) {
            lines[k] = _line(payers[k], providers[k % PROVIDERS], 0);
        }
        for (uint256 i; i < RECEIPTS; ++i) {
            Settlement.Receipt memory r = receipts[i];
            uint256 k = i % PAYERS;
            r.requestId = keccak256(bytes(string.concat("req-", vm.toString(i))));
            r.payer = payers[k];
            r.provider = providers[k % PROVIDERS];
            r.model = keccak256("smollm2-135m-instruct");
            r.promptTokens = uint64(200 + i % 300);
            r.completionTokens = uint64(50 + i % 200);
            r.priceInPer1M = 0.15e18;
            r.priceOutPer1M = 0.6e18;
            r.amount = _amount(r.promptTokens, r.completionTokens, r.priceInPer1M, r.priceOutPer1M);
            r.responseHash = sha256(abi.encode("response", i));
            lines[k].amount += r.amount;
        }
        bytes32[] memory leaves = _leaves(receipts);
        bytes32 root = _root(leaves);

        vm.prank(settler);
        uint256 before = gasleft();
        bytes32 batchId = settlement.postInvoice(root, uint32(RECEIPTS), lines, "ipfs://tollgate/batch/0001");
        uint256 invoiceGas = before - gasleft();

        uint256 index = 777;
        bytes32[] memory proof = _proof(leaves, index);
        before = gasleft();
        bool valid = settlement.verifyReceipt(batchId, receipts[index], proof);
        uint256 claimGas = before - gasleft();

        assertTrue(valid);
        assertEq(proof.length, 10);
        assertEq(settlement.invoices(batchId).paid, settlement.invoices(batchId).billed);

        uint256 perRequest = invoiceGas / RECEIPTS;
        console.log("gas_per_invoice", invoiceGas);
        console.log("gas_per_request", perRequest);
        console.log("claim_gas", claimGas);
        assertLt(perRequest, 1_000);
        assertLt(claimGas, 100_000);
    }
}
