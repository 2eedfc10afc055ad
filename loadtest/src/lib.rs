//! Tollgate's load-testing kit: an instant OpenAI-compatible upstream (also a
//! fault-injecting test double) and an open-loop load generator.

pub mod load;
pub mod upstream;
