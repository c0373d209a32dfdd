//! The LLM configuration singularity publishes to Genesis: which models a
//! provider should use for each task complexity. Each entry becomes one
//! `genesis_llm_config_update` message.
//!
//! Where it comes from ([`LlmConfig::resolve`]):
//!
//! 1. a JSON file (`--config` / `SINGULARITY_LLM_CONFIG`): one entry
//!    `{"provider": "claude", "complexity": "medium", "models": ["a", "b"]}`
//!    or a list of them;
//! 2. otherwise the defaults ([`LlmConfig::defaults`]): provider `claude`
//!    with, per complexity,
//!    * `simple`: `claude-haiku-4-5`,
//!    * `medium`: `claude-sonnet-4-5`, `claude-haiku-4-5`,
//!    * `complex`: `claude-opus-4-1`, `claude-sonnet-4-5`;
//! 3. then the flags (or their environment variables) override:
//!    `--complexity` (`SINGULARITY_LLM_COMPLEXITY`) keeps only that
//!    complexity's entries, `--provider` (`SINGULARITY_LLM_PROVIDER`) sets
//!    the provider of every entry, `--models a,b` (`SINGULARITY_LLM_MODELS`)
//!    sets their models. A provider other than the default one needs
//!    `--models` or a file (the default models are Claude's).
//!
//! A configuration must have at least one entry, no (provider, complexity)
//! twice, and at least one model per entry, without duplicates.

use std::path::Path;

use pgflow_core::protocol::Complexity;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The provider of the default configuration (seed 000's example).
pub const DEFAULT_PROVIDER: &str = "claude";

/// The models of the default configuration for `complexity`, in order of preference.
pub fn default_models(complexity: Complexity) -> Vec<String> {
    let models: &[&str] = match complexity {
        Complexity::Simple => &["claude-haiku-4-5"],
        Complexity::Medium => &["claude-sonnet-4-5", "claude-haiku-4-5"],
        Complexity::Complex => &["claude-opus-4-1", "claude-sonnet-4-5"],
    };
    models.iter().map(|m| m.to_string()).collect()
}

/// The protocol name of a complexity.
pub fn complexity_name(c: Complexity) -> &'static str {
    match c {
        Complexity::Simple => "simple",
        Complexity::Medium => "medium",
        Complexity::Complex => "complex",
    }
}

/// Parses `simple`, `medium` or `complex` (case-insensitive).
pub fn parse_complexity(s: &str) -> std::result::Result<Complexity, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "simple" => Ok(Complexity::Simple),
        "medium" => Ok(Complexity::Medium),
        "complex" => Ok(Complexity::Complex),
        other => Err(format!(
            "unknown complexity {other:?} (simple, medium or complex)"
        )),
    }
}

/// Which models a provider should use for one complexity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfigEntry {
    /// The provider (for example `claude`).
    pub provider: String,
    /// The complexity the models serve.
    pub complexity: Complexity,
    /// The models, in order of preference.
    pub models: Vec<String>,
}

/// A configuration: one or more entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LlmConfig {
    /// The entries, in the order they are sent.
    pub entries: Vec<LlmConfigEntry>,
}

/// The flag / environment overrides of [`LlmConfig::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Sets the provider of every entry.
    pub provider: Option<String>,
    /// Keeps only this complexity's entries.
    pub complexity: Option<Complexity>,
    /// Sets the models of every (kept) entry.
    pub models: Option<Vec<String>>,
}

/// A file holds one entry or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileShape {
    One(LlmConfigEntry),
    Many(Vec<LlmConfigEntry>),
}

impl LlmConfig {
    /// The default configuration (see the module documentation).
    pub fn defaults() -> Self {
        Self {
            entries: [Complexity::Simple, Complexity::Medium, Complexity::Complex]
                .into_iter()
                .map(|complexity| LlmConfigEntry {
                    provider: DEFAULT_PROVIDER.to_string(),
                    complexity,
                    models: default_models(complexity),
                })
                .collect(),
        }
    }

