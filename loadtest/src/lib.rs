//! Tollgate's load-testing kit: an instant OpenAI-compatible upstream (also a
//! fault-injecting test double), an open-loop load generator, a lying node
//! for testing audits, and a WAN link emulator.

pub mod cheat;
pub mod link;
pub mod load;
pub mod upstream;
