// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Settlement} from "../Settlement.sol";
import {SettlementFixture} from "./utils/SettlementFixture.sol";

contract SettlementTest is SettlementFixture {
    bytes32 internal constant ROOT = keccak256("root");

    // ----------------------------------------------------------- constructor

    function test_constructor_setsConfigAndRoles() public view {
        assertEq(address(settlement.token()), address(token));
        assertEq(settlement.treasury(), treasury);
        assertEq(settlement.protocolFeeBps(), FEE_BPS);
        assertEq(settlement.withdrawalDelay(), WITHDRAWAL_DELAY);
        assertTrue(settlement.hasRole(settlement.DEFAULT_ADMIN_ROLE(), admin));
        assertTrue(settlement.hasRole(settlement.SETTLER_ROLE(), settler));
        assertEq(settlement.SETTLER_ROLE(), keccak256("SETTLER_ROLE"));
        assertFalse(settlement.hasRole(settlement.SETTLER_ROLE(), admin));
    }

    function test_constructor_revertsOnZeroAddresses() public {
        vm.expectRevert(Settlement.ZeroAddress.selector);
        new Settlement(IERC20(address(0)), admin, settler, treasury, FEE_BPS, WITHDRAWAL_DELAY);
        vm.expectRevert(Settlement.ZeroAddress.selector);
        new Settlement(token, address(0), settler, treasury, FEE_BPS, WITHDRAWAL_DELAY);
        vm.expectRevert(Settlement.ZeroAddress.selector);
        new Settlement(token, admin, address(0), treasury, FEE_BPS, WITHDRAWAL_DELAY);
        vm.expectRevert(Settlement.ZeroAddress.selector);
        new Settlement(token, admin, settler, address(0), FEE_BPS, WITHDRAWAL_DELAY);
    }

    function test_constructor_revertsOnFeeAbove100Percent() public {
        vm.expectRevert(abi.encodeWithSelector(Settlement.FeeTooHigh.selector, uint16(10_001)));
        new Settlement(token, admin, settler, treasury, 10_001, WITHDRAWAL_DELAY);
        // Exactly 100% is allowed (a protocol-run provider), if odd.
        new Settlement(token, admin, settler, treasury, 10_000, WITHDRAWAL_DELAY);
    }

    // --------------------------------------------------------------- escrow

    function test_deposit_creditsEscrowAndPullsTokens() public {
        token.mint(payerA, 100);
        vm.startPrank(payerA);
        token.approve(address(settlement), 100);
        vm.expectEmit(address(settlement));
        emit Settlement.Deposited(payerA, payerA, 60);
        settlement.deposit(60);
        settlement.deposit(40);
        vm.stopPrank();
        assertEq(settlement.escrowOf(payerA), 100);
        assertEq(token.balanceOf(address(settlement)), 100);
        assertEq(token.balanceOf(payerA), 0);
    }

    function test_deposit_revertsOnZero() public {
        vm.prank(payerA);
        vm.expectRevert(Settlement.ZeroAmount.selector);
        settlement.deposit(0);
    }

    function test_deposit_revertsWithoutAllowance() public {
        token.mint(payerA, 100);
        vm.prank(payerA);
        vm.expectRevert();
        settlement.deposit(100);
    }

    function test_depositFor_creditsPayerFromCaller() public {
        address operator = makeAddr("operator");
        token.mint(operator, 70);
        vm.startPrank(operator);
        token.approve(address(settlement), 70);
        vm.expectEmit(address(settlement));
        emit Settlement.Deposited(payerA, operator, 70);
        settlement.depositFor(payerA, 70);
        vm.stopPrank();
        assertEq(settlement.escrowOf(payerA), 70);
        assertEq(settlement.escrowOf(operator), 0);
    }

    function test_depositFor_reverts() public {
        vm.expectRevert(Settlement.ZeroAddress.selector);
        settlement.depositFor(address(0), 1);
        vm.expectRevert(Settlement.ZeroAmount.selector);
        settlement.depositFor(payerA, 0);
    }

    function test_requestWithdrawal_setsPendingAndUnlock() public {
        _fund(payerA, 100);
        uint64 unlockAt = uint64(block.timestamp) + WITHDRAWAL_DELAY;
        vm.expectEmit(address(settlement));
        emit Settlement.WithdrawalRequested(payerA, 80, unlockAt);
        vm.prank(payerA);
        settlement.requestWithdrawal(80);
        (uint256 amount, uint64 unlock) = settlement.pendingWithdrawalOf(payerA);
        assertEq(amount, 80);
        assertEq(unlock, unlockAt);
        // Funds stay in escrow (and settleable) until withdrawn.
        assertEq(settlement.escrowOf(payerA), 100);
    }

    function test_requestWithdrawal_again_restartsClock() public {
        _fund(payerA, 100);
        vm.prank(payerA);
        settlement.requestWithdrawal(10);
        skip(WITHDRAWAL_DELAY - 1);
        vm.prank(payerA);
        settlement.requestWithdrawal(20);
        (uint256 amount, uint64 unlock) = settlement.pendingWithdrawalOf(payerA);
        assertEq(amount, 20);
        assertEq(unlock, uint64(block.timestamp) + WITHDRAWAL_DELAY);
    }

    function test_requestWithdrawal_reverts() public {
        _fund(payerA, 100);
        vm.startPrank(payerA);
        vm.expectRevert(Settlement.ZeroAmount.selector);
        settlement.requestWithdrawal(0);
        vm.expectRevert(abi.encodeWithSelector(Settlement.InsufficientEscrow.selector, 101, 100));
        settlement.requestWithdrawal(101);
        vm.stopPrank();
    }

    function test_withdraw_revertsWithoutRequest() public {
        _fund(payerA, 100);
        vm.prank(payerA);
        vm.expectRevert(Settlement.NoPendingWithdrawal.selector);
        settlement.withdraw();
    }

    function test_withdraw_enforcesDelay() public {
        _fund(payerA, 100);
        vm.prank(payerA);
        settlement.requestWithdrawal(100);
        uint64 unlockAt = uint64(block.timestamp) + WITHDRAWAL_DELAY;

        skip(WITHDRAWAL_DELAY - 1);
        vm.prank(payerA);
        vm.expectRevert(abi.encodeWithSelector(Settlement.WithdrawalLocked.selector, unlockAt));
        settlement.withdraw();

        skip(1);
        vm.expectEmit(address(settlement));
        emit Settlement.Withdrawn(payerA, 100);
        vm.prank(payerA);
        settlement.withdraw();
        assertEq(token.balanceOf(payerA), 100);
        assertEq(settlement.escrowOf(payerA), 0);
        (uint256 amount, uint64 unlock) = settlement.pendingWithdrawalOf(payerA);
        assertEq(amount, 0);
        assertEq(unlock, 0);
    }

    function test_withdraw_cannotRepeat() public {
        _fund(payerA, 100);
        vm.prank(payerA);
        settlement.requestWithdrawal(60);
        skip(WITHDRAWAL_DELAY);
        vm.startPrank(payerA);
        settlement.withdraw();
        vm.expectRevert(Settlement.NoPendingWithdrawal.selector);
        settlement.withdraw();
        vm.stopPrank();
        assertEq(token.balanceOf(payerA), 60);
        assertEq(settlement.escrowOf(payerA), 40);
    }

    /// Usage invoiced during the delay is paid first; the payer gets what is left.
    function test_withdraw_paysMinOfPendingAndEscrowAfterSettlement() public {
        _fund(payerA, 100);
        vm.prank(payerA);
        settlement.requestWithdrawal(100);
        _post(ROOT, 1, _lines1(_line(payerA, providerX, 30)));
        skip(WITHDRAWAL_DELAY);
        vm.expectEmit(address(settlement));
        emit Settlement.Withdrawn(payerA, 70);
        vm.prank(payerA);
        settlement.withdraw();
        assertEq(token.balanceOf(payerA), 70);
        assertEq(settlement.escrowOf(payerA), 0);
    }

    function test_withdraw_ofDrainedEscrowClearsRequest() public {
        _fund(payerA, 100);
        vm.prank(payerA);
        settlement.requestWithdrawal(100);
        _post(ROOT, 1, _lines1(_line(payerA, providerX, 100)));
        skip(WITHDRAWAL_DELAY);
        vm.prank(payerA);
        settlement.withdraw();
        assertEq(token.balanceOf(payerA), 0);
        (, uint64 unlock) = settlement.pendingWithdrawalOf(payerA);
        assertEq(unlock, 0);
    }

    // -------------------------------------------------------------- invoices

    function test_postInvoice_settlesLinesAndStoresInvoice() public {
        _fund(payerA, 1_000_000);
        _fund(payerB, 1_000_000);
        Settlement.Line[] memory lines = new Settlement.Line[](3);
        lines[0] = _line(payerA, providerX, 400_000);
        lines[1] = _line(payerA, providerY, 100_000);
        lines[2] = _line(payerB, providerX, 200_000);
        bytes32 batchId = settlement.batchIdOf(ROOT, 42);
        uint256 fee = _fee(400_000, FEE_BPS) + _fee(100_000, FEE_BPS) + _fee(200_000, FEE_BPS);

        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerA, providerX, 400_000, 400_000);
        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerA, providerY, 100_000, 100_000);
        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerB, providerX, 200_000, 200_000);
        vm.expectEmit(address(settlement));
        emit Settlement.InvoicePosted(batchId, ROOT, 42, 700_000, 700_000, fee, "ipfs://batch");
        vm.warp(1_700_000_000);
        assertEq(_post(ROOT, 42, lines), batchId);

        assertEq(settlement.escrowOf(payerA), 500_000);
        assertEq(settlement.escrowOf(payerB), 800_000);
        assertEq(settlement.earningsOf(providerX), 600_000 - _fee(400_000, FEE_BPS) - _fee(200_000, FEE_BPS));
        assertEq(settlement.earningsOf(providerY), 100_000 - _fee(100_000, FEE_BPS));
        assertEq(settlement.protocolFees(), fee);

        Settlement.Invoice memory inv = settlement.invoices(batchId);
        assertEq(inv.merkleRoot, ROOT);
        assertEq(inv.receiptCount, 42);
        assertEq(inv.postedAt, 1_700_000_000);
        assertEq(inv.billed, 700_000);
        assertEq(inv.paid, 700_000);
    }

    function test_batchIdOf_isContentDerived() public view {
        assertEq(settlement.batchIdOf(ROOT, 7), keccak256(abi.encode(ROOT, uint32(7))));
        assertTrue(settlement.batchIdOf(ROOT, 7) != settlement.batchIdOf(ROOT, 8));
    }

    /// A settler that resends after a crash must not bill twice.
    function test_postInvoice_repostedBatchReverts() public {
        _fund(payerA, 1_000);
        Settlement.Line[] memory lines = _lines1(_line(payerA, providerX, 100));
        bytes32 batchId = _post(ROOT, 3, lines);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(Settlement.BatchExists.selector, batchId));
        settlement.postInvoice(ROOT, 3, lines, "ipfs://other-uri");
        assertEq(settlement.escrowOf(payerA), 900);
        // Same root with another count is another batch.
        _post(ROOT, 4, lines);
        assertEq(settlement.escrowOf(payerA), 800);
    }

    function test_postInvoice_onlySettler() public {
        Settlement.Line[] memory lines = _lines1(_line(payerA, providerX, 1));
        bytes32 role = settlement.SETTLER_ROLE();
        for (uint256 i; i < 3; ++i) {
            address caller = [admin, payerA, providerX][i];
            vm.prank(caller);
            vm.expectRevert(
                abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
            );
            settlement.postInvoice(ROOT, 1, lines, "");
        }
    }

    function test_postInvoice_adminCanAddSettler() public {
        address second = makeAddr("second settler");
        bytes32 role = settlement.SETTLER_ROLE();
        vm.prank(admin);
        settlement.grantRole(role, second);
        vm.prank(second);
        settlement.postInvoice(ROOT, 1, _lines1(_line(payerA, providerX, 0)), "");
    }

    function test_postInvoice_rejectsEmptyOrMalformed() public {
        Settlement.Line[] memory none = new Settlement.Line[](0);
        vm.startPrank(settler);
        vm.expectRevert(Settlement.ZeroRoot.selector);
        settlement.postInvoice(bytes32(0), 1, _lines1(_line(payerA, providerX, 1)), "");
        vm.expectRevert(Settlement.EmptyBatch.selector);
        settlement.postInvoice(ROOT, 0, _lines1(_line(payerA, providerX, 1)), "");
        vm.expectRevert(Settlement.NoLines.selector);
        settlement.postInvoice(ROOT, 1, none, "");

        Settlement.Line[] memory lines = new Settlement.Line[](2);
        lines[0] = _line(payerA, providerX, 1);
        lines[1] = _line(address(0), providerX, 1);
        vm.expectRevert(abi.encodeWithSelector(Settlement.InvalidLine.selector, 1));
        settlement.postInvoice(ROOT, 1, lines, "");
        lines[1] = _line(payerA, address(0), 1);
        vm.expectRevert(abi.encodeWithSelector(Settlement.InvalidLine.selector, 1));
        settlement.postInvoice(ROOT, 1, lines, "");
        vm.stopPrank();
    }

    /// A short payer pays what it has and is reported; everyone else pays in full.
    function test_postInvoice_shortPayerEmitsShortfallAndOthersPay() public {
        _fund(payerA, 150);
        _fund(payerB, 1_000);
        Settlement.Line[] memory lines = new Settlement.Line[](4);
        lines[0] = _line(payerA, providerX, 100); // paid in full
        lines[1] = _line(payerB, providerX, 300);
        lines[2] = _line(payerA, providerY, 120); // 50 left: short by 70
        lines[3] = _line(payerA, providerX, 10); // nothing left: short by 10
        bytes32 batchId = settlement.batchIdOf(ROOT, 9);

        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerA, providerX, 100, 100);
        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerB, providerX, 300, 300);
        vm.expectEmit(address(settlement));
        emit Settlement.PayerShortfall(batchId, payerA, providerY, 120, 50);
        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerA, providerY, 120, 50);
        vm.expectEmit(address(settlement));
        emit Settlement.PayerShortfall(batchId, payerA, providerX, 10, 0);
        vm.expectEmit(address(settlement));
        emit Settlement.InvoiceLine(batchId, payerA, providerX, 10, 0);
        _post(ROOT, 9, lines);

        assertEq(settlement.escrowOf(payerA), 0);
        assertEq(settlement.escrowOf(payerB), 700);
        Settlement.Invoice memory inv = settlement.invoices(batchId);
        assertEq(inv.billed, 530);
        assertEq(inv.paid, 450);
        assertEq(settlement.earningsOf(providerY), 50 - _fee(50, FEE_BPS));
        _assertConserved();
    }

    function test_postInvoice_billedAboveUint128Reverts() public {
        Settlement.Line[] memory lines = new Settlement.Line[](2);
        lines[0] = _line(payerA, providerX, type(uint128).max);
        lines[1] = _line(payerA, providerX, 1);
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(SafeCast.SafeCastOverflowedUintDowncast.selector, 128, uint256(1) << 128));
        settlement.postInvoice(ROOT, 1, lines, "");
    }

    function test_postInvoice_feeExtremes() public {
        Settlement free = _deploy(0);
        Settlement all = _deploy(10_000);
        _fund(free, payerA, 999);
        _fund(all, payerA, 999);
        _post(free, ROOT, 1, _lines1(_line(payerA, providerX, 999)));
        _post(all, ROOT, 1, _lines1(_line(payerA, providerX, 999)));
        assertEq(free.earningsOf(providerX), 999);
        assertEq(free.protocolFees(), 0);
        assertEq(all.earningsOf(providerX), 0);
        assertEq(all.protocolFees(), 999);
    }

    function test_invoices_unknownIsEmpty() public view {
        Settlement.Invoice memory inv = settlement.invoices(keccak256("nope"));
        assertEq(inv.merkleRoot, bytes32(0));
        assertEq(inv.postedAt, 0);
    }

    // -------------------------------------------------------------- receipts

    function test_receiptAmount_roundsDown() public view {
        // 3 * 333_333 + 1 * 1 = 1_000_000 -> 1; one token less rounds to 0.
        assertEq(settlement.receiptAmount(3, 1, 333_333, 1), 1);
        assertEq(settlement.receiptAmount(3, 0, 333_333, 1), 0);
        assertEq(settlement.receiptAmount(1_000, 500, 2e18, 8e18), (1_000 * 2e18 + 500 * 8e18) / 1e6);
        assertEq(settlement.receiptAmount(0, 0, type(uint256).max, type(uint256).max), 0);
    }

    function test_receiptAmount_revertsOnOverflow() public {
        vm.expectRevert(Settlement.AmountOverflow.selector);
        settlement.receiptAmount(2, 0, type(uint256).max, 0);
        vm.expectRevert(Settlement.AmountOverflow.selector);
        settlement.receiptAmount(1, 1, type(uint256).max, 1);
    }

    function test_receiptLeaf_isKeccakOfAbiEncode() public view {
        Settlement.Receipt memory r = _receipt(1);
        assertEq(settlement.receiptLeaf(r), keccak256(abi.encode(r)));
    }

    /// Leaves and root computed outside the EVM (plain keccak256/sha256 over the ABI
    /// words); the gateway's off-chain tree must reproduce these same constants.
    function test_knownAnswer_fiveReceipts() public {
        bytes32[5] memory expected = [
            bytes32(0xd3797f1fca6dfc4fafa3b4f2f01d49eff689b0259ac0ec18e8b36ef8ae7137ed),
            0xed9b1d82f9c19d4b90d28d667dcc157cd900de77dbef51f5d5b4eebc1e3d168e,
            0x1fca8da7c0ab791fc1e9861da8f81e36b215e86cbfc0235e8bbef5c1f0b8abf5,
            0x5b03770ee33eb7ad3758661429821c016ffa24eafd8a5c410c9008716e111787,
            0xda724897460172b4be7988a57bde1ff0c9793917dca846e0f99da95a265d92c0
        ];
        bytes32 expectedRoot = 0xb74a072d336cd0b32b631a7178463dd4391848deffb0b64775bec1dc0fe4bd17;

        Settlement.Receipt[] memory receipts = new Settlement.Receipt[](5);
        bytes32[] memory leaves = new bytes32[](5);
        for (uint64 i; i < 5; ++i) {
            Settlement.Receipt memory r = receipts[i];
            r.requestId = keccak256(bytes(string.concat("req-", vm.toString(uint256(i)))));
            r.payer = address(uint160(0x1000 + i % 2));
            r.provider = address(uint160(0x2000 + i % 3));
            r.model = keccak256("smollm2-135m-instruct");
            r.promptTokens = 100 + 7 * i;
            r.completionTokens = 20 + 3 * i;
            r.priceInPer1M = 0.15e18;
            r.priceOutPer1M = 0.6e18;
            r.amount = settlement.receiptAmount(r.promptTokens, r.completionTokens, r.priceInPer1M, r.priceOutPer1M);
            r.responseHash = sha256(bytes(string.concat("response-", vm.toString(uint256(i)))));
            leaves[i] = settlement.receiptLeaf(r);
            assertEq(leaves[i], expected[i]);
        }
        assertEq(receipts[0].amount, 27_000_000_000_000);
        assertEq(_root(leaves), expectedRoot);

        bytes32 batchId = _post(expectedRoot, 5, _lines1(_line(payerA, providerX, 0)));
        for (uint256 i; i < 5; ++i) {
            assertTrue(settlement.verifyReceipt(batchId, receipts[i], _proof(leaves, i)));
        }
        // The carried fifth leaf is proven by a single sibling: the root of the first four.
        assertEq(_proof(leaves, 4).length, 1);
    }

    function test_verifyReceipt_singleLeafIsItsOwnRoot() public {
        Settlement.Receipt memory r = _receipt(7);
        bytes32 batchId = _post(_leaf(r), 1, _lines1(_line(payerA, providerX, 0)));
        assertTrue(settlement.verifyReceipt(batchId, r, new bytes32[](0)));
    }

    function test_verifyReceipt_falseForUnknownBatchOrBadAmount() public {
        Settlement.Receipt memory r = _receipt(7);
        bytes32 root = _leaf(r);
        assertFalse(settlement.verifyReceipt(settlement.batchIdOf(root, 1), r, new bytes32[](0)));

        // A leaf whose stated amount disagrees with its own prices is rejected even
        // though it is in the tree.
        r.amount += 1;
        bytes32 batchId = _post(_leaf(r), 1, _lines1(_line(payerA, providerX, 0)));
        assertFalse(settlement.verifyReceipt(batchId, r, new bytes32[](0)));
    }

    function test_verifyReceipt_falseWhenAmountWouldOverflow() public {
        Settlement.Receipt memory r = _receipt(7);
        r.promptTokens = 2;
        r.priceInPer1M = type(uint256).max;
        bytes32 batchId = _post(_leaf(r), 1, _lines1(_line(payerA, providerX, 0)));
        assertFalse(settlement.verifyReceipt(batchId, r, new bytes32[](0)));
    }

    // --------------------------------------------------------------- payouts

    function test_withdrawEarnings_paysOnce() public {
        _fund(payerA, 10_000);
        _post(ROOT, 1, _lines1(_line(payerA, providerX, 10_000)));
        uint256 earned = 10_000 - _fee(10_000, FEE_BPS);
        vm.expectEmit(address(settlement));
        emit Settlement.EarningsWithdrawn(providerX, earned);
        vm.prank(providerX);
        settlement.withdrawEarnings();
        assertEq(token.balanceOf(providerX), earned);
        assertEq(settlement.earningsOf(providerX), 0);

        vm.prank(providerX);
        vm.expectRevert(Settlement.NothingToWithdraw.selector);
        settlement.withdrawEarnings();
        _assertConserved();
    }

    function test_withdrawEarnings_revertsWithNone() public {
        vm.prank(providerY);
        vm.expectRevert(Settlement.NothingToWithdraw.selector);
        settlement.withdrawEarnings();
    }

    function test_withdrawProtocolFees_byTreasuryOnce() public {
        _fund(payerA, 10_000);
        _post(ROOT, 1, _lines1(_line(payerA, providerX, 10_000)));
        uint256 fee = _fee(10_000, FEE_BPS);
        vm.expectEmit(address(settlement));
        emit Settlement.ProtocolFeesWithdrawn(treasury, fee);
        vm.prank(treasury);
        settlement.withdrawProtocolFees();
        assertEq(token.balanceOf(treasury), fee);
        assertEq(settlement.protocolFees(), 0);

        vm.prank(treasury);
        vm.expectRevert(Settlement.NothingToWithdraw.selector);
        settlement.withdrawProtocolFees();
    }

    function test_withdrawProtocolFees_byAdminPaysTreasury() public {
        _fund(payerA, 10_000);
        _post(ROOT, 1, _lines1(_line(payerA, providerX, 10_000)));
        vm.prank(admin);
        settlement.withdrawProtocolFees();
        assertEq(token.balanceOf(treasury), _fee(10_000, FEE_BPS));
        assertEq(token.balanceOf(admin), 0);
    }

    function test_withdrawProtocolFees_onlyTreasuryOrAdmin() public {
        _fund(payerA, 10_000);
        _post(ROOT, 1, _lines1(_line(payerA, providerX, 10_000)));
        vm.prank(settler);
        vm.expectRevert(abi.encodeWithSelector(Settlement.NotTreasuryOrAdmin.selector, settler));
        settlement.withdrawProtocolFees();
    }

    function _assertConserved() internal view {
        address[5] memory all = [payerA, payerB, providerX, providerY, treasury];
        uint256 sum = settlement.protocolFees();
        for (uint256 i; i < all.length; ++i) {
            sum += settlement.escrowOf(all[i]) + settlement.earningsOf(all[i]);
        }
        assertEq(token.balanceOf(address(settlement)), sum);
    }
}
