//! Test support shared by every package's integration tests: a database
//! server (the one `PGFLOW_DATABASE_URL` / `DATABASE_URL` names when it is
//! reachable, else one private cluster per test process) and a fresh,
//! migrated database per test, so tests run in parallel without sharing state;
//! plus [`wait_for`] (poll a condition with a deadline), [`http_get`] (a
//! minimal HTTP GET for the ops endpoints) and [`commit_latencies`] (what a
//! commit costs the server, for the benchmarks' reports).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::client::{Pgflow, PgflowOptions};
use crate::error::{Error, Result};
use crate::local_pg::LocalPostgres;

/// Where test databases are created.
#[derive(Debug)]
pub struct TestServer {
    /// URL of the maintenance database (`CREATE DATABASE` runs there).
    pub admin_url: String,
    /// The private cluster, when no external server was usable.
    pub local: Option<std::sync::Mutex<LocalPostgres>>,
}

static SERVER: OnceCell<Arc<TestServer>> = OnceCell::const_new();

/// Replaces the user of a `postgres://` URL (dropping any password): the
/// services' roles log in without one under the local trust authentication.
pub fn with_user(url: &str, user: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(i + 3);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{scheme}{user}@{host}")
}

/// Replaces the database name of a `postgres://` URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let host_start = main.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match main[host_start..].find('/') {
        Some(i) => &main[..host_start + i],
        None => main,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn reachable(url: &str) -> bool {
    let opts = PgflowOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(3),
        ..PgflowOptions::default()
    };
    match tokio::time::timeout(Duration::from_secs(5), Pgflow::connect_with(url, opts)).await {
        Ok(Ok(p)) => {
            p.close().await;
            true
        }
        _ => false,
    }
}

/// The server shared by this test process (started on first use).
pub async fn server() -> Result<Arc<TestServer>> {
    SERVER
        .get_or_try_init(|| async {
            for var in ["PGFLOW_DATABASE_URL", "DATABASE_URL"] {
                if let Ok(url) = std::env::var(var) {
                    if !url.is_empty() && reachable(&url).await {
                        return Ok(Arc::new(TestServer {
                            admin_url: url,
                            local: None,
                        }));
                    }
                    eprintln!("{var} is set but not reachable; starting a private PostgreSQL");
                }
            }
            let pg = tokio::task::spawn_blocking(LocalPostgres::start)
                .await
                .map_err(|e| Error::LocalPostgres(e.to_string()))??;
            Ok(Arc::new(TestServer {
                admin_url: pg.url("postgres"),
                local: Some(std::sync::Mutex::new(pg)),
            }))
        })
        .await
        .cloned()
}

/// A fresh database for one test, with the migrations applied. Dropped
/// (with its connections) when the value is dropped, on external servers.
#[derive(Debug)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// A handle on it.
    pub pgflow: Pgflow,
    server: Arc<TestServer>,
}

impl TestDb {
    /// This database's URL for logging in as `role` (e.g. `singularity`).
    pub fn url_as(&self, role: &str) -> String {
        with_user(&self.url, role)
    }

    /// A handle on this database logged in as `role`.
    pub async fn connect_as(&self, role: &str) -> Result<Pgflow> {
        Pgflow::connect(&self.url_as(role)).await
    }

    /// This database's URL for logging in as instance `id`'s own role
    /// (created when missing, a member of `group`, e.g. `singularity`):
    /// what an instance sends is then recorded as sent by `id`.
    pub async fn instance_url(&self, id: &str, group: &str) -> Result<String> {
        sqlx::query("SELECT pgflow.ensure_member_role($1, $2)")
            .bind(id)
            .bind(group)
            .execute(self.pgflow.pool())
            .await?;
        Ok(self.url_as(id))
    }

    /// A handle on this database logged in as instance `id`'s own role
    /// (see [`TestDb::instance_url`]).
    pub async fn connect_instance(&self, id: &str, group: &str) -> Result<Pgflow> {
        Pgflow::connect(&self.instance_url(id, group).await?).await
    }

    /// Registers each of `ids` on every targeted queue, as an instance's
    /// consumers do when they start: sends to it are accepted from then on
    /// (for tests that play an instance without running its consumers).
    pub async fn register_targets(&self, ids: &[&str]) -> Result<()> {
        sqlx::query(
            "INSERT INTO pgflow.subscribers (queue_name, subscriber)
             SELECT q.queue_name, i FROM pgflow.queues q, unnest($1::text[]) AS i
              WHERE q.delivery = 'targeted'
             ON CONFLICT (queue_name, subscriber) DO UPDATE SET last_seen = now()",
        )
        .bind(ids)
        .execute(self.pgflow.pool())
        .await?;
        Ok(())
    }

