//! The figures of `system-load` and the Markdown it prints and writes
//! into BENCHMARKS.md between `<!-- bench-system:begin -->` and
//! `<!-- bench-system:end -->`.

use std::path::Path;

/// The marker of the block in BENCHMARKS.md.
pub const MARKER: &str = "bench-system";

/// `p50 / p99` (and optionally max) of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pct {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Pct {
    fn show(o: Option<Pct>) -> String {
        match o {
            Some(p) => format!("{:.0} / {:.0}", p.p50, p.p99),
            None => "–".into(),
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Label (`light`, `100`, `1000`, ...).
    pub label: String,
    /// How the proposals were submitted.
    pub mode: String,
    /// Proposals asked for.
    pub requested: usize,
    /// Accepted by `POST /proposals` (201).
    pub accepted: usize,
    /// Refused or failed submissions (the first error kept).
    pub submit_errors: usize,
    /// The first submission error.
    pub first_error: Option<String>,
    /// Seconds from the first submit to the last answer.
    pub submit_secs: f64,
    /// Client-side `POST /proposals` latency.
    pub submit_latency: Option<Pct>,
    /// Rows stored in singularity.proposals for this run.
    pub stored: i64,
    /// Proposals in a final state, by state.
    pub applied: i64,
    /// `consensus_failed`.
    pub consensus_failed: i64,
    /// `rolled_back`.
    pub rolled_back: i64,
    /// `failed`.
    pub failed: i64,
    /// Seconds from the first submit to the last proposal reaching its
    /// final state (database clock); `None` when the run timed out.
    pub drain_secs: Option<f64>,
    /// Seconds from the first submit until the journey's queues held no message.
    pub idle_secs: Option<f64>,
    /// The run hit its timeout.
    pub timed_out: bool,
    /// Journey latency: created_at -> applied_at.
    pub journey: Option<Pct>,
    /// created_at -> decided_at (consensus).
    pub consensus: Option<Pct>,
    /// decided_at -> applied_at (execution).
    pub execution: Option<Pct>,
    /// Decisions by how they were reached (`all_voted`, `deadline`, ...).
    pub decided_by: Vec<(String, i64)>,
    /// Dead letters added during the run.
    pub dlq: i64,
    /// CPU seconds during the run: centralcloud, the instances together, PostgreSQL.
    pub cpu: (f64, f64, Option<f64>),
    /// Wall seconds of the run (submit start to idle or timeout).
    pub wall_secs: f64,
    /// Per journey queue: message created -> acked (archived), p50 / p99 ms.
    pub hops: Vec<(String, Pct)>,
    /// Messages left in the journey's queues when the run ended.
    pub queued_at_end: i64,
}

impl RunResult {
    /// Proposals in a final state.
    pub fn finished(&self) -> i64 {
        self.applied + self.consensus_failed + self.rolled_back + self.failed
    }

    /// Accepted proposals not in a final state at the end of the run (lost
    /// when the run drained; still in flight when it timed out).
    pub fn lost(&self) -> i64 {
        self.accepted as i64 - self.finished()
    }
}

/// Renders the environment lines, the results and the targets.
pub fn render(env: &[String], runs: &[RunResult], notes: &[String]) -> String {
    let mut s = String::from("### Environment\n\n");
    for l in env {
        s.push_str(&format!("- {l}\n"));
    }
    s.push_str(
        "\n### Results\n\n\
         | run | proposals accepted | submit s (/s) | POST p50 / p99 ms | drain s | drained /s | queues idle s | applied / consensus_failed / rolled_back / failed | lost | DLQ | journey p50 / p99 / max ms | consensus p50 / p99 ms | execution p50 / p99 ms | decided by |\n\
         |---|---:|---:|---|---:|---:|---:|---|---:|---:|---|---|---|---|\n",
    );
    for r in runs {
        let drain = match r.drain_secs {
            Some(d) if !r.timed_out => format!("{d:.2}"),
            _ => "timed out".into(),
        };
        let rate = match r.drain_secs {
            Some(d) if !r.timed_out && d > 0.0 => format!("{:.0}", r.finished() as f64 / d),
            _ => "–".into(),
        };
        let idle = r
            .idle_secs
            .map(|d| format!("{d:.1}"))
            .unwrap_or_else(|| "–".into());
        let journey = match r.journey {
            Some(p) => format!("{:.0} / {:.0} / {:.0}", p.p50, p.p99, p.max),
            None => "–".into(),
        };
        let decided = r
            .decided_by
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let other = format!("{} / {} / {}", r.consensus_failed, r.rolled_back, r.failed);
        s.push_str(&format!(
            "| {} ({}) | {}{} | {:.2} ({:.0}) | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            r.mode,
            r.accepted,
            if r.submit_errors > 0 {
                format!(" ({} refused)", r.submit_errors)
            } else {
                String::new()
            },
            r.submit_secs,
            r.accepted as f64 / r.submit_secs.max(1e-9),
            Pct::show(r.submit_latency),
            drain,
            rate,
            idle,
            r.applied,
            other,
            if r.timed_out {
                format!(
                    "– ({} not final at timeout, {} messages still queued)",
                    r.lost(),
                    r.queued_at_end
                )
            } else {
                r.lost().to_string()
            },
            r.dlq,
            journey,
            Pct::show(r.consensus),
            Pct::show(r.execution),
            decided,
        ));
    }
    s.push_str(
        "\nCPU seconds used during each run (from `/proc`):\n\n\
         | run | wall s | centralcloud | 3 singularity | PostgreSQL |\n|---|---:|---:|---:|---:|\n",
    );
    for r in runs {
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} |\n",
            r.label,
            r.wall_secs,
            r.cpu.0,
            r.cpu.1,
            r.cpu
                .2
                .map(|c| format!("{c:.1}"))
                .unwrap_or_else(|| "– (external server)".into()),
        ));
    }
    if let Some(first) = runs.iter().find(|r| !r.hops.is_empty()) {
        s.push_str(
            "\nPer hop: a message of the run's journeys from sent to acked (`pgflow.archive`: \
             `archived_at − created_at`), p50 / p99 ms:\n\n| run |",
        );
        for (q, _) in &first.hops {
            s.push_str(&format!(" {q} |"));
        }
        s.push_str("\n|---|");
        for _ in &first.hops {
            s.push_str("---|");
        }
        s.push('\n');
        for r in runs {
            s.push_str(&format!("| {} |", r.label));
            for (q, _) in &first.hops {
                let cell = r
                    .hops
                    .iter()
                    .find(|(k, _)| k == q)
                    .map(|(_, p)| format!("{:.0} / {:.0}", p.p50, p.p99))
                    .unwrap_or_else(|| "–".into());
                s.push_str(&format!(" {cell} |"));
            }
            s.push('\n');
        }
    }
    s.push_str("\n### Against the targets\n\n");
    let mut check = |what: String, ok: bool| {
        s.push_str(&format!("- {} {what}\n", if ok { "✅" } else { "❌" }));
    };
    let drained: Vec<&RunResult> = runs.iter().filter(|r| !r.timed_out).collect();
    let lost: i64 = drained.iter().map(|r| r.lost().max(0)).sum();
    let refused: usize = runs.iter().map(|r| r.submit_errors).sum();
    let dlq: i64 = runs.iter().map(|r| r.dlq).sum();
    check(
        format!(
            "zero loss: {lost} accepted proposals not in a final state over the {} drained runs; \
             {refused} submissions refused and {dlq} dead letters over all {} runs",
            drained.len(),
            runs.len()
        ),
        lost == 0 && refused == 0 && dlq == 0,
    );
    for r in runs.iter().filter(|r| r.timed_out) {
        check(
            format!(
                "{} proposals: not drained within the timeout ({:.0} s): {} final, {} still in flight \
                 ({} messages queued), so zero loss is not shown for this size",
                r.requested,
                r.wall_secs,
                r.finished(),
                r.lost(),
                r.queued_at_end
            ),
            false,
        );
    }
    if let Some(r) = runs
        .iter()
        .find(|r| r.requested == 1000 && r.mode != "light")
    {
        match r.drain_secs {
            Some(d) if !r.timed_out => check(
                format!("1,000 concurrent proposals drained in {d:.2} s (target < 10 s)"),
                d < 10.0,
            ),
            _ => check(
                "1,000 concurrent proposals: timed out (target < 10 s)".into(),
                false,
            ),
        }
    }
    if let Some(r) = runs.iter().find(|r| r.mode.starts_with("light")) {
        match r.journey {
            Some(p) => check(
                format!(
                    "light load ({}): journey p50 {:.0} ms (target < 100 ms)",
                    r.mode, p.p50
                ),
                p.p50 < 100.0,
            ),
            None => check("light load: no proposal applied".into(), false),
        }
    }
    let mut all: Vec<String> = notes.to_vec();
    for r in runs {
        if let Some(e) = &r.first_error {
            all.push(format!("run {}: first refused submission: {e}", r.label));
        }
        if r.stored != r.accepted as i64 {
            all.push(format!(
                "run {}: {} proposals stored for {} accepted",
                r.label, r.stored, r.accepted
            ));
        }
    }
    if !all.is_empty() {
        s.push_str("\n### Notes\n\n");
        for n in &all {
            s.push_str(&format!("- {n}\n"));
        }
    }
    s
}

/// Replaces the text between the `marker` markers of `path` (the same
/// convention as pgflow-bench: [`pgflow_core::testing::write_marked_block`]).
pub fn write_into(path: &Path, text: &str, marker: &str) -> std::io::Result<()> {
    pgflow_core::testing::write_marked_block(path, text, marker)
}
