// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title Tollgate provider registry
/// @notice Inference providers bond stake behind each node's signing key. The
/// gateway enumerates active nodes to route to, and arbiters slash the stake of a
/// node that fails an audit (fraud) or breaches its SLA, with the evidence hash
/// on-chain so every slash can be traced to the audit record behind it.
contract ProviderRegistry is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");

    /// @notice Slash reasons. Only fraud deactivates: an SLA breach is priced by
    /// the slash itself and the node may keep serving.
    uint8 public constant REASON_FRAUD = 0;
    uint8 public constant REASON_SLA_BREACH = 1;

    struct Node {
        address provider;
        string endpoint;
        bytes32 modelHash;
        uint256 priceInPer1M;
        uint256 priceOutPer1M;
        string region;
        uint256 stake;
        /// Zero while bonded; once unbonding, the time the stake can be withdrawn.
        uint64 unbondingAt;
        bool active;
    }

    IERC20 public immutable token;
    /// @notice How long stake stays slashable after the provider stops serving, so
    /// audits of its last receipts can still land.
    uint64 public immutable unbondingDelay;
    address public immutable treasury;

    mapping(address signer => Node) private _nodes;
    address[] private _signers;
    mapping(bytes32 evidenceHash => bool) public evidenceUsed;

    event NodeRegistered(
        address indexed signer,
        address indexed provider,
        string endpoint,
        bytes32 modelHash,
        uint256 priceInPer1M,
        uint256 priceOutPer1M,
        string region,
        uint256 stake
    );
    event StakeAdded(address indexed signer, address indexed provider, uint256 amount, uint256 stake);
    event NodeUnbonding(address indexed signer, uint64 unlockAt);
    event StakeWithdrawn(address indexed signer, address indexed provider, uint256 amount);
    event Slashed(
        address indexed signer, address indexed provider, uint256 amount, bytes32 indexed evidenceHash, uint8 reason
    );

    error ZeroAddress();
    error ZeroAmount();
    error AlreadyRegistered(address signer);
    error UnknownSigner(address signer);
    error NotProvider(address signer, address caller);
    error NotActive(address signer);
    error AlreadyUnbonding(address signer);
    error NotUnbonding(address signer);
    error UnbondingNotElapsed(address signer, uint64 unlockAt);
    error NothingToWithdraw(address signer);
    error NothingToSlash(address signer);
    error EvidenceUsed(bytes32 evidenceHash);
    error InvalidReason(uint8 reason);
    error IndexOutOfRange(uint256 index);

    constructor(IERC20 token_, uint64 unbondingDelay_, address admin, address treasury_) {
        if (address(token_) == address(0) || admin == address(0) || treasury_ == address(0)) revert ZeroAddress();
        token = token_;
        unbondingDelay = unbondingDelay_;
        treasury = treasury_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Registers the node that signs with `signer`, bonding `stake` from the
    /// caller, who becomes its provider. A signing address is registered at most once,
    /// ever: receipts signed by it must map to one provider for good. Nothing proves
    /// the caller holds the signer's key, so providers register fresh keys.
    function register(
        address signer,
        string calldata endpoint,
        bytes32 modelHash,
        uint256 priceInPer1M,
        uint256 priceOutPer1M,
        string calldata region,
        uint256 stake
    ) external {
        if (signer == address(0)) revert ZeroAddress();
        if (stake == 0) revert ZeroAmount();
        if (_nodes[signer].provider != address(0)) revert AlreadyRegistered(signer);

        _nodes[signer] = Node({
            provider: msg.sender,
            endpoint: endpoint,
            modelHash: modelHash,
            priceInPer1M: priceInPer1M,
            priceOutPer1M: priceOutPer1M,
            region: region,
            stake: stake,
            unbondingAt: 0,
            active: true
        });
        _signers.push(signer);

        emit NodeRegistered(signer, msg.sender, endpoint, modelHash, priceInPer1M, priceOutPer1M, region, stake);
        token.safeTransferFrom(msg.sender, address(this), stake);
    }

    function addStake(address signer, uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Node storage node = _ownedNode(signer);
        // Stake on a node that cannot serve would only be slashable, never useful.
        if (!node.active) revert NotActive(signer);
        uint256 stake = node.stake + amount;
        node.stake = stake;
        emit StakeAdded(signer, msg.sender, amount, stake);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Stops the node serving and starts the unbonding clock. Also the way out
    /// for a node deactivated by a fraud slash that still has stake left.
    function unbond(address signer) external {
        Node storage node = _ownedNode(signer);
        if (node.unbondingAt != 0) revert AlreadyUnbonding(signer);
        uint64 unlockAt = uint64(block.timestamp) + unbondingDelay;
        node.active = false;
        node.unbondingAt = unlockAt;
        emit NodeUnbonding(signer, unlockAt);
    }

    function withdrawStake(address signer) external {
        Node storage node = _ownedNode(signer);
        uint64 unlockAt = node.unbondingAt;
        if (unlockAt == 0) revert NotUnbonding(signer);
        // Delays are hours to days; seconds of validator drift do not matter.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < unlockAt) revert UnbondingNotElapsed(signer, unlockAt);
        uint256 amount = node.stake;
        if (amount == 0) revert NothingToWithdraw(signer);
        node.stake = 0;
        emit StakeWithdrawn(signer, msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Takes up to `amount` of the node's stake to the treasury. Works until
    /// the stake is withdrawn, unbonding included, so a provider cannot dodge a
    /// pending audit by leaving. Each evidence hash pays out once.
    function slash(address signer, uint256 amount, bytes32 evidenceHash, uint8 reason)
        external
        onlyRole(ARBITER_ROLE)
    {
        if (reason > REASON_SLA_BREACH) revert InvalidReason(reason);
        if (amount == 0) revert ZeroAmount();
        if (evidenceUsed[evidenceHash]) revert EvidenceUsed(evidenceHash);
        Node storage node = _nodes[signer];
        address provider = node.provider;
        if (provider == address(0)) revert UnknownSigner(signer);
        uint256 stake = node.stake;
        if (stake == 0) revert NothingToSlash(signer);

        uint256 slashed = amount < stake ? amount : stake;
        evidenceUsed[evidenceHash] = true;
        unchecked {
            node.stake = stake - slashed;
        }
        if (reason == REASON_FRAUD) node.active = false;

        emit Slashed(signer, provider, slashed, evidenceHash, reason);
        token.safeTransfer(treasury, slashed);
    }

    function nodeOf(address signer) external view returns (Node memory) {
        return _nodes[signer];
    }

    /// @notice Every signer ever registered, active or not; filter with nodeOf.
    function signers() external view returns (address[] memory) {
        return _signers;
    }

    function signerCount() external view returns (uint256) {
        return _signers.length;
    }

    /// @notice Paged enumeration for when signers() outgrows an RPC's gas cap.
    function signerAt(uint256 index) external view returns (address) {
        if (index >= _signers.length) revert IndexOutOfRange(index);
        return _signers[index];
    }

    function _ownedNode(address signer) private view returns (Node storage node) {
        node = _nodes[signer];
        address provider = node.provider;
        if (provider == address(0)) revert UnknownSigner(signer);
        if (provider != msg.sender) revert NotProvider(signer, msg.sender);
    }
}