    /// Parses the JSON of a configuration file (one entry or a list).
    pub fn from_json(text: &str) -> Result<Self> {
        let shape: FileShape = serde_json::from_str(text).map_err(|e| {
            Error::InvalidRequest(format!(
                "LLM configuration: expected {{\"provider\", \"complexity\", \"models\"}} or a list of them: {e}"
            ))
        })?;
        let entries = match shape {
            FileShape::One(e) => vec![e],
            FileShape::Many(v) => v,
        };
        let config = Self { entries };
        config.check()?;
        Ok(config)
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("reading the LLM configuration {}: {e}", path.display()),
            ))
        })?;
        Self::from_json(&text)
            .map_err(|e| Error::InvalidRequest(format!("{}: {e}", path.display())))
    }

    /// The configuration to publish: `file` (or the defaults) with `o` applied.
    pub fn resolve(file: Option<&Path>, o: Overrides) -> Result<Self> {
        let mut config = match file {
            Some(path) => Self::load(path)?,
            None => {
                if let Some(p) = &o.provider {
                    if o.models.is_none() && !p.trim().eq_ignore_ascii_case(DEFAULT_PROVIDER) {
                        return Err(Error::InvalidRequest(format!(
                            "provider {p:?} needs --models (the default models are {DEFAULT_PROVIDER}'s)"
                        )));
                    }
                }
                Self::defaults()
            }
        };
        if let Some(c) = o.complexity {
            config.entries.retain(|e| e.complexity == c);
            if config.entries.is_empty() {
                // A file without this complexity: a new entry, as the flags describe it.
                let models = o.models.clone().ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "the configuration has no {} entry; give --models",
                        complexity_name(c)
                    ))
                })?;
                config.entries.push(LlmConfigEntry {
                    provider: o
                        .provider
                        .clone()
                        .unwrap_or_else(|| DEFAULT_PROVIDER.to_string()),
                    complexity: c,
                    models,
                });
            }
        }
        for e in &mut config.entries {
            if let Some(p) = &o.provider {
                e.provider = p.trim().to_string();
            }
            if let Some(m) = &o.models {
                e.models = m.clone();
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Checks the rules of the module documentation (the protocol checks
    /// each entry's fields when it is sent).
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidRequest(format!("LLM configuration: {why}")));
        if self.entries.is_empty() {
            return bad("no entries".into());
        }
        for (i, e) in self.entries.iter().enumerate() {
            let at = format!("{} / {}", e.provider, complexity_name(e.complexity));
            if e.provider.trim().is_empty() {
                return bad(format!("entry {i}: empty provider"));
            }
            if e.models.is_empty() {
                return bad(format!("{at}: no models"));
            }
            for (j, m) in e.models.iter().enumerate() {
                if m.trim().is_empty() {
                    return bad(format!("{at}: empty model name"));
                }
                if e.models[..j].contains(m) {
                    return bad(format!("{at}: model {m:?} listed twice"));
                }
            }
            let twice = self.entries[..i].iter().any(|o| {
                o.complexity == e.complexity && o.provider.eq_ignore_ascii_case(&e.provider)
            });
            if twice {
                return bad(format!("{at} listed twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(m: &[&str]) -> Option<Vec<String>> {
        Some(m.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn defaults_cover_every_complexity() {
        let d = LlmConfig::defaults();
        assert_eq!(d.entries.len(), 3);
        assert!(d.entries.iter().all(|e| e.provider == "claude"));
        assert!(d.check().is_ok());
        assert_eq!(LlmConfig::resolve(None, Overrides::default()).unwrap(), d);
    }

    #[test]
    fn flags_override_the_defaults() {
        let c = LlmConfig::resolve(
            None,
            Overrides {
                provider: Some("openai".into()),
                complexity: Some(Complexity::Complex),
                models: models(&["gpt-5", "gpt-5-mini"]),
            },
        )
        .unwrap();
        assert_eq!(
            c.entries,
            [LlmConfigEntry {
                provider: "openai".into(),
                complexity: Complexity::Complex,
                models: models(&["gpt-5", "gpt-5-mini"]).unwrap(),
            }]
        );
        let only = LlmConfig::resolve(
            None,
            Overrides {
                complexity: Some(Complexity::Simple),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(only.entries.len(), 1);
        assert_eq!(only.entries[0].models, default_models(Complexity::Simple));
        let e = LlmConfig::resolve(
            None,
            Overrides {
                provider: Some("openai".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs --models"), "{e}");
    }

    #[test]
    fn files_hold_one_entry_or_a_list() {
        let one = LlmConfig::from_json(
            r#"{"provider":"ollama","complexity":"simple","models":["llama3"]}"#,
        )
        .unwrap();
        assert_eq!(one.entries.len(), 1);
        let many = LlmConfig::from_json(
            r#"[{"provider":"a","complexity":"simple","models":["m"]},
                {"provider":"a","complexity":"complex","models":["n","m"]}]"#,
        )
        .unwrap();
        assert_eq!(many.entries.len(), 2);
        for bad in [
            r#"{"provider":"a","complexity":"huge","models":["m"]}"#,
            r#"{"provider":"a","complexity":"simple","models":[]}"#,
            r#"{"provider":"a","complexity":"simple","models":["m","m"]}"#,
            r#"{"provider":"a","complexity":"simple","models":["m"],"extra":1}"#,
            r#"[]"#,
            r#"[{"provider":"a","complexity":"simple","models":["m"]},
                {"provider":"A","complexity":"simple","models":["n"]}]"#,
        ] {
            assert!(LlmConfig::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn complexities_parse() {
        assert_eq!(parse_complexity("Medium"), Ok(Complexity::Medium));
        assert!(parse_complexity("x").is_err());
    }
}
