//! When each byte of one direction of an emulated link arrives (pure).
//!
//! A direction is a serial line of `bandwidth` bytes/s followed by a wire of
//! one-way `latency` (plus `jitter`): a chunk that enters at `t` starts
//! sending once the line is free, finishes after `len / bandwidth`, and
//! arrives `latency` later. Arrivals never overtake each other, as on a TCP
//! stream, so jitter stretches gaps but cannot reorder bytes.

use std::time::Duration;

/// One direction's properties.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Direction {
    /// One-way delay.
    pub latency: Duration,
    /// Each chunk's delay varies uniformly within +-`jitter` of `latency`.
    pub jitter: Duration,
    /// Bytes per second; None: unlimited.
    pub bandwidth: Option<f64>,
}

impl Direction {
    /// A direction with only a one-way delay.
    pub fn delay(latency: Duration) -> Self {
        Self {
            latency,
            jitter: Duration::ZERO,
            bandwidth: None,
        }
    }
}

/// The arrival schedule of one direction, in seconds since the link started.
#[derive(Clone, Debug)]
pub struct Schedule {
    direction: Direction,
    line_free_at: f64,
    last_arrival: f64,
}

impl Schedule {
    /// An idle direction.
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            line_free_at: 0.0,
            last_arrival: 0.0,
        }
    }

    /// Largest chunk sent as one unit: pacing is smooth at this grain, and
    /// a slow line does not hold a whole read back.
    pub fn max_chunk(&self) -> usize {
        match self.direction.bandwidth {
            // About 5 ms of line time, within 1 KiB..64 KiB.
            Some(bw) => ((bw * 0.005) as usize).clamp(1024, 64 * 1024),
            None => 64 * 1024,
        }
    }

    /// When a chunk of `len` bytes entering at `now` arrives; `unit` in
    /// [0, 1) draws its jitter.
    pub fn arrival(&mut self, now: f64, len: usize, unit: f64) -> f64 {
        let d = self.direction;
        let start = now.max(self.line_free_at);
        let sent = start + d.bandwidth.map_or(0.0, |bw| len as f64 / bw.max(1.0));
        self.line_free_at = sent;
        let jitter = d.jitter.as_secs_f64() * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let delay = (d.latency.as_secs_f64() + jitter).max(0.0);
        let arrival = (sent + delay).max(self.last_arrival);
        self.last_arrival = arrival;
        arrival
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn latency_alone_delays_each_chunk_by_it() {
        let mut s = Schedule::new(Direction::delay(ms(40)));
        assert!((s.arrival(0.0, 100, 0.5) - 0.040).abs() < 1e-9);
        assert!((s.arrival(1.0, 1_000_000, 0.5) - 1.040).abs() < 1e-9);
    }

    #[test]
    fn bandwidth_serialises_chunks_back_to_back() {
        let mut s = Schedule::new(Direction {
            latency: ms(10),
            jitter: Duration::ZERO,
            bandwidth: Some(1000.0),
        });
        // 500 bytes take 0.5 s on the line, then 10 ms of wire.
        assert!((s.arrival(0.0, 500, 0.5) - 0.510).abs() < 1e-9);
        // Entering while the line is busy: it waits for the line.
        assert!((s.arrival(0.1, 500, 0.5) - 1.010).abs() < 1e-9);
        // After an idle spell it starts at once.
        assert!((s.arrival(5.0, 100, 0.5) - 5.110).abs() < 1e-9);
        // A whole transfer takes size / bandwidth however it is chunked.
        let mut one = Schedule::new(Direction {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth: Some(1e6),
        });
        let last = (0..100).map(|_| one.arrival(0.0, 10_000, 0.5)).last();
        assert!((last.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn jitter_varies_delay_but_never_reorders() {
        let mut s = Schedule::new(Direction {
            latency: ms(20),
            jitter: ms(10),
            bandwidth: None,
        });
        assert!((s.arrival(0.0, 1, 0.0) - 0.010).abs() < 1e-9, "low end");
        assert!((s.arrival(0.0, 1, 1.0) - 0.030).abs() < 1e-9, "high end");
        // A low draw right after a high one still arrives after it.
        assert!((s.arrival(0.001, 1, 0.0) - 0.030).abs() < 1e-9);
        let mut last = 0.0;
        for i in 0..1000 {
            let a = s.arrival(f64::from(i) * 1e-3, 10, f64::from(i * 7919 % 1000) / 1000.0);
            assert!(a >= last);
            assert!(a >= f64::from(i) * 1e-3 + 0.010 - 1e-12);
            last = a;
        }
    }

    #[test]
    fn chunks_are_sized_to_the_line() {
        let unlimited = Schedule::new(Direction::delay(ms(1)));
        assert_eq!(unlimited.max_chunk(), 64 * 1024);
        let slow = Schedule::new(Direction {
            bandwidth: Some(10_000.0),
            ..Direction::delay(ms(1))
        });
        assert_eq!(slow.max_chunk(), 1024);
        let fast = Schedule::new(Direction {
            bandwidth: Some(1e7),
            ..Direction::delay(ms(1))
        });
        assert_eq!(fast.max_chunk(), 50_000);
    }
}
