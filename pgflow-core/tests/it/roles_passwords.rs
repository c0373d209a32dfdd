//! `pgflow init --role-passwords-from-env`: service role passwords set from
//! the environment through a server-built, injection-safe `ALTER ROLE`.
//!
//! Roles are cluster-wide and the tests share one cluster, so the library
//! function is driven on a throwaway role of its own; the binary's wiring is
//! checked only in ways that leave the real service roles untouched.

use std::process::Output;

use pgflow_core::cli::roles::{passwords_from, set_passwords, RolePassword};
use sqlx::postgres::PgPoolOptions;
use tokio::process::Command;

use crate::support::db;

/// A throwaway LOGIN role whose name needs identifier quoting; dropped by `drop_role`.
async fn throwaway_role(pool: &sqlx::PgPool) -> String {
    let role = format!("pgflow pw \"{}\"", uuid::Uuid::new_v4().simple());
    let create: String = sqlx::query_scalar("SELECT format('CREATE ROLE %I LOGIN', $1::text)")
        .bind(&role)
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::raw_sql(&create).execute(pool).await.unwrap();
    role
}

async fn drop_role(pool: &sqlx::PgPool, role: &str) {
    let drop: String = sqlx::query_scalar("SELECT format('DROP ROLE IF EXISTS %I', $1::text)")
        .bind(role)
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::raw_sql(&drop).execute(pool).await.unwrap();
}

#[tokio::test]
async fn a_password_with_quotes_and_semicolons_is_set_exactly() {
    let t = db().await;
    let admin = t.pgflow.pool();
    let role = throwaway_role(admin).await;
    let before: Option<String> =
        sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(&role)
            .fetch_one(admin)
            .await
            .unwrap();
    assert_eq!(before, None, "created without a password");

    // One connection, hashing with md5 so the test can recompute the stored
    // hash from the intended password (the default, SCRAM, is salted).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&t.url)
        .await
        .unwrap();
    sqlx::query("SET password_encryption = 'md5'")
        .execute(&pool)
        .await
        .unwrap();
    // dev-only: a throwaway role's password, full of SQL metacharacters.
    let password = r#"it's'; DROP ROLE postgres; -- \"x\" $$ \\ end"#; // dev-only
    let env_var = pgflow_core::cli::roles::password_var(&role);
    let passwords = passwords_from(&[role.as_str()], |name| {
        (name == env_var).then(|| password.to_string())
    })
    .unwrap();
    assert_eq!(passwords.len(), 1);
    set_passwords(&pool, &passwords).await.unwrap();

    let (set, exact): (bool, bool) = sqlx::query_as(
        "SELECT rolpassword IS NOT NULL, 'md5' || md5($2 || rolname) = rolpassword
           FROM pg_authid WHERE rolname = $1",
    )
    .bind(&role)
    .bind(password)
    .fetch_one(admin)
    .await
    .unwrap();
    assert!(
        set && exact,
        "the stored hash is that of the given password"
    );
    // The injected text did nothing: the admin role is still there.
    let postgres: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres')")
            .fetch_one(admin)
            .await
            .unwrap();
    assert!(postgres);

    // The default encryption (SCRAM) stores a verifier too.
    set_passwords(
        admin,
        &[RolePassword {
            role: role.clone(),
            password: "second; 'one'".into(), // dev-only test value
        }],
    )
    .await
    .unwrap();
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&role)
        .fetch_one(admin)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    pool.close().await;
    drop_role(admin, &role).await;
}

#[tokio::test]
async fn an_unknown_role_is_refused_before_any_change() {
    let t = db().await;
    let err = set_passwords(
        t.pgflow.pool(),
        &[RolePassword {
            role: format!(
                "no_such_role_{}\"; DROP TABLE x; --",
                uuid::Uuid::new_v4().simple()
            ),
            password: "x".into(), // dev-only test value
        }],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

async fn pgflow_init(url: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgflow"));
    cmd.args(["init", "--role-passwords-from-env"])
        .env("PGFLOW_DATABASE_URL", url)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_BACKTRACE");
    for role in pgflow_core::cli::roles::SERVICE_ROLES {
        cmd.env_remove(pgflow_core::cli::roles::password_var(role))
            .env_remove(pgflow_core::cli::roles::password_file_var(role));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run pgflow")
}

#[tokio::test]
async fn init_reads_the_role_password_variables() {
    // Leaves the shared service roles untouched: no variable set, then
    // settings that are refused before any ALTER ROLE runs.
    let t = pgflow_core::testing::TestDb::empty().await.unwrap();
    let o = pgflow_init(&t.url, &[]).await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("16 queues") && out.contains("role passwords unchanged"),
        "{out}"
    );

    let o = pgflow_init(
        &t.url,
        &[
            ("PGFLOW_GENESIS_PASSWORD", "a"),
            ("PGFLOW_GENESIS_PASSWORD_FILE", "/run/secrets/genesis"),
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("PGFLOW_GENESIS_PASSWORD_FILE"), "{err}");

    let o = pgflow_init(&t.url, &[("PGFLOW_SINGULARITY_PASSWORD", "")]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("PGFLOW_SINGULARITY_PASSWORD"), "{err}");

    let o = pgflow_init(
        &t.url,
        &[("PGFLOW_CENTRALCLOUD_PASSWORD_FILE", "/nonexistent/secret")],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/secret"), "{err}");
}
