// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {StdInvariant} from "forge-std/StdInvariant.sol";
import {FeeToken} from "../FeeToken.sol";
import {Settlement} from "../Settlement.sol";

/// @notice Drives Settlement through random sequences of every user-facing action
/// (deposits, withdrawal requests and withdrawals, invoices with short payers,
/// earnings and fee payouts). Inputs are bounded to what each action accepts, so
/// a revert here is a bug (fail_on_revert in foundry.toml).
contract SettlementHandler is Test {
    Settlement internal immutable s;
    FeeToken internal immutable token;
    address internal immutable settler;
    address internal immutable treasury;
    address internal immutable admin;

    address[] public payers;
    address[] public providers;
    uint256 internal batches;

    constructor(Settlement s_, FeeToken token_, address settler_, address treasury_, address admin_) {
        s = s_;
        token = token_;
        settler = settler_;
        treasury = treasury_;
        admin = admin_;
        for (uint256 i; i < 4; ++i) {
            payers.push(makeAddr(string.concat("payer", vm.toString(i))));
        }
        for (uint256 i; i < 3; ++i) {
            providers.push(makeAddr(string.concat("provider", vm.toString(i))));
        }
    }

    function payerCount() external view returns (uint256) {
        return payers.length;
    }

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    function deposit(uint256 who, uint256 amount) external {
        address payer = payers[who % payers.length];
        amount = _bound(amount, 1, 1e27);
        token.mint(payer, amount);
        vm.startPrank(payer);
        token.approve(address(s), amount);
        s.deposit(amount);
        vm.stopPrank();
    }

    function depositFor(uint256 from, uint256 to, uint256 amount) external {
        address funder = providers[from % providers.length];
        amount = _bound(amount, 1, 1e27);
        token.mint(funder, amount);
        vm.startPrank(funder);
        token.approve(address(s), amount);
        s.depositFor(payers[to % payers.length], amount);
        vm.stopPrank();
    }

    function requestWithdrawal(uint256 who, uint256 amount) external {
        address payer = payers[who % payers.length];
        uint256 escrow = s.escrowOf(payer);
        if (escrow == 0) return;
        vm.prank(payer);
        s.requestWithdrawal(_bound(amount, 1, escrow));
    }

    function withdraw(uint256 who) external {
        address payer = payers[who % payers.length];
        (, uint64 unlockAt) = s.pendingWithdrawalOf(payer);
        if (unlockAt == 0) return;
        if (block.timestamp < unlockAt) vm.warp(unlockAt);
        vm.prank(payer);
        s.withdraw();
    }

    /// Line amounts run up to twice a typical escrow, so short payers are common.
    function postInvoice(uint256 seed, uint256 lineCount) external {
        lineCount = _bound(lineCount, 1, 6);
        Settlement.Line[] memory lines = new Settlement.Line[](lineCount);
        for (uint256 i; i < lineCount; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            lines[i] = Settlement.Line({
                payer: payers[r % payers.length],
                provider: providers[(r >> 8) % providers.length],
                amount: (r >> 16) % 2e27
            });
        }
        ++batches;
        vm.prank(settler);
        s.postInvoice(keccak256(abi.encode("batch", batches)), uint32(lineCount), lines, "");
    }

    function withdrawEarnings(uint256 who) external {
        address provider = providers[who % providers.length];
        if (s.earningsOf(provider) == 0) return;
        vm.prank(provider);
        s.withdrawEarnings();
    }

    function withdrawProtocolFees(bool byAdmin) external {
        if (s.protocolFees() == 0) return;
        vm.prank(byAdmin ? admin : treasury);
        s.withdrawProtocolFees();
    }
}

contract SettlementInvariantTest is StdInvariant, Test {
    FeeToken internal token;
    Settlement internal settlement;
    SettlementHandler internal handler;
    address internal treasury = makeAddr("treasury");

    function setUp() public {
        token = new FeeToken(address(this));
        address admin = makeAddr("admin");
        address settler = makeAddr("settler");
        settlement = new Settlement(token, admin, settler, treasury, 300, 1 hours);
        handler = new SettlementHandler(settlement, token, settler, treasury, admin);
        // The handler mints test funds.
        token.transferOwnership(address(handler));

        bytes4[] memory selectors = new bytes4[](7);
        selectors[0] = SettlementHandler.deposit.selector;
        selectors[1] = SettlementHandler.depositFor.selector;
        selectors[2] = SettlementHandler.requestWithdrawal.selector;
        selectors[3] = SettlementHandler.withdraw.selector;
        selectors[4] = SettlementHandler.postInvoice.selector;
        selectors[5] = SettlementHandler.withdrawEarnings.selector;
        selectors[6] = SettlementHandler.withdrawProtocolFees.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
        targetContract(address(handler));
    }

    /// The contract holds exactly what it owes: escrows + earnings + protocol fees.
    function invariant_balanceEqualsLiabilities() public view {
        uint256 owed = settlement.protocolFees();
        for (uint256 i; i < handler.payerCount(); ++i) {
            owed += settlement.escrowOf(handler.payers(i));
        }
        for (uint256 i; i < handler.providerCount(); ++i) {
            owed += settlement.earningsOf(handler.providers(i));
        }
        assertEq(token.balanceOf(address(settlement)), owed);
    }

    /// No token is created or lost: everything minted is held by a party or the contract.
    function invariant_noTokensLost() public view {
        uint256 held = token.balanceOf(address(settlement)) + token.balanceOf(treasury);
        for (uint256 i; i < handler.payerCount(); ++i) {
            held += token.balanceOf(handler.payers(i));
        }
        for (uint256 i; i < handler.providerCount(); ++i) {
            held += token.balanceOf(handler.providers(i));
        }
        assertEq(token.totalSupply(), held);
    }
}
