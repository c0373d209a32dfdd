//! Security of the deployment: the ops HTTP servers bind loopback unless
//! configured, singularity's API refuses oversized bodies, and no password
//! is written in the repository except marked local-development defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use pgflow_core::testing::TestDb;
use regex::Regex;
use system_tests::{http_addr_of, Service};

/// Sends `POST path` with `body` as JSON and returns the status code.
async fn post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn services_bind_loopback_by_default_and_singularity_refuses_oversized_bodies() {
    let t = TestDb::new().await.unwrap();
    for (name, role) in [
        ("centralcloud", "centralcloud"),
        ("genesis", "genesis"),
        ("singularity", "singularity_1"),
    ] {
        // singularity_1 (the default instance id) logs in as its own role.
        let url = if role == "singularity_1" {
            t.instance_url(role, "singularity").await.unwrap()
        } else {
            t.url_as(role)
        };
        let mut s = Service::spawn(name, &[], &[("PGFLOW_DATABASE_URL", &url)]);
        let line = s
            .wait_for_line(&format!("{name} ready"), Duration::from_secs(30))
            .await;
        let addr = http_addr_of(&line);
        assert!(addr.ip().is_loopback(), "{name} binds {addr} by default");
        if name == "singularity" {
            // The protocol's largest change is 1 MiB; the body limit is that plus 64 KiB.
            let huge = format!(
                r#"{{"agent_type":"A","file":"a.rs","change":"{}"}}"#,
                "x".repeat(2 * 1024 * 1024)
            );
            assert_eq!(post(addr, "/proposals", &huge).await, 413);
            let ok = r#"{"agent_type":"RefactoringAgent","file":"src/x.rs","change":"fn x() {}","risk_score":2.5}"#;
            assert_eq!(post(addr, "/proposals", ok).await, 201);
        }
        assert_eq!(
            s.terminate(Duration::from_secs(15)).await,
            Some(0),
            "{name}"
        );
    }
}

/// Lines that look like a password but are not one, each with the reason.
const NOT_PASSWORDS: &[(&str, &str, &str)] = &[
    (
        "pgflow-core/src/client.rs",
        "u:secret@h:5432",
        "input of the URL-redaction unit test",
    ),
    (
        "pgflow-core/src/testing.rs",
        "a:secret@h/db",
        "input of the unit test of with_user (which drops the password)",
    ),
];

/// A value that is no literal password: an environment reference, a
/// placeholder, or one marked as a development-only default.
fn allowed(line: &str, value: &str) -> bool {
    let v = value.trim_matches(|c| matches!(c, '"' | '\'' | '`' | ',' | ';' | ' '));
    line.contains("local-dev-only")
        || line.contains("dev-only")
        || v.is_empty()
        || v.starts_with('$')
        || v.starts_with('<')
        || (v.starts_with('{') && v.ends_with('}')) // a format! placeholder
        || v.contains("***")
}

/// A host name reserved for documentation and tests (RFC 2606 / 6761): a
/// URL naming one carries no real credentials.
fn reserved_example_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    ["example", "example.com", "example.net", "example.org"].contains(&host.as_str())
        || [
            ".example",
            ".invalid",
            ".test",
            ".example.com",
            ".example.net",
            ".example.org",
        ]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// Password assignments and URLs with a password in the text of `file`:
