//! How fast the machine was when a block was recorded: a short probe run
//! before and after the scenarios, printed with the environment.
//!
//! The development VM has slow and fast phases (every figure of a run,
//! pgmq's included, a third or more lower for a while). The probe makes a
//! block's phase visible: the client's CPU speed (encoding the benchmark's
//! payload), a server round trip, and a commit that waits for the WAL
//! flush.

use std::time::Instant;

use super::backend::payload;
use crate::client::Pgflow;
use crate::error::Result;
use crate::testing::commit_latencies;

/// Payload encodings timed by the CPU probe.
const ENCODES: usize = 20_000;
/// Round trips and commits timed by the server probes.
const TRIPS: usize = 200;

/// One probe's figures.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Mean µs to build and encode the benchmark payload (client CPU).
    pub encode_us: f64,
    /// Median µs of a `SELECT 1` round trip.
    pub round_trip_us: f64,
    /// Median µs of a one-row INSERT committed alone (a WAL flush).
    pub commit_us: f64,
}

impl Probe {
    /// Runs the probe on `pg`'s scratch database (a table of its own).
    pub async fn run(pg: &Pgflow) -> Result<Self> {
        let start = Instant::now();
        let mut bytes = 0;
        for i in 0..ENCODES {
            bytes += serde_json::to_string(&payload(i))?.len();
        }
        let encode_us = start.elapsed().as_secs_f64() * 1e6 / ENCODES as f64;
        std::hint::black_box(bytes);

        let mut trips = Vec::with_capacity(TRIPS);
        for _ in 0..TRIPS {
            let t = Instant::now();
            sqlx::query("SELECT 1").execute(pg.pool()).await?;
            trips.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let mut commits: Vec<f64> = commit_latencies(pg.pool(), TRIPS)
            .await?
            .iter()
            .map(|d| d.as_secs_f64() * 1e6)
            .collect();
        Ok(Self {
            encode_us,
            round_trip_us: median(&mut trips),
            commit_us: median(&mut commits),
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The environment line for the probes before and after the scenarios.
pub fn line(before: &Probe, after: Option<&Probe>) -> String {
    let pair = |f: fn(&Probe) -> f64| match after {
        Some(a) => format!("{:.1} / {:.1}", f(before), f(a)),
        None => format!("{:.1}", f(before)),
    };
    format!(
        "machine probe ({}; lower is faster): payload build+encode {} µs, SELECT 1 round trip p50 {} µs, one-row commit p50 {} µs",
        if after.is_some() { "before / after the scenarios" } else { "before the scenarios" },
        pair(|p| p.encode_us),
        pair(|p| p.round_trip_us),
        pair(|p| p.commit_us),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_both_probes() {
        let a = Probe {
            encode_us: 1.25,
            round_trip_us: 40.0,
            commit_us: 180.0,
        };
        let l = line(&a, Some(&a));
        assert!(
            l.contains("1.2 / 1.2 µs") || l.contains("1.3 / 1.3 µs"),
            "{l}"
        );
        assert!(l.contains("commit p50 180.0 / 180.0 µs"), "{l}");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
