//! Tollgate's load-testing kit: an instant OpenAI-compatible upstream (also a
//! fault-injecting test double), an open-loop load generator, and a lying
//! node for testing audits.

pub mod cheat;
pub mod load;
pub mod upstream;
