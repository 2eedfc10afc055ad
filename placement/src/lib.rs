//! Where a node keeps each transformer layer: on which GPU, or in CPU RAM.
//!
//! [`plan`] takes a model's sizes ([`ModelProfile`], read from its GGUF file),
//! the load the node must hold at once ([`Workload`]) and measured hardware
//! facts ([`Hardware`]). It builds one placement per strategy, predicts the
//! decode speed of each, and returns the fastest that fits together with every
//! other strategy and the reason it lost. Pure functions: the node measures,
//! this crate decides, and a decision can be replayed from its inputs.
//!
//! # Units
//!
//! Sizes are bytes, bandwidths bytes/s, compute FLOP/s. Rates below
//! [`MIN_RATE_PER_S`] are refused as unit mistakes.
//!
//! # Memory model
//!
//! * A layer resident on a GPU holds its weights and its KV cache for
//!   `context_tokens × batch` tokens there; a layer computed on the CPU holds
//!   both in RAM.
//! * The embedding goes with the first layer (GPU or RAM); the head (final
//!   norm + LM head) goes on the last GPU used, else RAM.
//! * A streamed layer keeps its weights in RAM, its KV cache on the GPU that
//!   computes it, and that GPU keeps [`STREAM_BUFFERS`] copy buffers the size
//!   of the largest streamed layer.
//! * Every device that holds anything keeps back a reserve of
//!   max([`RESERVE_PERCENT`] % of its free memory, [`RESERVE_MIN_BYTES`]) for
//!   activations, scratch space and allocator slack; reported byte counts
//!   include it.
//!
//! # Speed model
//!
//! Decoding is memory-bound: every step reads every layer's weights once and
//! each sequence's KV cache once. A layer costs
//!
//! ```text
//! max((weight_bytes + batch × kv_bytes_at_context) / bandwidth,
//!     batch × flops_per_token_per_layer / flops_per_s)
//! ```
//!
//! on the device that computes it (a roofline: the compute term is the floor
//! that takes over at large batches, on the CPU first). A streamed layer also
//! pays `weight_bytes / min(h2d bandwidth, host RAM bandwidth)`, overlapped with
//! compute by double buffering, so it costs the larger of the two. The head is
//! read once per step with an average layer's FLOPs per byte; the embedding
//! (one row per token) and the hidden state crossing a device boundary (a few
//! KB) are ignored. KV is priced at the full `context_tokens`, so predictions
//! are what a full node delivers. Layers run in sequence, so a step costs the
//! sum. Single-stream tokens/s is `1 / step(1)`; batch tokens/s is
//! `batch / step(batch)`: weights are read once per step, KV and compute grow
//! with the batch. That is why streaming (paid once per step) can beat CPU
//! compute (paid per sequence) at large batches and lose at batch 1.
//!
//! # Strategies
//!
//! GPUs are filled fastest first (by memory bandwidth, then FLOP/s, then
//! ordinal), each holding one contiguous run of layers.
//!
//! * [`ALL_GPU`]: every layer on GPUs, split in proportion to usable VRAM; a
//!   fill-in-order split replaces it only when that is faster (GPUs of
//!   different speeds).
//! * [`GPU_PREFIX_CPU_OFFLOAD`]: the longest prefix that fits on the GPUs
//!   (at least one layer, at most all but one), the rest computed on the CPU.
//! * [`STREAM_FROM_HOST`]: the longest prefix that fits beside the streaming
//!   state; the other layers stay in RAM and are copied every step to the GPU
//!   with the fastest host link (`Placement::stream_gpu`), which also holds
//!   their KV cache and the head.
//! * [`CPU_ONLY`]: everything in RAM, computed on the CPU.
//!
//! The chosen placement has the highest predicted batch tokens/s; ties go to
//! fewer layers in CPU RAM, then to the order above. With GPUs of one speed,
//! more VRAM or RAM never lowers the chosen throughput (a tested property).
//! With GPUs of very different speeds "longest prefix" is a heuristic: in rare
//! corners (a slow card next to a fast one, KV-heavy batches) keeping a layer
//! off the slow card would be marginally faster.

//! [`chain`] plans pipelines across nodes: which node runs which span of
//! layers, with this planner laying each span out inside its node.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod candidates;
pub mod chain;
mod cost;
mod error;
mod memory;
mod model;
mod placement;
mod plan;
pub mod tiling;
mod units;

pub use error::PlacementError;
pub use memory::{reserve_bytes, RESERVE_MIN_BYTES, RESERVE_PERCENT, STREAM_BUFFERS};
pub use model::{Gpu, Hardware, Host, LayerCost, ModelProfile, Workload, MIN_RATE_PER_S};
pub use placement::{
    Device, LayerSpan, Placement, Plan, Rejected, ALL_GPU, CPU_ONLY, GPU_PREFIX_CPU_OFFLOAD,
    STRATEGIES, STREAM_FROM_HOST,
};
pub use plan::{plan, SPEED_TIE_TOLERANCE};