/// `(line number, line, value)`. In Rust sources only string literals
/// count (`password: String` is a type); in other files a `KEY: value`
/// line whose key names a password counts too.
fn password_findings(file: &str, text: &str) -> Vec<(usize, String, String)> {
    // `password = "<v>"`, `"password": "<v>"`, `PASSWORD '<v>'` (SQL), `PASSWORD: <v>` ...
    // (not `password_encryption = ...`: the key ends in `password`, or `passwords`).
    let assignment = Regex::new(
        r##"(?i)passwords?["']?\s*(?:[:=]\s*|\s+)(?P<v>"[^"]*"|'[^']*'|r#"[^"]*"#|[^\s,;)]+)"##,
    )
    .unwrap();
    let config_key =
        Regex::new(r#"(?i)^\s*(?:-\s*)?["']?[a-z0-9_]*passwords?["']?\s*[:=]"#).unwrap();
    let url = Regex::new(r#"[a-z][a-z0-9+.-]*://[^/\s:@]+:(?P<v>[^@\s/]+)@(?P<host>[^/\s:?"'`]*)"#)
        .unwrap();
    let rust = file.ends_with(".rs");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut values: Vec<&str> = url
            .captures_iter(line)
            .filter(|c| !reserved_example_host(&c["host"]))
            .map(|c| c.name("v").unwrap().as_str())
            .collect();
        for c in assignment.captures_iter(line) {
            let v = c.name("v").unwrap().as_str();
            let literal = v.starts_with(['"', '\'']) || v.starts_with("r#");
            if literal || (!rust && config_key.is_match(line)) {
                values.push(v);
            }
        }
        for v in values {
            if !allowed(line, v) {
                out.push((i + 1, line.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_password_scan_finds_literals_and_allows_references() {
    let found = |file: &str, t: &str| password_findings(file, t).len();
    assert_eq!(found("a.yml", "POSTGRES_PASSWORD: hunter2"), 1);
    assert_eq!(found("a.env", "PGFLOW_DB_PASSWORD=hunter2"), 1);
    assert_eq!(
        found("a.rs", "let pw = concat!(\"pass\", \"word = 'x'\");"),
        0
    );
    assert_eq!(
        found("a.rs", &["let password = ", "\"hunter2\";"].concat()),
        1
    );
    assert_eq!(
        found("a.sql", &["ALTER ROLE x PASSWORD ", "'hunter2';"].concat()),
        1
    );
    assert_eq!(
        found("a.md", &["url: postgres://u:", "hunter2@db/x"].concat()),
        1
    );
    assert_eq!(
        found("a.yml", "POSTGRES_PASSWORD: ${PGFLOW_DB_PASSWORD}"),
        0
    );
    assert_eq!(
        found("a.yml", "POSTGRES_PASSWORD: ${P:-pg-local-dev-only}"),
        0
    );
    assert_eq!(
        found("a.yml", "url: postgres://u:${P:-x-local-dev-only}@db/x"),
        0
    );
    assert_eq!(found("a.rs", "    password: String,"), 0);
    assert_eq!(found("a.rs", "format!(\"postgres://{role}:{pw}@h/db\")"), 0);
    assert_eq!(
        found("a.md", "created without a password: deployments set one"),
        0
    );
    assert_eq!(
        found(
            "a.rs",
            &["let password = ", "\"x\"; // dev-only test fixture"].concat()
        ),
        0
    );
}

#[test]
fn no_password_is_written_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // Tracked files and new ones not ignored (read-only git).
    let out = std::process::Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut scanned = 0;
    let mut findings = Vec::new();
    for file in files.lines().filter(|f| *f != "Cargo.lock") {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue; // binary or deleted in the work tree
        };
        scanned += 1;
        for (n, line, value) in password_findings(file, &text) {
            let excused = NOT_PASSWORDS
                .iter()
                .any(|(f, needle, _)| *f == file && line.contains(needle));
            if !excused {
                findings.push(format!("{file}:{n}: {value} in {:?}", line.trim()));
            }
        }
    }
    assert!(scanned > 50, "scanned only {scanned} files");
    assert!(
        findings.is_empty(),
        "passwords written in the repository (use an environment reference, or mark a \
         local-development default `local-dev-only`):\n{}",
        findings.join("\n")
    );
}

/// The compose deployment's flow on a private cluster with password
/// authentication (roles are cluster-wide, so the real service roles can be
/// given passwords here without touching the shared test cluster):
/// `pgflow init --role-passwords-from-env` sets each role's password, every
/// service then logs in with its own role and password, and a wrong
/// password is refused.
#[tokio::test]
async fn services_log_in_with_the_role_passwords_that_init_sets() {
    use pgflow_core::local_pg::{LocalPostgres, StopMode};

    let mut pg = tokio::task::spawn_blocking(LocalPostgres::start)
        .await
        .unwrap()
        .unwrap();
    // The admin keeps trust (as the container's local socket would); every
    // other TCP login needs a SCRAM password.
    pg.stop(StopMode::Fast).unwrap();
    std::fs::write(
        pg.dir().join("data").join("pg_hba.conf"),
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    pg.start_again().unwrap();
    let admin = pgflow_core::Pgflow::connect(&pg.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE DATABASE pgflow")
        .execute(admin.pool())
        .await
        .unwrap();
    // Log every statement, to show that init keeps the passwords out of the log.
    for sql in [
        "ALTER SYSTEM SET log_statement = 'all'",
        "SELECT pg_reload_conf()",
    ] {
        sqlx::raw_sql(sql).execute(admin.pool()).await.unwrap();
    }
    admin.close().await;

    // dev-only: throwaway passwords of a private cluster (URL-safe, as compose needs).
    // singularity_1 is an instance: its own role, created by `init --instances`.
    let passwords = [
        ("singularity_1", "s1ng-dev-only"),
        ("centralcloud", "cc-dev-only"),
        ("genesis", "gen-dev-only"),
    ];
    let mut init = std::process::Command::new(system_tests::bin_path("pgflow"));
    init.args([
        "init",
        "--role-passwords-from-env",
        "--instances",
        "singularity_1",
    ])
    .env_clear()
    .env("PGFLOW_DATABASE_URL", pg.url("pgflow"));
    for (role, pw) in passwords {
        init.env(pgflow_core::cli::roles::password_var(role), pw);
    }
    let out = init.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("instance roles singularity_1 (1 created)")
            && stdout.contains("password set for roles centralcloud, genesis, singularity_1"),
        "{stdout}"
    );

    let log = pg.log();
    assert!(log.contains("statement:"), "statements are logged");
    for (role, pw) in passwords {
        assert!(!log.contains(pw), "{role}'s password is in the server log");
    }

    let port = pg.port();
    for (role, pw) in passwords {
        let url = format!("postgres://{role}:{pw}@127.0.0.1:{port}/pgflow");
        let service = role.trim_end_matches("_1");
        let mut s = Service::spawn(service, &[], &[("PGFLOW_DATABASE_URL", &url)]);
        s.wait_for_line(&format!("{service} ready"), Duration::from_secs(30))
            .await;
        assert_eq!(
            s.terminate(Duration::from_secs(15)).await,
            Some(0),
            "{role}"
        );

        let wrong = url.replace(pw, "wrong");
        let err = pgflow_core::Pgflow::connect(&wrong).await.unwrap_err();
        assert!(
            format!("{err:?}").contains("password authentication failed"),
            "{role}: {err:?}"
        );
        let none = format!("postgres://{role}@127.0.0.1:{port}/pgflow");
        assert!(pgflow_core::Pgflow::connect(&none).await.is_err(), "{role}");
    }
}
