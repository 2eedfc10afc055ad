//! Tollgate's on-chain settlement: contract bindings, the receipt Merkle tree,
//! the settler that posts invoices, and the audit finance runs against them.

pub mod audit;
pub mod bindings;
pub mod chain;
pub mod deploy;
pub mod merkle;
pub mod receipt;
pub mod settler;
pub mod slash;

pub use chain::{Chain, ChainError, Deployment};
pub use settler::{Settler, SettlerConfig, Step};
