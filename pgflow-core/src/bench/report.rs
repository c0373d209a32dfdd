//! Benchmark results: rows, the environment they were measured in, and the
//! Markdown written into BENCHMARKS.md.

use std::path::Path;

use hdrhistogram::Histogram;

use super::BenchArgs;
use crate::client::Pgflow;
use crate::error::Result;

/// One measured run.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario label.
    pub scenario: String,
    /// Queue under test.
    pub backend: String,
    /// Messages processed.
    pub messages: usize,
    /// Wall-clock seconds.
    pub secs: f64,
    /// Latency percentiles `(what, p50 ms, p99 ms)`.
    pub latencies: Vec<(String, f64, f64)>,
}

impl Row {
    /// A row without latencies.
    pub fn new(scenario: &str, backend: &str, messages: usize, secs: f64) -> Self {
        Self {
            scenario: scenario.into(),
            backend: backend.into(),
            messages,
            secs,
            latencies: Vec::new(),
        }
    }

    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.secs.max(1e-9)
    }

    fn pct(mut self, what: &str, h: &Histogram<u64>) -> Self {
        if !h.is_empty() {
            self.latencies.push((
                what.into(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            ));
        }
        self
    }

    /// Adds per-message latency percentiles (histogram in µs).
    pub fn latency(self, what: &str, h: &Histogram<u64>) -> Self {
        self.pct(what, h)
    }

    /// Adds per-call latency percentiles (histogram in µs).
    pub fn calls(self, what: &str, h: &Histogram<u64>) -> Self {
        self.pct(what, h)
    }
}

/// All rows of a run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// The rows in run order.
    pub rows: Vec<Row>,
    /// The consumer runtime's rows.
    pub runtime: Vec<Row>,
}

/// Where and how the run was made.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Free text lines.
    pub lines: Vec<String>,
}

impl Environment {
    /// Reads server version and settings.
    pub async fn read(pg: &Pgflow, args: &BenchArgs, private: bool) -> Result<Self> {
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(pg.pool())
            .await?;
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum','fsync','synchronous_commit','shared_buffers','max_connections') ORDER BY name",
        )
        .fetch_all(pg.pool())
        .await?;
        let tcp: Option<String> = sqlx::query_scalar("SELECT host(inet_server_addr())")
            .fetch_one(pg.pool())
            .await?;
        let connection = match tcp {
            Some(addr) => format!("connection: TCP to {addr}"),
            None => "connection: Unix-domain socket (client and server on one host)".into(),
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        Ok(Self {
            lines: vec![
                format!("date: {}", chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")),
                format!("machine: {cores} cores; client and server on the same host"),
                format!("server: {version}"),
                connection,
                format!(
                    "server settings: {}{}",
                    settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                    if private { " (private cluster started by the bench)" } else { "" }
                ),
                format!(
                    "command: cargo run --release -p pgflow-core --features bench --bin pgflow-bench -- --suite {} --messages {} --batch {} --producers {} --consumers {} --single-messages {} --single-producers {} --depth {} --depth-sample {} --runtime-messages {} --runtime-workers {} --runtime-fetchers {}",
                    format!("{:?}", args.suite).to_lowercase(), args.messages, args.batch, args.producers, args.consumers, args.single_messages, args.single_producers, args.depth, args.depth_sample, args.runtime_messages, args.runtime_workers, args.runtime_fetchers
                ),
                "payload: a seed proposal_for_consensus message (~230 bytes JSON)".into(),
            ],
        })
    }
}

fn find<'a>(f: &'a Figures, scenario_prefix: &str, backend_prefix: &str) -> Option<&'a Row> {
    f.rows
        .iter()
        .find(|r| r.scenario.starts_with(scenario_prefix) && r.backend.starts_with(backend_prefix))
}

