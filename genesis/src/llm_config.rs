//! The LLM-config manager (seed 000's `Genesis.LlmConfigManager`): checks
//! an LLM configuration (provider, complexity, models) and makes it the
//! active one for its provider and complexity, keeping every earlier one.
//!
//! Known providers ([`PROVIDERS`]): `anthropic`, `openai`, `google`,
//! `mistral`, `ollama`, `cohere`, `groq`, `deepseek`, `xai`, `bedrock`,
//! `azure_openai`, `openrouter`; the seeds' `claude` is accepted as
//! `anthropic` and `gemini` as `google` (configurations are stored under
//! the canonical name; the result echoes the name the request used).
//! Names are case-insensitive. The complexity is one of `simple`, `medium`,
//! `complex` (the protocol refuses others). The model list must be
//! non-empty, without duplicates, each name made of letters, digits and
//! `. _ - : / @`.

use chrono::Utc;
use pgflow_core::protocol::{
    Complexity, GenesisLlmConfigUpdate, LlmConfigUpdateResult, ResultStatus,
};
use sqlx::PgConnection;
use uuid::Uuid;

/// The providers genesis knows, by canonical name.
pub const PROVIDERS: [&str; 12] = [
    "anthropic",
    "openai",
    "google",
    "mistral",
    "ollama",
    "cohere",
    "groq",
    "deepseek",
    "xai",
    "bedrock",
    "azure_openai",
    "openrouter",
];

/// Other names of known providers: `(alias, canonical)`.
pub const ALIASES: [(&str, &str); 2] = [("claude", "anthropic"), ("gemini", "google")];

/// The canonical name of `provider`, if genesis knows it.
pub fn canonical_provider(provider: &str) -> Option<&'static str> {
    let p = provider.trim().to_ascii_lowercase();
    PROVIDERS
        .iter()
        .copied()
        .find(|known| *known == p)
        .or_else(|| {
            ALIASES
                .iter()
                .find(|(alias, _)| *alias == p)
                .map(|(_, c)| *c)
        })
}

/// The protocol name of a complexity.
pub fn complexity_name(c: Complexity) -> &'static str {
    match c {
        Complexity::Simple => "simple",
        Complexity::Medium => "medium",
        Complexity::Complex => "complex",
    }
}

fn valid_model(m: &str) -> bool {
    !m.is_empty()
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@'))
}

/// Checks `update`; returns the canonical provider, or what is wrong.
pub fn check(update: &GenesisLlmConfigUpdate) -> Result<&'static str, String> {
    let Some(provider) = canonical_provider(&update.provider) else {
        return Err(format!(
            "unknown provider {:?} (known: {}; aliases: claude, gemini)",
            update.provider,
            PROVIDERS.join(", ")
        ));
    };
    if update.models.is_empty() {
        return Err("the model list is empty".to_string());
    }
    if let Some(bad) = update.models.iter().find(|m| !valid_model(m)) {
        return Err(format!(
            "invalid model name {bad:?} (letters, digits and . _ - : / @ only)"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = update.models.iter().find(|m| !seen.insert(m.as_str())) {
        return Err(format!("model {dup:?} is listed twice"));
    }
    Ok(provider)
}

const APPLY_SQL: &str = r#"
WITH active AS (
    INSERT INTO genesis.llm_configs AS c (provider, complexity, version, models)
    VALUES ($1, $2, 1, $3)
    ON CONFLICT (provider, complexity) DO UPDATE
       SET version = c.version + 1, models = EXCLUDED.models, updated_at = now()
    RETURNING version
)
INSERT INTO genesis.llm_config_history
    (provider, complexity, version, models, request_id, instance_id, trace_id, published_at)
SELECT $1, $2, active.version, $3, $4, $5, $6, $7 FROM active
RETURNING version
"#;

/// Makes `update`'s models the active configuration of `provider`
/// (canonical) and its complexity; returns the version. A request already
/// applied is not applied again.
pub async fn apply(
    conn: &mut PgConnection,
    update: &GenesisLlmConfigUpdate,
    provider: &str,
    trace_id: Uuid,
) -> Result<i32, sqlx::Error> {
    let done: Option<i32> =
        sqlx::query_scalar("SELECT version FROM genesis.llm_config_history WHERE request_id = $1")
            .bind(update.request_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(version) = done {
        return Ok(version);
    }
    sqlx::query_scalar(APPLY_SQL)
        .bind(provider)
        .bind(complexity_name(update.complexity))
        .bind(&update.models)
        .bind(update.request_id)
        .bind(&update.instance_id)
        .bind(trace_id)
        .bind(update.timestamp)
        .fetch_one(conn)
        .await
}

/// The result of `update`: completed, or failed with `error`.
pub fn result(update: &GenesisLlmConfigUpdate, error: Option<String>) -> LlmConfigUpdateResult {
    LlmConfigUpdateResult {
        request_id: update.request_id,
        instance_id: update.instance_id.clone(),
        status: ResultStatus::of(error.as_deref()),
        provider: update.provider.clone(),
        complexity: update.complexity,
        models_count: u32::try_from(update.models.len()).unwrap_or(u32::MAX),
        error,
        timestamp: Utc::now(),
    }
}

/// Checks and applies `update` on `conn`; the result says how it went.
/// Only database errors are errors.
pub async fn run(
    conn: &mut PgConnection,
    update: &GenesisLlmConfigUpdate,
    trace_id: Uuid,
) -> Result<LlmConfigUpdateResult, sqlx::Error> {
    match check(update) {
        Err(reason) => {
            tracing::warn!(provider = %update.provider, %reason, "LLM configuration refused");
            Ok(result(update, Some(reason)))
        }
        Ok(provider) => {
            let version = apply(conn, update, provider, trace_id).await?;
            tracing::info!(
                provider,
                complexity = complexity_name(update.complexity),
                version,
                models = update.models.len(),
                "updated LLM configuration"
            );
            Ok(result(update, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(provider: &str, models: &[&str]) -> GenesisLlmConfigUpdate {
        GenesisLlmConfigUpdate {
            request_id: Uuid::now_v7(),
            instance_id: "singularity_1".into(),
            provider: provider.into(),
            complexity: Complexity::Complex,
            models: models.iter().map(|m| m.to_string()).collect(),
            timestamp: Utc::now(),
        }
    }

    #[test]
    fn providers_are_known_by_name_or_alias() {
        assert_eq!(canonical_provider("Anthropic"), Some("anthropic"));
        assert_eq!(canonical_provider("claude"), Some("anthropic"));
        assert_eq!(canonical_provider("gemini"), Some("google"));
        assert_eq!(canonical_provider("acme-llm"), None);
        let e = check(&update("acme-llm", &["m"])).unwrap_err();
        assert!(e.contains("unknown provider \"acme-llm\""), "{e}");
    }

    #[test]
    fn models_are_checked() {
        assert_eq!(
            check(&update(
                "claude",
                &["claude-3-5-sonnet", "claude-3-haiku@2024"]
            )),
            Ok("anthropic")
        );
        assert!(check(&update("openai", &[])).unwrap_err().contains("empty"));
        assert!(check(&update("openai", &["a", "a"]))
            .unwrap_err()
            .contains("twice"));
        assert!(check(&update("openai", &["has space"]))
            .unwrap_err()
            .contains("invalid model"));
    }

    #[test]
    fn results_count_the_models() {
        let r = result(&update("claude", &["a", "b", "c"]), None);
        assert_eq!(
            (r.status, r.provider.as_str(), r.models_count),
            (ResultStatus::Completed, "claude", 3)
        );
    }
}
