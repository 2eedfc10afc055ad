//! Tollgate's routing policies: the YAML model operators write, its
//! validation, and `choose`, which ranks candidate nodes for one request.
//!
//! Everything here is a pure function of its inputs: no I/O, no clocks, no
//! global randomness, so every decision can be replayed and explained.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decision;
pub mod engine;
mod facts;
mod filter;
mod glob;
pub mod model;
pub mod price;
mod strategy;
pub mod validate;
mod weighted;

pub use engine::{
    choose, Candidate, Decision, RejectReason, Rejection, Route, RouteRequest, DEFAULT_POLICY,
};
pub use model::{Filters, Match, Pattern, Policy, PolicySet, RegionFilter, Slo, Strategy};
pub use price::{format_atto, Price, PriceError, PriceProblem, Prices};
pub use validate::{display_path, PathSegment, ValidationError};
