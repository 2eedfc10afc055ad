//! Behaviour of the public API, one module per concern.

mod common;
mod explain;
mod fallback;
mod filters;
mod glob;
mod lookback;
mod matching;
mod price;
mod props;
mod strategies;
mod validate;
mod yaml;
