//! Passwords of the service roles, set by `pgflow init --role-passwords-from-env`.
//!
//! The migrations create the LOGIN roles `singularity`, `centralcloud` and
//! `genesis` without a password (local trust authentication needs none). A
//! deployment with password authentication (docker-compose) sets one per
//! role after migrating, from `PGFLOW_<ROLE>_PASSWORD` or from the file
//! named by `PGFLOW_<ROLE>_PASSWORD_FILE` (docker secrets); a role whose
//! variables are both unset keeps its password.
//!
//! `ALTER ROLE` is a utility statement: it takes no bind parameters, so the
//! statement text must carry the role name and the password. It is never
//! built with `format!` on the client. The server builds it instead:
//! `SELECT format('ALTER ROLE %I PASSWORD %L', $1, $2)` receives both
//! values as bind parameters, and PostgreSQL's own `format` quotes the name
//! as an identifier (`%I`, `quote_ident`) and the password as a literal
//! (`%L`, `quote_literal`: quotes and backslashes doubled, `E''` syntax when
//! needed). Whatever the values contain (quotes, semicolons, backslashes,
//! newlines), the returned text is exactly one `ALTER ROLE` statement with
//! one identifier and one string literal, and is then run as it is. The
//! role must exist already (it is looked up with a bind parameter first),
//! so the name cannot reach SQL as anything but an existing role's name.
//!
//! The statement is run with the simple query protocol (no prepared
//! statement kept in the connection's cache), inside one transaction for
//! all roles (all or nothing), and, when the admin is a superuser, with
//! statement logging turned off for that transaction (`log_statement`,
//! `log_min_duration_statement`, `log_min_error_statement`) so the server
//! log does not record the plain password. Nothing here logs a password.

use sqlx::{PgPool, Row};

use crate::error::{Error, Result};

/// The service roles the migrations create.
pub const SERVICE_ROLES: [&str; 3] = ["singularity", "centralcloud", "genesis"];

/// The service role whose members are the instances: each instance logs in
/// as its own role, named by its instance id and member of this one, so the
/// database records it as the sender of what it sends (migration 17).
pub const INSTANCE_GROUP: &str = "singularity";

/// Checks an instance id given as a role name (`[a-z][a-z0-9_]{0,62}`):
/// clap's value parser for `pgflow init --instances`, so a bad one is a
/// usage error (exit 2) before anything connects.
pub fn parse_instance_id(s: &str) -> std::result::Result<String, String> {
    let mut chars = s.chars();
    let ok = s.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid instance id {s:?}: it names the instance's login role \
             (1-63 lowercase letters, digits or '_', starting with a letter)"
        ))
    }
}

/// Creates the LOGIN role of each instance in `instances` (a member of
/// [`INSTANCE_GROUP`]) that is missing; returns those created. An instance
/// id must be a valid role name (`[a-z][a-z0-9_]{0,62}`).
pub async fn ensure_instance_roles(pool: &PgPool, instances: &[String]) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for id in instances {
        let new: bool = sqlx::query_scalar("SELECT pgflow.ensure_member_role($1, $2)")
            .bind(id)
            .bind(INSTANCE_GROUP)
            .fetch_one(pool)
            .await?;
        if new {
            created.push(id.clone());
        }
    }
    Ok(created)
}

/// The variable holding `role`'s password: `PGFLOW_<ROLE>_PASSWORD`.
pub fn password_var(role: &str) -> String {
    format!("PGFLOW_{}_PASSWORD", role.to_ascii_uppercase())
}

/// The variable naming a file with `role`'s password: `PGFLOW_<ROLE>_PASSWORD_FILE`.
pub fn password_file_var(role: &str) -> String {
    format!("{}_FILE", password_var(role))
}

/// One role's new password (its `Debug` hides the password).
#[derive(Clone, PartialEq, Eq)]
pub struct RolePassword {
    /// The role name.
    pub role: String,
    /// The password, in plain text (the server hashes it per `password_encryption`).
    pub password: String,
}

impl std::fmt::Debug for RolePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolePassword")
            .field("role", &self.role)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Reads the passwords of `roles` through `var` (an environment lookup:
/// `|name| std::env::var(name).ok()` in the binary). For each role,
/// `PGFLOW_<ROLE>_PASSWORD` holds the password, or
/// `PGFLOW_<ROLE>_PASSWORD_FILE` names a file holding it (its trailing line
/// break is dropped). Roles with neither are left out; both set, an empty
/// password or an unreadable file is an error naming the variable.
pub fn passwords_from(
    roles: &[&str],
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<RolePassword>> {
    let mut out = Vec::new();
    for role in roles {
        let (name, file_name) = (password_var(role), password_file_var(role));
        let password = match (var(&name), var(&file_name)) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(format!(
                    "both {name} and {file_name} are set: set one"
                )))
            }
            (Some(p), None) => p,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("{file_name}: cannot read {path}: {e}")))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => continue,
        };
        if password.is_empty() {
            return Err(Error::Config(format!(
                "the password for role {role} ({name} / {file_name}) is empty"
            )));
        }
        out.push(RolePassword {
            role: (*role).to_string(),
            password,
        });
    }
    Ok(out)
}

