// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {FeeToken} from "../FeeToken.sol";
import {ProviderRegistry} from "../ProviderRegistry.sol";

contract ProviderRegistryTest is Test {
    uint64 internal constant DELAY = 7 days;
    uint256 internal constant STAKE = 1_000e18;
    bytes32 internal constant MODEL = keccak256("smollm2-135m-instruct");

    FeeToken internal token;
    ProviderRegistry internal registry;
    address internal admin = makeAddr("admin");
    address internal arbiter = makeAddr("arbiter");
    address internal treasury = makeAddr("treasury");
    address internal provider = makeAddr("provider");
    address internal other = makeAddr("other provider");
    address internal signer = makeAddr("node signer");
    address internal signer2 = makeAddr("node signer 2");

    function setUp() public {
        token = new FeeToken(address(this));
        registry = new ProviderRegistry(token, DELAY, admin, treasury);
        bytes32 role = registry.ARBITER_ROLE();
        vm.prank(admin);
        registry.grantRole(role, arbiter);
        _fundProvider(provider, 10 * STAKE);
        _fundProvider(other, 10 * STAKE);
    }

    function _fundProvider(address who, uint256 amount) internal {
        token.mint(who, amount);
        vm.prank(who);
        token.approve(address(registry), type(uint256).max);
    }

    function _register(address who, address signingKey) internal {
        vm.prank(who);
        registry.register(signingKey, "https://node.example:8443", MODEL, 150, 600, "eu-west", STAKE);
    }

    // ----------------------------------------------------------- constructor

    function test_constructor() public {
        assertEq(address(registry.token()), address(token));
        assertEq(registry.unbondingDelay(), DELAY);
        assertEq(registry.treasury(), treasury);
        assertEq(registry.ARBITER_ROLE(), keccak256("ARBITER_ROLE"));
        assertTrue(registry.hasRole(registry.DEFAULT_ADMIN_ROLE(), admin));

        vm.expectRevert(ProviderRegistry.ZeroAddress.selector);
        new ProviderRegistry(IERC20(address(0)), DELAY, admin, treasury);
        vm.expectRevert(ProviderRegistry.ZeroAddress.selector);
        new ProviderRegistry(token, DELAY, address(0), treasury);
        vm.expectRevert(ProviderRegistry.ZeroAddress.selector);
        new ProviderRegistry(token, DELAY, admin, address(0));
    }

    // ---------------------------------------------------------- registration

    function test_register_storesNodeAndPullsStake() public {
        vm.expectEmit(address(registry));
        emit ProviderRegistry.NodeRegistered(signer, provider, "https://node.example:8443", MODEL, 150, 600, "eu-west", STAKE);
        _register(provider, signer);

        ProviderRegistry.Node memory node = registry.nodeOf(signer);
        assertEq(node.provider, provider);
        assertEq(node.endpoint, "https://node.example:8443");
        assertEq(node.modelHash, MODEL);
        assertEq(node.priceInPer1M, 150);
        assertEq(node.priceOutPer1M, 600);
        assertEq(node.region, "eu-west");
        assertEq(node.stake, STAKE);
        assertEq(node.unbondingAt, 0);
        assertTrue(node.active);
        assertEq(token.balanceOf(address(registry)), STAKE);
        assertEq(token.balanceOf(provider), 9 * STAKE);
    }

    function test_register_revertsOnDuplicateSigner() public {
        _register(provider, signer);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.AlreadyRegistered.selector, signer));
        registry.register(signer, "x", MODEL, 1, 1, "x", STAKE);
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.AlreadyRegistered.selector, signer));
        registry.register(signer, "x", MODEL, 1, 1, "x", STAKE);
    }

    /// A signing key stays bound to its provider even after its stake is withdrawn.
    function test_register_revertsAfterWithdrawal() public {
        _register(provider, signer);
        vm.startPrank(provider);
        registry.unbond(signer);
        skip(DELAY);
        registry.withdrawStake(signer);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.AlreadyRegistered.selector, signer));
        registry.register(signer, "x", MODEL, 1, 1, "x", STAKE);
        vm.stopPrank();
    }

    function test_register_revertsOnZeroSignerOrStake() public {
        vm.startPrank(provider);
        vm.expectRevert(ProviderRegistry.ZeroAddress.selector);
        registry.register(address(0), "x", MODEL, 1, 1, "x", STAKE);
        vm.expectRevert(ProviderRegistry.ZeroAmount.selector);
        registry.register(signer, "x", MODEL, 1, 1, "x", 0);
        vm.stopPrank();
    }

    function test_register_revertsWithoutFunds() public {
        address broke = makeAddr("broke");
        vm.prank(broke);
        vm.expectRevert();
        registry.register(signer, "x", MODEL, 1, 1, "x", STAKE);
    }

    function test_enumeration() public {
        assertEq(registry.signerCount(), 0);
        _register(provider, signer);
        _register(other, signer2);
        address[] memory all = registry.signers();
        assertEq(all.length, 2);
        assertEq(all[0], signer);
        assertEq(all[1], signer2);
        assertEq(registry.signerCount(), 2);
        assertEq(registry.signerAt(1), signer2);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.IndexOutOfRange.selector, 2));
        registry.signerAt(2);
    }

    function test_nodeOf_unknownIsEmpty() public view {
        ProviderRegistry.Node memory node = registry.nodeOf(signer);
        assertEq(node.provider, address(0));
        assertFalse(node.active);
    }

    // ---------------------------------------------------------------- stake

    function test_addStake() public {
        _register(provider, signer);
        vm.expectEmit(address(registry));
        emit ProviderRegistry.StakeAdded(signer, provider, 5e18, STAKE + 5e18);
        vm.prank(provider);
        registry.addStake(signer, 5e18);
        assertEq(registry.nodeOf(signer).stake, STAKE + 5e18);
        assertEq(token.balanceOf(address(registry)), STAKE + 5e18);
    }

    function test_addStake_reverts() public {
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.UnknownSigner.selector, signer));
        registry.addStake(signer, 1);

        _register(provider, signer);
        vm.prank(provider);
        vm.expectRevert(ProviderRegistry.ZeroAmount.selector);
        registry.addStake(signer, 0);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotProvider.selector, signer, other));
        registry.addStake(signer, 1);

        vm.startPrank(provider);
        registry.unbond(signer);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotActive.selector, signer));
        registry.addStake(signer, 1);
        vm.stopPrank();
    }

    function test_unbond() public {
        _register(provider, signer);
        uint64 unlockAt = uint64(block.timestamp) + DELAY;
        vm.expectEmit(address(registry));
        emit ProviderRegistry.NodeUnbonding(signer, unlockAt);
        vm.prank(provider);
        registry.unbond(signer);
        ProviderRegistry.Node memory node = registry.nodeOf(signer);
        assertFalse(node.active);
        assertEq(node.unbondingAt, unlockAt);
        assertEq(node.stake, STAKE);
    }

    function test_unbond_reverts() public {
        vm.prank(provider);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.UnknownSigner.selector, signer));
        registry.unbond(signer);

        _register(provider, signer);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotProvider.selector, signer, other));
        registry.unbond(signer);

        vm.startPrank(provider);
        registry.unbond(signer);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.AlreadyUnbonding.selector, signer));
        registry.unbond(signer);
        vm.stopPrank();
    }

    function test_withdrawStake_afterDelayOnly() public {
        _register(provider, signer);
        vm.startPrank(provider);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotUnbonding.selector, signer));
        registry.withdrawStake(signer);

        registry.unbond(signer);
        uint64 unlockAt = uint64(block.timestamp) + DELAY;
        skip(DELAY - 1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.UnbondingNotElapsed.selector, signer, unlockAt));
        registry.withdrawStake(signer);

        skip(1);
        vm.expectEmit(address(registry));
        emit ProviderRegistry.StakeWithdrawn(signer, provider, STAKE);
        registry.withdrawStake(signer);
        assertEq(token.balanceOf(provider), 10 * STAKE);
        assertEq(registry.nodeOf(signer).stake, 0);

        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NothingToWithdraw.selector, signer));
        registry.withdrawStake(signer);
        vm.stopPrank();
    }

    function test_withdrawStake_onlyProvider() public {
        _register(provider, signer);
        vm.prank(provider);
        registry.unbond(signer);
        skip(DELAY);
        vm.prank(other);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotProvider.selector, signer, other));
        registry.withdrawStake(signer);
    }

    // -------------------------------------------------------------- slashing

    function test_slash_fraudDeactivatesAndPaysTreasury() public {
        _register(provider, signer);
        bytes32 evidence = keccak256("audit 17");
        uint8 fraud = registry.REASON_FRAUD();
        vm.expectEmit(address(registry));
        emit ProviderRegistry.Slashed(signer, provider, 100e18, evidence, fraud);
        vm.prank(arbiter);
        registry.slash(signer, 100e18, evidence, fraud);
        ProviderRegistry.Node memory node = registry.nodeOf(signer);
        assertFalse(node.active);
        assertEq(node.unbondingAt, 0);
        assertEq(node.stake, STAKE - 100e18);
        assertEq(token.balanceOf(treasury), 100e18);
        assertTrue(registry.evidenceUsed(evidence));
    }

    function test_slash_slaBreachKeepsNodeActive() public {
        _register(provider, signer);
        vm.prank(arbiter);
        registry.slash(signer, 1e18, keccak256("sla 1"), 1);
        assertEq(registry.REASON_SLA_BREACH(), 1);
        assertTrue(registry.nodeOf(signer).active);
        assertEq(registry.nodeOf(signer).stake, STAKE - 1e18);
    }

    function test_slash_cappedAtStake() public {
        _register(provider, signer);
        bytes32 evidence = keccak256("audit 18");
        vm.expectEmit(address(registry));
        emit ProviderRegistry.Slashed(signer, provider, STAKE, evidence, 0);
        vm.prank(arbiter);
        registry.slash(signer, 5 * STAKE, evidence, 0);
        assertEq(registry.nodeOf(signer).stake, 0);
        assertEq(token.balanceOf(treasury), STAKE);
        assertEq(token.balanceOf(address(registry)), 0);

        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NothingToSlash.selector, signer));
        registry.slash(signer, 1, keccak256("audit 19"), 0);
    }

    /// Leaving does not dodge an audit that lands before the stake is withdrawn.
    function test_slash_duringUnbonding() public {
        _register(provider, signer);
        vm.prank(provider);
        registry.unbond(signer);
        skip(DELAY);
        vm.prank(arbiter);
        registry.slash(signer, 300e18, keccak256("late audit"), 0);

        vm.prank(provider);
        registry.withdrawStake(signer);
        assertEq(token.balanceOf(provider), 9 * STAKE + 700e18);
        assertEq(token.balanceOf(treasury), 300e18);

        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NothingToSlash.selector, signer));
        registry.slash(signer, 1, keccak256("too late"), 0);
    }

    /// A node deactivated for fraud can still unbond and recover what is left.
    function test_fraudSlashedNodeCanUnbondTheRest() public {
        _register(provider, signer);
        vm.prank(arbiter);
        registry.slash(signer, 400e18, keccak256("audit"), 0);
        vm.startPrank(provider);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotActive.selector, signer));
        registry.addStake(signer, 1);
        registry.unbond(signer);
        skip(DELAY);
        registry.withdrawStake(signer);
        vm.stopPrank();
        assertEq(token.balanceOf(provider), 9 * STAKE + 600e18);
    }

    function test_slash_evidenceReuseReverts() public {
        _register(provider, signer);
        _register(other, signer2);
        bytes32 evidence = keccak256("audit 20");
        vm.startPrank(arbiter);
        registry.slash(signer, 1e18, evidence, 1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.EvidenceUsed.selector, evidence));
        registry.slash(signer, 1e18, evidence, 1);
        // Also across nodes: one piece of evidence is one penalty.
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.EvidenceUsed.selector, evidence));
        registry.slash(signer2, 1e18, evidence, 0);
        vm.stopPrank();
    }

    function test_slash_onlyArbiter() public {
        _register(provider, signer);
        bytes32 role = registry.ARBITER_ROLE();
        address[3] memory callers = [admin, provider, treasury];
        for (uint256 i; i < callers.length; ++i) {
            vm.prank(callers[i]);
            vm.expectRevert(
                abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, callers[i], role)
            );
            registry.slash(signer, 1, keccak256("x"), 0);
        }
    }

    function test_slash_rejectsBadInput() public {
        _register(provider, signer);
        vm.startPrank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.InvalidReason.selector, 2));
        registry.slash(signer, 1, keccak256("x"), 2);
        vm.expectRevert(ProviderRegistry.ZeroAmount.selector);
        registry.slash(signer, 0, keccak256("x"), 0);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.UnknownSigner.selector, signer2));
        registry.slash(signer2, 1, keccak256("x"), 0);
        vm.stopPrank();
        // None of the failed attempts consumed the evidence.
        assertFalse(registry.evidenceUsed(keccak256("x")));
    }

    function testFuzz_slash_conservesStake(uint256 stake, uint256 amount, uint8 reason) public {
        stake = _bound(stake, 1, 10 * STAKE);
        amount = _bound(amount, 1, type(uint256).max);
        reason = uint8(_bound(reason, 0, 1));
        vm.prank(other);
        registry.register(signer, "x", MODEL, 1, 1, "x", stake);
        vm.prank(arbiter);
        registry.slash(signer, amount, keccak256(abi.encode(amount)), reason);
        uint256 slashed = amount < stake ? amount : stake;
        assertEq(token.balanceOf(treasury), slashed);
        assertEq(registry.nodeOf(signer).stake, stake - slashed);
        assertEq(token.balanceOf(address(registry)), stake - slashed);
        assertEq(registry.nodeOf(signer).active, reason == 1);
    }
}
