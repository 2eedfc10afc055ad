//! The contracts' interfaces as alloy types.
//!
//! Declared here rather than read from Foundry's artifacts so that the Rust
//! build does not need the Solidity toolchain; `tests/abi.rs` checks every
//! selector and event topic against the compiled artifacts, so the two cannot
//! drift apart unnoticed. Deployment reads the bytecode from those artifacts.

#![allow(missing_docs)]
// Generated constructors mirror the Solidity signatures, argument for argument.
#![allow(clippy::too_many_arguments)]

use alloy::sol;

sol! {
    /// The ERC-20 fee token of local runs.
    #[sol(rpc)]
    contract FeeToken {
        function mint(address to, uint256 amount) external;
        function approve(address spender, uint256 value) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function transfer(address to, uint256 value) external returns (bool);
    }
}

sol! {
    /// Nodes, their stakes, and slashing against evidence.
    #[sol(rpc)]
    contract ProviderRegistry {
        struct Node {
            address provider;
            string endpoint;
            bytes32 modelHash;
            uint256 priceInPer1M;
            uint256 priceOutPer1M;
            string region;
            uint256 stake;
            uint64 unbondingAt;
            bool active;
        }

        event NodeRegistered(address indexed signer, address indexed provider, string endpoint, bytes32 modelHash, uint256 priceInPer1M, uint256 priceOutPer1M, string region, uint256 stake);
        event Slashed(address indexed signer, address indexed provider, uint256 amount, bytes32 indexed evidenceHash, uint8 reason);

        function register(address signer, string calldata endpoint, bytes32 modelHash, uint256 priceInPer1M, uint256 priceOutPer1M, string calldata region, uint256 stake) external;
        function nodeOf(address signer) external view returns (Node memory);
        function signers() external view returns (address[] memory);
        function addStake(address signer, uint256 amount) external;
        function slash(address signer, uint256 amount, bytes32 evidenceHash, uint8 reason) external;
        function grantRole(bytes32 role, address account) external;
        function hasRole(bytes32 role, address account) external view returns (bool);
        function evidenceUsed(bytes32 evidenceHash) external view returns (bool);
    }
}

sol! {
    /// Payer escrow, invoices and provider earnings.
    #[sol(rpc)]
    contract Settlement {
        struct Receipt {
            bytes32 requestId;
            address payer;
            address provider;
            bytes32 model;
            uint64 promptTokens;
            uint64 completionTokens;
            uint256 priceInPer1M;
            uint256 priceOutPer1M;
            uint256 amount;
            bytes32 responseHash;
        }

        struct Line {
            address payer;
            address provider;
            uint256 amount;
        }

        struct Invoice {
            bytes32 merkleRoot;
            uint32 receiptCount;
            uint64 postedAt;
            uint128 billed;
            uint128 paid;
        }

        event InvoicePosted(bytes32 indexed batchId, bytes32 merkleRoot, uint32 receiptCount, uint256 billed, uint256 paid, uint256 protocolFee, string uri);
        event InvoiceLine(bytes32 indexed batchId, address indexed payer, address indexed provider, uint256 billed, uint256 paid);
        event PayerShortfall(bytes32 indexed batchId, address indexed payer, address indexed provider, uint256 owed, uint256 paid);

        error BatchExists(bytes32 batchId);

        function deposit(uint256 amount) external;
        function depositFor(address payer, uint256 amount) external;
        function escrowOf(address payer) external view returns (uint256);
        function earningsOf(address provider) external view returns (uint256);
        function postInvoice(bytes32 merkleRoot, uint32 receiptCount, Line[] calldata lines, string calldata uri) external returns (bytes32 batchId);
        function invoices(bytes32 batchId) external view returns (Invoice memory);
        function batchIdOf(bytes32 root, uint32 count) external pure returns (bytes32);
        function verifyReceipt(bytes32 batchId, Receipt calldata r, bytes32[] calldata proof) external view returns (bool);
        function receiptLeaf(Receipt calldata r) external pure returns (bytes32);
        function receiptAmount(uint64 promptTokens, uint64 completionTokens, uint256 priceInPer1M, uint256 priceOutPer1M) external pure returns (uint256);
    }
}