    /// Creates a database on the shared server and migrates it.
    pub async fn new() -> Result<Self> {
        let server = server().await?;
        Self::on(server, true).await
    }

    /// Creates an empty database (no migrations) on the shared server.
    pub async fn empty() -> Result<Self> {
        let server = server().await?;
        Self::on(server, false).await
    }

    /// Creates a database on `server`.
    pub async fn on(server: Arc<TestServer>, migrate: bool) -> Result<Self> {
        let name = format!("pgflow_t_{}", uuid::Uuid::new_v4().simple());
        let admin = Pgflow::connect_with(
            &server.admin_url,
            PgflowOptions {
                max_connections: 1,
                ..PgflowOptions::default()
            },
        )
        .await?;
        // CREATE DATABASE cannot take a bind parameter; the name is generated above.
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(admin.pool())
            .await?;
        admin.close().await;
        let url = with_database(&server.admin_url, &name);
        let pgflow = Pgflow::connect_with(
            &url,
            PgflowOptions {
                max_connections: 20,
                ..PgflowOptions::default()
            },
        )
        .await?;
        if migrate {
            pgflow.migrate().await?;
        }
        Ok(Self {
            name,
            url,
            pgflow,
            server,
        })
    }

    /// The server this database lives on.
    pub fn server(&self) -> &Arc<TestServer> {
        &self.server
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.server.local.is_some() {
            return; // the whole private cluster goes away with the process
        }
        let admin_url = self.server.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async cleanup on a
        // thread of its own. It does not wait for the test's pools to
        // close: a connection still being returned by a task of the test's
        // runtime (blocked here) would never come back. FORCE ends them.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = Pgflow::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(admin.pool())
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Times `n` one-row INSERTs on `pool`, each committed alone: what a WAL
/// flush costs this server now. Uses a table of its own, dropped after.
/// The benchmarks print it next to their figures.
pub async fn commit_latencies(pool: &sqlx::PgPool, n: usize) -> Result<Vec<Duration>> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS public.pgflow_commit_probe (n bigint)")
        .execute(pool)
        .await?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        sqlx::query("INSERT INTO public.pgflow_commit_probe VALUES ($1)")
            .bind(i as i64)
            .execute(pool)
            .await?;
        out.push(t.elapsed());
    }
    sqlx::raw_sql("DROP TABLE public.pgflow_commit_probe")
        .execute(pool)
        .await?;
    Ok(out)
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response read by [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding removed), decoded as UTF-8 lossily.
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `addr` over a plain TCP connection (HTTP/1.1 with
/// `Connection: close`), reading the whole response; fails after 10 s.
/// Enough for the ops endpoints in tests, not a general HTTP client.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_request(addr, "GET", path, &[]).await
}

/// `method path` (no body) with extra `headers` (a `Host` among them
/// replaces the default), as [`http_get`].
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    use std::io::{Error as IoError, ErrorKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        // A `Host` among `headers` replaces the default one.
        let host = if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            String::new()
        } else {
            format!("Host: {addr}\r\n")
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\n{host}Connection: close\r\nContent-Length: 0\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, IoError>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| {
            IoError::new(
                ErrorKind::TimedOut,
                format!("{method} {path} from {addr} timed out"),
            )
        })??;
    let bad = |what: &str| IoError::new(ErrorKind::InvalidData, format!("{method} {path}: {what}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("malformed chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Replaces the text between the `<!-- marker:begin -->` and
/// `<!-- marker:end -->` lines of `path` with `text` (appends the block
/// when the markers are missing): how `pgflow-bench` and `system-load`
/// write their figures into BENCHMARKS.md.
pub fn write_marked_block(path: &std::path::Path, text: &str, marker: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {marker}:begin -->");
    let end = format!("<!-- {marker}:end -->");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{text}\n{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], block, &old[e + end.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    std::fs::write(path, new)
}

#[cfg(test)]
mod url_tests {
    use super::with_user;

    #[test]
    fn with_user_replaces_or_adds_the_user() {
        assert_eq!(
            with_user("postgres://postgres@127.0.0.1:5432/db?x=1", "genesis"),
            "postgres://genesis@127.0.0.1:5432/db?x=1"
        );
        assert_eq!(
            with_user("postgres://a:secret@h/db", "singularity"),
            "postgres://singularity@h/db"
        );
        assert_eq!(with_user("postgres://h:1/db", "x"), "postgres://x@h:1/db");
    }
}

#[cfg(test)]
mod tests {
    use super::{dechunk, with_database};

    #[test]
    fn decodes_chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nab"), None);
    }

    #[test]
    fn replaces_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