/// Sets each role's password, in one transaction (see the module docs for
/// why the statement text is injection-safe). Every role must exist.
pub async fn set_passwords(pool: &PgPool, passwords: &[RolePassword]) -> Result<()> {
    if passwords.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let superuser: bool = sqlx::query_scalar("SELECT current_setting('is_superuser') = 'on'")
        .fetch_one(&mut *tx)
        .await?;
    if superuser {
        // Keep the plain password out of the server log: neither the statement, nor a
        // slow one, nor a failing one is logged (superuser-only settings).
        sqlx::raw_sql(
            "SET LOCAL log_statement = 'none'; \
             SET LOCAL log_min_duration_statement = -1; \
             SET LOCAL log_min_error_statement = 'panic'",
        )
        .execute(&mut *tx)
        .await?;
    }
    for p in passwords {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&p.role)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            return Err(Error::Config(format!(
                "role {:?} does not exist (the migrations create it: run `pgflow init`)",
                p.role
            )));
        }
        // The server quotes both values (%I identifier, %L literal); the text comes back
        // as one ALTER ROLE statement with exactly one identifier and one literal.
        let row = sqlx::query("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)")
            .bind(&p.role)
            .bind(&p.password)
            .fetch_one(&mut *tx)
            .await?;
        let statement: String = row.try_get(0)?;
        // Simple protocol: no prepared statement holding the password stays cached.
        sqlx::raw_sql(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `pgflow init --role-passwords-from-env`: sets the passwords of the
/// service roles and of the `instances`' roles whose variables are set, and
/// returns those roles' names.
pub async fn set_passwords_from_env(pool: &PgPool, instances: &[String]) -> Result<Vec<String>> {
    let roles: Vec<&str> = SERVICE_ROLES
        .iter()
        .copied()
        .chain(instances.iter().map(String::as_str))
        .collect();
    let passwords = passwords_from(&roles, |name| std::env::var(name).ok())?;
    set_passwords(pool, &passwords).await?;
    Ok(passwords.into_iter().map(|p| p.role).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_role_names() {
        assert_eq!(
            parse_instance_id("singularity_2").as_deref(),
            Ok("singularity_2")
        );
        for bad in ["", "Bad-Name", "2x", "x;drop", &"a".repeat(64)] {
            assert!(parse_instance_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variable_names() {
        assert_eq!(password_var("genesis"), "PGFLOW_GENESIS_PASSWORD");
        assert_eq!(
            password_file_var("centralcloud"),
            "PGFLOW_CENTRALCLOUD_PASSWORD_FILE"
        );
    }

    #[test]
    fn passwords_come_from_the_variable_or_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from 'file'\n").expect("write");
        let file = file.display().to_string();
        let got = passwords_from(&SERVICE_ROLES, |name| match name {
            "PGFLOW_SINGULARITY_PASSWORD" => Some("s;'x".into()),
            "PGFLOW_GENESIS_PASSWORD_FILE" => Some(file.clone()),
            _ => None,
        })
        .expect("passwords");
        assert_eq!(
            got,
            vec![
                RolePassword {
                    role: "singularity".into(),
                    password: "s;'x".into() // dev-only test value
                },
                RolePassword {
                    role: "genesis".into(),
                    password: "from 'file'".into() // dev-only test value
                },
            ]
        );
        assert!(
            !format!("{got:?}").contains("s;'x"),
            "Debug hides passwords"
        );
    }

    #[test]
    fn ambiguous_empty_or_unreadable_passwords_are_refused() {
        let both = passwords_from(&["genesis"], |_| Some("x".into())).unwrap_err();
        assert!(
            both.to_string().contains("PGFLOW_GENESIS_PASSWORD_FILE"),
            "{both}"
        );
        let empty = passwords_from(&["genesis"], |n| {
            (n == "PGFLOW_GENESIS_PASSWORD").then(String::new)
        })
        .unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let missing = passwords_from(&["genesis"], |n| {
            (n == "PGFLOW_GENESIS_PASSWORD_FILE").then(|| "/nonexistent/pw".into())
        })
        .unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/pw"), "{missing}");
    }
}
