// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title Tollgate settlement
/// @notice Payers escrow fee tokens; the gateway's settler posts one invoice per
/// batch of metered requests: a Merkle root over every request's Receipt plus one
/// line per (payer, provider) total. Settlement cost therefore scales with the
/// lines, not with the requests, and any single request can still be checked
/// against the posted root with verifyReceipt.
///
/// Merkle tree (the gateway builds the same one off-chain): leaves are
/// receiptLeaf(r) in batch order; each level hashes pairs (i, i+1) with
/// OpenZeppelin's commutative keccak256 and carries an odd last node up
/// unchanged; a single leaf is the root. Leaves hash a 320-byte encoding, never
/// 64 bytes, so an inner node cannot be passed off as a receipt.
contract Settlement is AccessControl {
    using SafeERC20 for IERC20;

    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    uint256 private constant BPS = 10_000;

    /// @dev Field order is the leaf encoding; changing it breaks every posted root.
    struct Receipt {
        bytes32 requestId; // keccak256 of the UTF-8 request id
        address payer;
        address provider;
        bytes32 model; // keccak256 of the UTF-8 model name
        uint64 promptTokens;
        uint64 completionTokens;
        uint256 priceInPer1M; // atto-units of the fee token per 1M tokens
        uint256 priceOutPer1M;
        uint256 amount; // receiptAmount(...) of the fields above
        bytes32 responseHash; // sha256 of the response bytes the client received
    }

    struct Line {
        address payer;
        address provider;
        uint256 amount;
    }

    /// @dev Three storage slots, the least these fields fit in: the root, then
    /// count + postedAt + billed (224 bits), then paid.
    struct Invoice {
        bytes32 merkleRoot;
        uint32 receiptCount;
        uint64 postedAt;
        uint128 billed;
        uint128 paid;
    }

    struct PendingWithdrawal {
        uint256 amount;
        uint64 unlockAt;
    }

    IERC20 public immutable token;
    address public immutable treasury;
    uint16 public immutable protocolFeeBps;
    /// @notice How long a payer's withdrawal waits, so usage already served but not
    /// yet invoiced can still be settled against the escrow.
    uint64 public immutable withdrawalDelay;

    mapping(address payer => uint256) private _escrow;
    mapping(address payer => PendingWithdrawal) private _pending;
    mapping(address provider => uint256) private _earnings;
    mapping(bytes32 batchId => Invoice) private _invoices;
    uint256 public protocolFees;

    event Deposited(address indexed payer, address indexed from, uint256 amount);
    event WithdrawalRequested(address indexed payer, uint256 amount, uint64 unlockAt);
    event Withdrawn(address indexed payer, uint256 amount);
    event EarningsWithdrawn(address indexed provider, uint256 amount);
    event ProtocolFeesWithdrawn(address indexed treasury, uint256 amount);
    event InvoiceLine(
        bytes32 indexed batchId, address indexed payer, address indexed provider, uint256 billed, uint256 paid
    );
    event PayerShortfall(
        bytes32 indexed batchId, address indexed payer, address indexed provider, uint256 owed, uint256 paid
    );
    event InvoicePosted(
        bytes32 indexed batchId,
        bytes32 merkleRoot,
        uint32 receiptCount,
        uint256 billed,
        uint256 paid,
        uint256 protocolFee,
        string uri
    );

    error ZeroAddress();
    error ZeroAmount();
    error FeeTooHigh(uint16 bps);
    error ZeroRoot();
    error EmptyBatch();
    error NoLines();
    error InvalidLine(uint256 index);
    error BatchExists(bytes32 batchId);
    error InsufficientEscrow(uint256 requested, uint256 available);
    error NoPendingWithdrawal();
    error WithdrawalLocked(uint64 unlockAt);
    error NothingToWithdraw();
    error NotTreasuryOrAdmin(address caller);
    error AmountOverflow();

    constructor(
        IERC20 token_,
        address admin,
        address settler,
        address treasury_,
        uint16 protocolFeeBps_,
        uint64 withdrawalDelay_
    ) {
        if (address(token_) == address(0) || admin == address(0) || settler == address(0) || treasury_ == address(0))
        {
            revert ZeroAddress();
        }
        if (protocolFeeBps_ > BPS) revert FeeTooHigh(protocolFeeBps_);
        token = token_;
        treasury = treasury_;
        protocolFeeBps = protocolFeeBps_;
        withdrawalDelay = withdrawalDelay_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(SETTLER_ROLE, settler);
    }

    // ---------------------------------------------------------------- escrow

    function deposit(uint256 amount) external {
        _deposit(msg.sender, amount);
    }

    /// @notice Lets an operator fund an account's escrow without holding its key.
    function depositFor(address payer, uint256 amount) external {
        if (payer == address(0)) revert ZeroAddress();
        _deposit(payer, amount);
    }

    /// @notice Starts (or restarts) the withdrawal clock. The escrow stays settleable
    /// until withdraw(): requesting is notice, not a lock on the funds.
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 available = _escrow[msg.sender];
        if (amount > available) revert InsufficientEscrow(amount, available);
        uint64 unlockAt = uint64(block.timestamp) + withdrawalDelay;
        _pending[msg.sender] = PendingWithdrawal(amount, unlockAt);
        emit WithdrawalRequested(msg.sender, amount, unlockAt);
    }

    /// @notice Pays out what is left of the request after settlement drew on the
    /// escrow, and always clears the request, even when that is nothing.
    function withdraw() external {
        PendingWithdrawal memory pending = _pending[msg.sender];
        if (pending.unlockAt == 0) revert NoPendingWithdrawal();
        // Delays are hours to days; seconds of validator drift do not matter.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < pending.unlockAt) revert WithdrawalLocked(pending.unlockAt);
        uint256 balance = _escrow[msg.sender];
        uint256 amount = Math.min(pending.amount, balance);
        delete _pending[msg.sender];
        unchecked {
            _escrow[msg.sender] = balance - amount;
        }
        emit Withdrawn(msg.sender, amount);
        if (amount != 0) token.safeTransfer(msg.sender, amount);
    }

    function escrowOf(address payer) external view returns (uint256) {
        return _escrow[payer];
    }

    function pendingWithdrawalOf(address payer) external view returns (uint256 amount, uint64 unlockAt) {
        PendingWithdrawal memory pending = _pending[payer];
        return (pending.amount, pending.unlockAt);
    }

    // -------------------------------------------------------------- invoices

    /// @notice Settles one batch. The id is content-derived, so a settler that
    /// resends after a crash gets BatchExists instead of billing twice. A payer
    /// whose escrow cannot cover a line pays what it has, and the gap is emitted
    /// as PayerShortfall for the gateway to act on; the rest of the batch settles.
    function postInvoice(bytes32 merkleRoot, uint32 receiptCount, Line[] calldata lines, string calldata uri)
        external
        onlyRole(SETTLER_ROLE)
        returns (bytes32 batchId)
    {
        // A zero root is what an absent invoice reads as; refusing it keeps
        // "root != 0" a one-slot existence check.
        if (merkleRoot == bytes32(0)) revert ZeroRoot();
        if (receiptCount == 0) revert EmptyBatch();
        if (lines.length == 0) revert NoLines();
        batchId = batchIdOf(merkleRoot, receiptCount);
        Invoice storage invoice = _invoices[batchId];
        if (invoice.merkleRoot != bytes32(0)) revert BatchExists(batchId);

        (uint256 billed, uint256 paid, uint256 fee) = _settleLines(batchId, lines);

        invoice.merkleRoot = merkleRoot;
        invoice.receiptCount = receiptCount;
        invoice.postedAt = uint64(block.timestamp);
        invoice.billed = SafeCast.toUint128(billed);
        invoice.paid = SafeCast.toUint128(paid);
        if (fee != 0) protocolFees += fee;

        emit InvoicePosted(batchId, merkleRoot, receiptCount, billed, paid, fee, uri);
    }

    function batchIdOf(bytes32 root, uint32 count) public pure returns (bytes32) {
        return keccak256(abi.encode(root, count));
    }

    function invoices(bytes32 batchId) external view returns (Invoice memory) {
        return _invoices[batchId];
    }

    /// @notice True iff the batch was posted, `r` is one of its leaves, and `r`'s
    /// amount is what its own token counts and prices come to, so a receipt cannot
    /// be in a batch at a price other than the one it states.
    function verifyReceipt(bytes32 batchId, Receipt calldata r, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        bytes32 root = _invoices[batchId].merkleRoot;
        if (root == bytes32(0)) return false;
        (bool ok, uint256 amount) =
            _receiptAmount(r.promptTokens, r.completionTokens, r.priceInPer1M, r.priceOutPer1M);
        if (!ok || amount != r.amount) return false;
        return MerkleProof.verifyCalldata(proof, root, receiptLeaf(r));
    }

    function receiptLeaf(Receipt calldata r) public pure returns (bytes32) {
        return keccak256(abi.encode(r));
    }

    /// @notice (promptTokens * priceInPer1M + completionTokens * priceOutPer1M) / 1e6,
    /// rounded down, as the gateway meters it.
    function receiptAmount(uint64 promptTokens, uint64 completionTokens, uint256 priceInPer1M, uint256 priceOutPer1M)
        external
        pure
        returns (uint256)
    {
        (bool ok, uint256 amount) = _receiptAmount(promptTokens, completionTokens, priceInPer1M, priceOutPer1M);
        if (!ok) revert AmountOverflow();
        return amount;
    }

    // -------------------------------------------------------------- payouts

    function earningsOf(address provider) external view returns (uint256) {
        return _earnings[provider];
    }

    function withdrawEarnings() external {
        uint256 amount = _earnings[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        _earnings[msg.sender] = 0;
        emit EarningsWithdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Always pays the treasury; the admin may trigger it so a treasury that
    /// is a contract without call logic can still collect.
    function withdrawProtocolFees() external {
        if (msg.sender != treasury && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert NotTreasuryOrAdmin(msg.sender);
        }
        uint256 amount = protocolFees;
        if (amount == 0) revert NothingToWithdraw();
        protocolFees = 0;
        emit ProtocolFeesWithdrawn(treasury, amount);
        token.safeTransfer(treasury, amount);
    }

    // ------------------------------------------------------------- internals

    function _deposit(address payer, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        _escrow[payer] += amount;
        emit Deposited(payer, msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    function _settleLines(bytes32 batchId, Line[] calldata lines)
        private
        returns (uint256 billed, uint256 paid, uint256 fee)
    {
        uint256 n = lines.length;
        for (uint256 i; i < n;) {
            (uint256 linePaid, uint256 lineFee) = _settleLine(batchId, lines[i], i);
            // Billed is the settler's claim and is not bounded by any balance, so it
            // stays checked; paid and fees are bounded by the tokens held here.
            billed += lines[i].amount;
            unchecked {
                paid += linePaid;
                fee += lineFee;
                ++i;
            }
        }
    }

    /// @dev The only per-line storage is the payer's escrow and the provider's
    /// earnings; everything else about the line lives in its events.
    function _settleLine(bytes32 batchId, Line calldata line, uint256 index)
        private
        returns (uint256 paid, uint256 fee)
    {
        address payer = line.payer;
        address provider = line.provider;
        uint256 owed = line.amount;
        // Earnings credited to address(0) could never be withdrawn.
        if (payer == address(0) || provider == address(0)) revert InvalidLine(index);

        uint256 balance = _escrow[payer];
        paid = owed < balance ? owed : balance;
        if (paid != 0) {
            // Every sum below is bounded by this contract's token balance (the
            // conservation invariant), so none can overflow. The fee is split into
            // quotient and remainder so paid * bps cannot overflow either; the
            // result equals floor(paid * bps / 10000) exactly.
            unchecked {
                _escrow[payer] = balance - paid;
                uint256 bps = protocolFeeBps;
                // forge-lint: disable-next-line(divide-before-multiply)
                fee = (paid / BPS) * bps + ((paid % BPS) * bps) / BPS;
                _earnings[provider] += paid - fee;
            }
        }
        if (paid < owed) emit PayerShortfall(batchId, payer, provider, owed, paid);
        emit InvoiceLine(batchId, payer, provider, owed, paid);
    }

    function _receiptAmount(
        uint64 promptTokens,
        uint64 completionTokens,
        uint256 priceInPer1M,
        uint256 priceOutPer1M
    ) private pure returns (bool ok, uint256 amount) {
        (bool okIn, uint256 costIn) = Math.tryMul(promptTokens, priceInPer1M);
        (bool okOut, uint256 costOut) = Math.tryMul(completionTokens, priceOutPer1M);
        (bool okSum, uint256 total) = Math.tryAdd(costIn, costOut);
        if (!(okIn && okOut && okSum)) return (false, 0);
        return (true, total / 1_000_000);
    }
}
