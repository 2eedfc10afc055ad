//! Tollgate's routing policies: the YAML model operators write, its
//! validation, and `choose`, which ranks candidate nodes for one request.
//!
//! Everything here is a pure function of its inputs: no I/O, no clocks, no
//! global randomness, so every decision can be replayed and explained.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alias;
pub mod cap;
mod decision;
pub mod engine;
mod facts;
mod filter;
mod glob;
pub mod history;
mod holdback;
pub mod model;
pub mod price;
pub mod sla;
mod strategy;
pub mod validate;
mod weighted;

pub use engine::{
    choose, choose_with_history, Candidate, Decision, RejectReason, Rejection, Route, RouteRequest,
    DEFAULT_POLICY,
};
pub use history::{History, NoHistory};
pub use model::{
    Alias, Cap, Filters, Match, Measure, Pattern, Policy, PolicySet, RegionFilter, Sla, SlaSlash,
    Slo, Strategy,
};
pub use price::{format_atto, Price, PriceError, PriceProblem, Prices};
pub use sla::{Outcome, Standing};
pub use validate::{display_path, PathSegment, ValidationError};
