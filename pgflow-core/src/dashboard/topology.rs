//! The topology the page draws: the three services as nodes (with their
//! open database connections, and singularity's instances with whether
//! they are live, from `pgflow_subscribers`) and the design's queues as
//! edges from producer to consumer, each with its latest numbers.

use serde::Serialize;

use super::sampler::{QueuePoint, Sample};
use crate::client::Pgflow;
use crate::error::Result;
use crate::protocol::{routes, Service};

/// A service node.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// `singularity`, `centralcloud` or `genesis`.
    pub service: &'static str,
    /// Open database connections of the service's role (0: not running).
    pub connections: i64,
    /// Singularity's instances (from the broadcast subscriptions).
    pub instances: Vec<Instance>,
}

/// A singularity instance.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Instance {
    /// Its id.
    pub id: String,
    /// Heartbeat within the subscriber TTL.
    pub live: bool,
    /// Seconds since its last heartbeat.
    pub last_seen_s: f64,
}

/// A queue edge.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    /// The queue.
    pub queue: &'static str,
    /// Producing service.
    pub from: &'static str,
    /// Consuming service.
    pub to: &'static str,
    /// competing, targeted or broadcast.
    pub delivery: &'static str,
    /// The latest numbers (absent before the first sample).
    pub now: Option<QueuePoint>,
}

/// Nodes and edges.
#[derive(Debug, Clone, Serialize)]
pub struct Topology {
    /// The services.
    pub nodes: Vec<Node>,
    /// The design's queues.
    pub edges: Vec<Edge>,
}

const SERVICES: [Service; 3] = [
    Service::Singularity,
    Service::CentralCloud,
    Service::Genesis,
];

/// Reads the nodes' state (the sampler does, once per sample).
pub async fn read_nodes(pg: &Pgflow) -> Result<Vec<Node>> {
    // A service's connections: its role's and its members' (each instance
    // logs in as its own role, a member of `singularity`).
    let conns: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.service, count(a.pid)::int8
           FROM unnest($1::text[]) AS s(service)
           JOIN pg_stat_activity a
             ON a.datname = current_database() AND a.usename IS NOT NULL
            AND pg_has_role(a.usename, s.service, 'MEMBER')
            AND NOT pg_has_role(a.usename, (SELECT relowner FROM pg_class
                                             WHERE oid = 'pgflow.messages'::regclass), 'USAGE')
          GROUP BY s.service",
    )
    .bind(SERVICES.map(Service::as_str).to_vec())
    .fetch_all(pg.pool())
    .await?;
    let instances: Vec<Instance> = sqlx::query_as(
        "SELECT subscriber AS id, bool_or(live) AS live,
                extract(epoch FROM now() - max(last_seen))::float8 AS last_seen_s
           FROM public.pgflow_subscribers GROUP BY subscriber ORDER BY subscriber",
    )
    .fetch_all(pg.pool())
    .await?;
    Ok(SERVICES
        .into_iter()
        .map(|s| Node {
            service: s.as_str(),
            connections: conns
                .iter()
                .find(|(u, _)| u == s.as_str())
                .map_or(0, |(_, n)| *n),
            instances: if s == Service::Singularity {
                instances.clone()
            } else {
                Vec::new()
            },
        })
        .collect())
}

/// The topology of `latest` (before the first sample: the services with
/// no connections and the routes without numbers).
pub fn assemble(latest: Option<&Sample>) -> Topology {
    let nodes = match latest {
        Some(s) if !s.nodes.is_empty() => s.nodes.clone(),
        _ => SERVICES
            .into_iter()
            .map(|s| Node {
                service: s.as_str(),
                connections: 0,
                instances: Vec::new(),
            })
            .collect(),
    };
    let edges = routes()
        .iter()
        .map(|r| Edge {
            queue: r.queue,
            from: r.producer.as_str(),
            to: r.consumer.as_str(),
            delivery: r.delivery.as_str(),
            now: latest.and_then(|s| s.queues.get(r.queue).cloned()),
        })
        .collect();
    Topology { nodes, edges }
}
