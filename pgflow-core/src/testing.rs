//! Test support shared by every package's integration tests: a database
//! server (the one `PGFLOW_DATABASE_URL` / `DATABASE_URL` names when it is
//! reachable, else one private cluster per test process) and a fresh,
//! migrated database per test, so tests run in parallel without sharing state.

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
        let pool = self.pgflow.pool().clone();
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                pool.close().await;
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

#[cfg(test)]
mod tests {
    use super::with_database;

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