/// Renders the results as Markdown.
pub fn render(env: &Environment, f: &Figures) -> String {
    let mut s = String::new();
    s.push_str("### Environment\n\n");
    for l in &env.lines {
        s.push_str(&format!("- {l}\n"));
    }
    s.push_str("\n### Results\n\n");
    table(&mut s, &f.rows);
    s.push_str("\n### Against the targets\n\n");
    let batched_del = find(f, "batched e2e (", "pgflow (ack = delete");
    let batched_arc = find(f, "batched e2e (", "pgflow (ack = archive");
    let mq_del = find(f, "batched e2e (", "pgmq crate (ack = delete");
    let mq_arc = find(f, "batched e2e (", "pgmq crate (ack = archive");
    let mut check = |what: String, ok: bool| {
        s.push_str(&format!("- {} {what}\n", if ok { "✅" } else { "❌" }));
    };
    for (flow, mq, how) in [
        (batched_del, mq_del, "delete"),
        (batched_arc, mq_arc, "archive"),
    ] {
        if let Some(r) = flow {
            check(
                format!(
                    "batched e2e, ack = {how}: {:.0} msg/s (target ≥ 50,000)",
                    r.rate()
                ),
                r.rate() >= 50_000.0,
            );
            if let Some(m) = mq {
                let x = r.rate() / m.rate();
                check(
                    format!("batched e2e, ack = {how}: {x:.2}× pgmq (target ≥ 1.5×)"),
                    x >= 1.5,
                );
            }
        }
    }
    if let Some(r) = find(f, "1 msg per send", "pgflow") {
        check(
            format!(
                "one message per send, 16 producers: {:.0} msg/s (target ≥ 10,000)",
                r.rate()
            ),
            r.rate() >= 10_000.0,
        );
    }
    let depth_rows: Vec<&Row> = f
        .rows
        .iter()
        .filter(|r| r.scenario.starts_with("claim+ack") && r.backend.starts_with("pgflow"))
        .collect();
    if let [shallow, deep] = depth_rows.as_slice() {
        let x = deep.rate() / shallow.rate();
        check(
            format!("claim+ack at depth {}: {:.0} msg/s = {:.0}% of the shallow-queue {:.0} msg/s (target ≥ 70%)", deep.scenario.rsplit(' ').next().unwrap_or("?"), deep.rate(), x * 100.0, shallow.rate()),
            x >= 0.7,
        );
    }
    s
}

fn table(s: &mut String, rows: &[Row]) {
    s.push_str("| scenario | queue | messages | seconds | msg/s | latency p50 / p99 (ms) |\n|---|---|---:|---:|---:|---|\n");
    for r in rows {
        let lat = r
            .latencies
            .iter()
            .map(|(w, p50, p99)| format!("{w}: {p50:.2} / {p99:.2}"))
            .collect::<Vec<_>>()
            .join("; ");
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.0} | {} |\n",
            r.scenario,
            r.backend,
            r.messages,
            r.secs,
            r.rate(),
            lat
        ));
    }
}

/// Renders the consumer runtime's results as Markdown.
pub fn render_runtime(env: &Environment, rows: &[Row]) -> String {
    let mut s = String::from("### Environment\n\n");
    for l in &env.lines {
        s.push_str(&format!("- {l}\n"));
    }
    s.push_str("\n### Results\n\n");
    table(&mut s, rows);
    s.push_str("\n### Against the targets\n\n");
    let mut check = |what: String, ok: bool| {
        s.push_str(&format!("- {} {what}\n", if ok { "✅" } else { "❌" }));
    };
    for r in rows {
        if r.scenario.starts_with("runtime e2e") {
            check(
                format!("runtime e2e: {:.0} msg/s (target ≥ 20,000)", r.rate()),
                r.rate() >= 20_000.0,
            );
            if let Some(mb) = r
                .scenario
                .split("peak RSS ")
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|x| x.parse::<f64>().ok())
            {
                check(
                    format!("consumer process peak RSS {mb:.1} MB (target ≤ 50 MB)"),
                    mb <= 50.0,
                );
            }
        }
        if r.scenario.starts_with("send_with_notify") {
            if let Some((_, p50, p99)) = r.latencies.first() {
                check(
                    format!("notify → handler p50 {p50:.2} ms (target ≤ 3 ms)"),
                    *p50 <= 3.0,
                );
                check(
                    format!("notify → handler p99 {p99:.2} ms (target ≤ 25 ms)"),
                    *p99 <= 25.0,
                );
            }
        }
        if r.scenario.starts_with("seeds' scenario") {
            check(format!("{}: {:.2} s", r.scenario, r.secs), true);
        }
    }
    s
}

/// Replaces the text between the `marker` markers of `path` (see
/// [`crate::testing::write_marked_block`]).
pub fn write_into(path: &Path, text: &str, marker: &str) -> Result<()> {
    Ok(crate::testing::write_marked_block(path, text, marker)?)
}
