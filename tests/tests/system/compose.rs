//! docker-compose.yml and the Dockerfile, checked against the built
//! binaries (no Docker engine needed): every command runs a binary the
//! image contains, every variable set is one that binary reads, every
//! service can be health-checked, restarted and stopped gracefully, and no
//! password is written in plain text.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgflow_core::cli::roles::{password_file_var, password_var, SERVICE_ROLES};
use yaml_rust2::{Yaml, YamlLoader};

/// Variables compose sets that clap does not declare (so `--help` does not
/// show them as `[env: NAME`), each with who reads it.
fn consumed_elsewhere() -> Vec<(String, &'static str)> {
    let mut v = vec![(
        "RUST_LOG".to_string(),
        "read by tracing-subscriber's EnvFilter",
    )];
    // The instances' roles (`pgflow init --instances`) read theirs the same way.
    let instances = (1..=9).map(|i| format!("singularity_{i}"));
    for role in SERVICE_ROLES.map(String::from).into_iter().chain(instances) {
        for var in [password_var(&role), password_file_var(&role)] {
            v.push((
                var,
                "read by `pgflow init --role-passwords-from-env` (pgflow_core::cli::roles), \
                 deliberately not a flag",
            ));
        }
    }
    v
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// One service of the compose file, with `<<` merge keys applied.
#[derive(Debug, Default)]
struct ComposeService {
    name: String,
    image: Option<String>,
    build: bool,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    healthcheck: Option<Vec<String>>,
    restart: Option<String>,
    stop_grace_period: Option<String>,
    /// Services this one waits for with `condition: service_completed_successfully`.
    waits_for_completion_of: Vec<String>,
    /// `(source, target)` of each volume mount.
    volumes: Vec<(String, String)>,
}

/// Applies YAML merge keys (`<<: *anchor` or `<<: [*a, *b]`) recursively;
/// the mapping's own keys win over merged ones.
fn merged(y: &Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let merge_key = Yaml::String("<<".into());
            if let Some(m) = h.get(&merge_key) {
                let sources = match m {
                    Yaml::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for s in sources {
                    if let Yaml::Hash(sh) = merged(&s) {
                        for (k, v) in sh {
                            out.insert(k, v);
                        }
                    }
                }
            }
            for (k, v) in h {
                if *k != merge_key {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(a) => Yaml::Array(a.iter().map(merged).collect()),
        other => other.clone(),
    }
}

/// A scalar as text (compose accepts numbers and booleans where strings go).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A command or healthcheck test: a list, or a string split on whitespace.
fn words(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other)
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

fn parse_compose(text: &str) -> (Vec<ComposeService>, BTreeSet<String>) {
    let docs = YamlLoader::load_from_str(text).expect("docker-compose.yml is valid YAML");
    let doc = merged(&docs[0]);
    let named_volumes = doc["volumes"]
        .as_hash()
        .map(|h| h.keys().filter_map(scalar).collect())
        .unwrap_or_default();
    let services = doc["services"]
        .as_hash()
        .expect("a services mapping")
        .iter()
        .map(|(name, s)| {
            let environment = match &s["environment"] {
                Yaml::Hash(h) => h
                    .iter()
                    .map(|(k, v)| (scalar(k).unwrap(), scalar(v).unwrap_or_default()))
                    .collect(),
                Yaml::Array(a) => a
                    .iter()
                    .filter_map(scalar)
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv, String::new()),
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            let waits_for_completion_of = s["depends_on"]
                .as_hash()
                .map(|h| {
                    h.iter()
                        .filter(|(_, d)| {
                            d["condition"].as_str() == Some("service_completed_successfully")
                        })
                        .filter_map(|(k, _)| scalar(k))
                        .collect()
                })
                .unwrap_or_default();
            let volumes = s["volumes"]
                .as_vec()
                .map(|v| {
                    v.iter()
                        .filter_map(scalar)
                        .filter_map(|m| {
                            let mut parts = m.split(':');
                            Some((parts.next()?.to_string(), parts.next()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            ComposeService {
                name: scalar(name).unwrap(),
                image: scalar(&s["image"]),
                build: !s["build"].is_badvalue() && !s["build"].is_null(),
                command: words(&s["command"]),
                environment,
                healthcheck: (!s["healthcheck"].is_badvalue())
                    .then(|| words(&s["healthcheck"]["test"])),
                restart: scalar(&s["restart"]),
                stop_grace_period: scalar(&s["stop_grace_period"]),
                waits_for_completion_of,
                volumes,
            }
        })
        .collect();
    (services, named_volumes)
}

fn compose() -> (Vec<ComposeService>, BTreeSet<String>) {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    parse_compose(&text)
}

/// A compose duration (`20s`, `1m30s`, `500ms`).
fn compose_duration(s: &str) -> Option<Duration> {
    let (mut total, mut num) = (Duration::ZERO, String::new());
    let mut chars = s.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                Duration::from_millis(n)
            }
            ('s', _) => Duration::from_secs(n),
            ('m', _) => Duration::from_secs(n * 60),
            ('h', _) => Duration::from_secs(n * 3600),
            _ => return None,
        };
        total += unit;
        any = true;
    }
    (num.is_empty() && any).then_some(total)
}

/// `${VAR}` or `${VAR:-default}` whose default is marked `local-dev-only`.
fn is_env_reference(value: &str) -> bool {
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return false;
    };
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    name_ok
        && default
            .is_none_or(|d| d.ends_with("local-dev-only") && !d.contains(['$', '{', '}', '@', ':']))
}

/// The password of a URL's user info (`scheme://user:<password>@host`), if any.
fn url_password(value: &str) -> Option<(&str, &str)> {
    let rest = value.split_once("://")?.1;
    let userinfo = rest.rsplit_once('@')?.0;
    userinfo.split_once(':')
}

/// `binary [subcommand ...] --help`: the command's words before its first flag.
fn help_of(command: &[String]) -> String {
    let bin = system_tests::bin_path(&command[0]);
    let subcommands: Vec<&String> = command[1..]
        .iter()
        .take_while(|w| !w.starts_with('-'))
        .collect();
    let out = std::process::Command::new(&bin)
        .args(&subcommands)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "{command:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn compose_commands_and_variables_match_the_binaries() {
    let (services, _) = compose();
    let elsewhere = consumed_elsewhere();
    let built: Vec<&ComposeService> = services.iter().filter(|s| s.build).collect();
    assert!(built.len() >= 6, "migrate + 5 services: {built:?}");
    for s in &built {
        assert!(!s.command.is_empty(), "{}: no command", s.name);
        let help = help_of(&s.command);
        for flag in s.command.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(help.contains(flag), "{}: {flag} not in --help", s.name);
        }
        for name in s.environment.keys() {
            // clap prints `[env: NAME=value]`, or `[env: NAME]` with hidden values.
            let declared = help.contains(&format!("[env: {name}="))
                || help.contains(&format!("[env: {name}]"));
            let documented = elsewhere.iter().any(|(n, _)| n == name);
            assert!(
                declared || documented,
                "{}: {name} is not an option of `{}` (its --help has no [env: {name}=)",
                s.name,
                s.command.join(" ")
            );
        }
    }
}

#[test]
fn compose_services_are_health_checked_restarted_and_stopped_gracefully() {
    let (services, _) = compose();
    let one_shot: BTreeSet<&str> = services
        .iter()
        .flat_map(|s| s.waits_for_completion_of.iter().map(String::as_str))
        .collect();
    assert!(one_shot.contains("migrate"), "{one_shot:?}");
    let shutdown = pgflow_core::consumer::ConsumerConfig::new(
        pgflow_core::QueueName::new("proposals_for_consensus_queue").unwrap(),
    )
    .shutdown_timeout;
    for s in services.iter().filter(|s| s.build) {
        let restart = s
            .restart
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no restart", s.name));
        let grace = s
            .stop_grace_period
            .as_deref()
            .and_then(compose_duration)
            .unwrap_or_else(|| panic!("{}: no stop_grace_period", s.name));
        if one_shot.contains(s.name.as_str()) {
            assert!(
                restart == "no" || restart.starts_with("on-failure"),
                "{}: a one-shot step restarts only on failure, not {restart}",
                s.name
            );
            continue;
        }
        assert!(
            ["unless-stopped", "always"].contains(&restart),
            "{}: restart {restart}",
            s.name
        );
        assert!(
            grace >= shutdown + Duration::from_secs(5),
            "{}: stop_grace_period {grace:?} leaves no margin over the {shutdown:?} shutdown timeout",
            s.name
        );
        let test = s
            .healthcheck
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no healthcheck", s.name));
        let url = test
            .iter()
            .find(|w| w.contains("/readyz"))
            .unwrap_or_else(|| panic!("{}: healthcheck {test:?} does not hit /readyz", s.name));
        let addr = s
            .environment
            .get("PGFLOW_HTTP_ADDR")
            .unwrap_or_else(|| panic!("{}: PGFLOW_HTTP_ADDR unset (loopback:0)", s.name));
        assert_eq!(addr, "0.0.0.0:8080", "{}", s.name);
        assert!(
            url.contains("127.0.0.1:8080/readyz") || url.contains("localhost:8080/readyz"),
            "{}: {url}",
            s.name
        );
    }
}

#[test]
fn compose_services_connect_with_their_own_roles_and_no_plain_password() {
    let (services, _) = compose();
    let migrate = services
        .iter()
        .find(|s| s.name == "migrate")
        .expect("a migrate service");
    assert!(
        migrate
            .command
            .iter()
            .any(|w| w == "--role-passwords-from-env"),
        "{:?}",
        migrate.command
    );
    for s in &services {
        for (name, value) in &s.environment {
            if name.ends_with("PASSWORD_FILE") {
                assert!(value.starts_with("/run/secrets/"), "{}: {name}", s.name);
            } else if name.contains("PASSWORD") {
                assert!(
                    is_env_reference(value),
                    "{}: {name} must be ${{VAR}} or ${{VAR:-...local-dev-only}}, not {value:?}",
                    s.name
                );
            }
            if let Some((_, password)) = url_password(value) {
                assert!(
                    is_env_reference(password),
                    "{}: {name} has a plain password",
                    s.name
                );
            }
        }
    }
    for s in services.iter().filter(|s| s.build && s.name != "migrate") {
        let service = &s.command[0];
        assert!(SERVICE_ROLES.contains(&service.as_str()), "{}", s.name);
        // An instance logs in as its own role, which the migration creates.
        let role = if service == "singularity" {
            let id = &s.environment["INSTANCE_ID"];
            let listed = migrate
                .command
                .windows(2)
                .any(|w| w[0] == "--instances" && w[1].split(',').any(|i| i == id));
            assert!(
                listed,
                "migrate must create {id}'s role: {:?}",
                migrate.command
            );
            id
        } else {
            service
        };
        let url = &s.environment["PGFLOW_DATABASE_URL"];
        let (user, password) = url_password(url).expect("a URL with user and password");
        assert_eq!(
            user.rsplit('/').next(),
            Some(role.as_str()),
            "{}: {url}",
            s.name
        );
        // The migration sets this role's password from the same expression.
        let var = password_var(role);
        assert_eq!(
            migrate.environment.get(&var),
            Some(&password.to_string()),
            "{}: migrate must set {var} the way {} connects",
            s.name,
            s.name
        );
        assert!(password.starts_with(&format!("${{{var}")), "{}", s.name);
    }
}

#[test]
fn singularity_instances_have_their_own_writable_workspaces() {
    let (services, named_volumes) = compose();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let instances: Vec<&ComposeService> = services
        .iter()
        .filter(|s| s.command.first().map(String::as_str) == Some("singularity"))
        .collect();
    assert!(instances.len() >= 3, "several singularity instances");
    let mut ids = BTreeSet::new();
    let mut sources = BTreeSet::new();
    for s in instances {
        assert!(
            ids.insert(s.environment["INSTANCE_ID"].clone()),
            "{}",
            s.name
        );
        let workspace = &s.environment["SINGULARITY_WORKSPACE"];
        let (source, target) = s
            .volumes
            .iter()
            .find(|(_, t)| workspace.starts_with(t.as_str()))
            .unwrap_or_else(|| panic!("{}: {workspace} is on no volume", s.name));
        assert!(named_volumes.contains(source), "{}: {source}", s.name);
        assert!(
            sources.insert(source.clone()),
            "{}: shares {source}",
            s.name
        );
        assert!(
            dockerfile.contains(&format!("mkdir -p {target}"))
                && dockerfile.contains(&format!("chown pgflow:pgflow {target}")),
            "the image must create {target} owned by the user it runs as"
        );
    }
    assert!(dockerfile.contains("USER pgflow"));
}

#[test]
fn singularity_instances_require_an_api_token_from_the_environment() {
    let (services, _) = compose();
    let instances = services
        .iter()
        .filter(|s| s.command.first().map(String::as_str) == Some("singularity"));
    for s in instances {
        assert_eq!(s.environment["PGFLOW_HTTP_ADDR"], "0.0.0.0:8080");
        let token = &s.environment["SINGULARITY_API_TOKEN"];
        assert!(
            token.starts_with("${SINGULARITY_API_TOKEN:?"),
            "{}: the token must be required from the environment, not {token:?}",
            s.name
        );
        let previous = &s.environment["SINGULARITY_API_TOKEN_PREVIOUS"];
        assert_eq!(
            previous, "${SINGULARITY_API_TOKEN_PREVIOUS:-}",
            "{}",
            s.name
        );
    }
}

#[test]
fn the_dockerfile_builds_every_binary_compose_runs() {
    let (services, _) = compose();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("COPY --from=build /out/ /usr/local/bin/"));
    for s in services.iter().filter(|s| s.build) {
        let bin = &s.command[0];
        assert!(
            dockerfile.contains(&format!("target/release/{bin} ")),
            "{}: the image lacks {bin}",
            s.name
        );
        // ... and the binary really is one of the workspace's.
        system_tests::bin_path(bin);
    }
    for s in services.iter().filter(|s| !s.build) {
        assert!(s.image.is_some(), "{}: neither build nor image", s.name);
    }
}

#[test]
fn the_compose_helpers_parse_what_compose_accepts() {
    assert_eq!(compose_duration("20s"), Some(Duration::from_secs(20)));
    assert_eq!(compose_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(compose_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(compose_duration("20"), None);
    assert_eq!(compose_duration("x"), None);
    assert!(is_env_reference("${PGFLOW_DB_PASSWORD}"));
    assert!(is_env_reference("${PGFLOW_DB_PASSWORD:-pg-local-dev-only}"));
    assert!(!is_env_reference("${PGFLOW_DB_PASSWORD:-hunter2}"));
    assert!(!is_env_reference("hunter2"));
    assert!(!is_env_reference("${lower}"));
    assert_eq!(
        url_password("postgres://u:${P:-x-local-dev-only}@h:5432/db"),
        Some(("u", "${P:-x-local-dev-only}"))
    );
    assert_eq!(url_password("postgres://h:5432/db"), None);
    let (services, volumes) = parse_compose(
        "x: &base\n  build: .\n  restart: always\nx-env: &env\n  A: '1'\nservices:\n  s:\n    <<: *base\n    command: s --flag\n    environment:\n      <<: *env\n      B: 2\n    volumes:\n      - v:/data\n  t:\n    image: i\n    environment: [\"C=3\"]\nvolumes:\n  v:\n",
    );
    assert_eq!(services[0].command, ["s", "--flag"]);
    assert!(services[0].build && services[0].restart.as_deref() == Some("always"));
    assert_eq!(services[0].environment["A"], "1");
    assert_eq!(services[0].environment["B"], "2");
    assert_eq!(
        services[0].volumes,
        [("v".to_string(), "/data".to_string())]
    );
    assert!(!services[1].build);
    assert_eq!(services[1].environment["C"], "3");
    assert!(volumes.contains("v"));
}
