//! The `genesis` binary's command line. (Tests that run it against a
//! database live in the workspace's `tests/` package.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn help_names_the_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_genesis"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PGFLOW_DATABASE_URL"), "{text}");
}

#[test]
fn missing_database_url_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_genesis"))
        .env_remove("PGFLOW_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--database-url"));
}
