//! The dashboard in a real browser: `pgflow dashboard` against a test
//! database, Debian's Chromium driven headless through chromedriver. The
//! page loads, its numbers change as messages flow, a dead letter shows up
//! with its error and the alert, the Retry button puts it back on its queue
//! end to end, a journey is found by trace id, and a screenshot is saved
//! (`target/<profile>/dashboard-screenshot.png`).
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test says
//! so and passes locally, but fails under `CI=true`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use pgflow_core::testing::{wait_for, TestDb};
use pgflow_core::{Failure, OutgoingMessage, QueueName};
use serde_json::json;
use system_tests::Service;
use tokio::process::{Child, Command};
use uuid::Uuid;

const TOKEN: &str = "browser-test-token";
const WAIT: Duration = Duration::from_secs(30);

fn find_tool(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_tool(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = find_tool(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "chromium and chromedriver are needed for the dashboard browser test: \
             apt-get install chromium chromium-driver"
        ),
        _ => {
            eprintln!("SKIPPED: chromium or chromedriver not found (apt-get install chromium chromium-driver)");
            None
        }
    }
}

/// chromedriver and the browsers it starts, in their own process group:
/// dropping this kills the group, so a failing test leaves no Chromium
/// behind.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// chromedriver on a free port, ready to take sessions.
async fn chromedriver(path: &PathBuf) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("chromedriver to listen", WAIT, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    Driver {
        child,
        url: format!("http://{addr}"),
    }
}

async fn browser(chromium: &std::path::Path, driver_url: &str) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,2000"]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver_url)
        .await
        .expect("a Chromium session")
}

/// The text of the first element matching `css`, if any.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn wait_text(c: &Client, css: &str, want: &str) {
    wait_for(&format!("{css} to read {want:?}"), WAIT, || async {
        (text_of(c, css).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let Some((chromium, driver)) = tools() else {
        return;
    };
    let t = TestDb::new().await.unwrap();
    let pg = &t.pgflow;
    let mut board = Service::spawn(
        "pgflow",
        &[
            "dashboard",
            "--dashboard-addr",
            "127.0.0.1:0",
            "--sample-interval",
            "200ms",
            "--alert-dlq-max",
            "0",
        ],
        &[
            ("PGFLOW_DATABASE_URL", t.url.as_str()),
            ("PGFLOW_DASHBOARD_TOKEN", TOKEN),
        ],
    );
    let ready = board.wait_for_line("dashboard ready", WAIT).await;
    let url = ready
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {ready:?}"))
        .to_string();

    let driver = chromedriver(&driver).await;
    let c = browser(&chromium, &driver.url).await;
    c.goto(&format!("{url}?token={TOKEN}")).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "pgflow dashboard");

    // Live numbers: the depth cell follows the queue.
    let depth = r#"tr[data-queue="proposals_for_consensus_queue"] td.depth"#;
    wait_text(&c, depth, "0").await;
    let q = QueueName::new("proposals_for_consensus_queue").unwrap();
    let trace = Uuid::new_v4();
    for n in 0..4 {
        pg.send(
            &q,
            OutgoingMessage::new("proposal_for_consensus", json!({ "n": n })).trace_id(trace),
        )
        .await
        .unwrap();
    }
    wait_text(&c, depth, "4").await;
    wait_text(&c, "#mode", "write access: token set").await;

    // A dead letter: listed with its error, the DLQ alert fires.
    let mq = QueueName::new("metrics_to_guardian_queue").unwrap();
    let dead = pg
        .send(
            &mq,
            OutgoingMessage::new("execution_metrics", json!({})).trace_id(trace),
        )
        .await
        .unwrap();
    let d = pg.claim(&mq, 1).await.unwrap().pop().unwrap();
    pg.nack(d.receipt(), Failure::fatal("missing field `proposal_id`"))
        .await
        .unwrap();
    let row = format!(r#"#dlq tr[data-id="{dead}"]"#);
    wait_for("the dead letter on the page", WAIT, || async {
        let t = text_of(&c, &row).await?;
        t.contains("missing field `proposal_id`").then_some(())
    })
    .await;
    wait_for("the DLQ alert on the page", WAIT, || async {
        text_of(&c, r#"#alerts li[data-alert="DlqTooLarge"]"#)
            .await
            .map(|_| ())
    })
    .await;
    let shot = c.screenshot().await.unwrap();
    let path = system_tests::bin_dir().join("dashboard-screenshot.png");
    std::fs::write(&path, &shot).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "{}",
        path.display()
    );
    eprintln!("screenshot: {}", path.display());

    // Retry from the page: the message is back on its queue.
    c.find(Locator::Css(&format!(r#"button.retry[data-id="{dead}"]"#)))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for("the retried message on its queue", WAIT, || async {
        let back: Option<String> =
            sqlx::query_scalar("SELECT queue_name FROM pgflow.messages WHERE id = $1")
                .bind(dead)
                .fetch_optional(pg.pool())
                .await
                .unwrap();
        (back.as_deref() == Some("metrics_to_guardian_queue")).then_some(())
    })
    .await;
    wait_for("the row to leave the DLQ table", WAIT, || async {
        c.find(Locator::Css(&row)).await.is_err().then_some(())
    })
    .await;
    let msg = text_of(&c, "#dlq-message").await.unwrap_or_default();
    assert!(msg.contains("retried"), "{msg}");

    // The journey of the trace: four proposals and the retried metrics message.
    c.find(Locator::Css("#journey-id"))
        .await
        .unwrap()
        .send_keys(&trace.to_string())
        .await
        .unwrap();
    c.find(Locator::Css("#journey-go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for("the journey's hops", WAIT, || async {
        let hops = c.find_all(Locator::Css("#journey li")).await.ok()?;
        (hops.len() == 5).then_some(())
    })
    .await;

    c.close().await.unwrap();
    board.terminate(Duration::from_secs(10)).await;
}
