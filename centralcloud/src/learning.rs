//! The learning loop: turns evidence (consensus decisions, execution
//! metrics and their breaches, pattern reports) into updated safety
//! profiles per agent type, broadcast to every instance
//! (`guardian_safety_profiles_queue`), promotes patterns confirmed by
//! several instances to rules, and tells Genesis
//! (`learning_loop_completed_queue`). It runs on a schedule kept in the
//! database ([`schedule`]: restarts do not delay it) and on demand
//! (`centralcloud learn`); see [`pass`] for the transaction.
//!
//! Each pass learns from the evidence that arrived since the previous one
//! ([`Evidence`], per agent type) with this rule ([`learn`]):
//!
//! * **success rate**: the share of an agent type's *applied changes* that
//!   worked, as a Bayesian estimate that forgets ([`Outcomes`]): the prior
//!   `p0` ([`DEFAULT_SUCCESS_RATE`]) worth [`PRIOR_WEIGHT`] outcomes, plus every
//!   outcome weighted by `2^(-age / half-life)` (age since centralcloud
//!   received it; `CENTRALCLOUD_LEARNING_HALF_LIFE_MS`, default one day).
//!   Outcomes: each execution (no breach = 1, breach = 0) and each pattern
//!   report (its reported success rate). A consensus decision is not an
//!   outcome: a rejected proposal was never applied, so rejecting risky
//!   changes (the instances doing their job) cannot lower the rate, and an
//!   approval does not raise it. Decisions are still counted in the
//!   evidence recorded with each profile version.
//! * **the way back**: the rate is recomputed for every agent type at every
//!   pass, with or without new evidence, so it follows the outcomes' age.
//!   An agent type pushed below the instances' floor
//!   (`SINGULARITY_MIN_SUCCESS_RATE`) has its proposals rejected, so it
//!   produces no new outcomes; as its failures age their weight halves
//!   every half-life and the rate returns towards the prior. With `n`
//!   fresh failures and nothing else the rate is
//!   `PRIOR_WEIGHT·p0 / (PRIOR_WEIGHT + n)`; it is back above a floor `f`
//!   once `n·2^(-t/h) ≤ PRIOR_WEIGHT·(p0/f - 1)`, i.e. after
//!   `t = h·log2(n / (PRIOR_WEIGHT·(p0/f - 1)))` (floor 0.8, 10 failures:
//!   about 2.4 half-lives). New failures lock it out again just as fast. A
//!   change of the rate that comes from ageing alone is stored and
//!   broadcast once it reaches [`DECAY_STEP`] (so the profile is not
//!   re-broadcast at every pass for tiny drifts).
//! * **thresholds** (error rate, latency, cost), only with at least
//!   `min_samples` new executions: a threshold breached by more than
//!   [`TIGHTEN_SHARE`] of the executions is tightened by
//!   [`TIGHTEN_FACTOR`] (down to a floor): an agent whose changes keep
//!   breaching it is held closer; when no execution breached anything, every
//!   threshold is relaxed by [`RELAX_FACTOR`] (up to twice the default): a
//!   clean record earns headroom. Otherwise thresholds stay.
//!
//! A profile is stored as a new version, and broadcast, when it changed (or
//! the agent type had none yet). `thresholds_updated` counts the threshold
//! values changed; `rules_generated` the patterns promoted this pass (seen
//! by at least [`RULE_MIN_INSTANCES`] instances with a mean success rate of
//! at least [`RULE_MIN_SUCCESS`]); `patterns_processed` the distinct
//! patterns with new reports.

use pgflow_core::protocol::SafetyProfile;
use serde::Serialize;

use crate::profiles::{
    DEFAULT_COST_THRESHOLD, DEFAULT_ERROR_THRESHOLD, DEFAULT_LATENCY_THRESHOLD,
    DEFAULT_SUCCESS_RATE,
};

mod outcomes;
pub mod pass;
pub mod schedule;

pub use pass::{run_pass, LearningReport, Trigger};
pub use schedule::{run_if_due, run_loop, Tick};

/// Weight of the prior success rate ([`DEFAULT_SUCCESS_RATE`]), in outcomes.
pub const PRIOR_WEIGHT: f64 = 10.0;
/// Smallest change of a success rate, from ageing alone, that is stored and
/// broadcast.
pub const DECAY_STEP: f64 = 0.01;
/// Outcomes older than this many half-lives (weight below 2^-20) are left
/// out of the success rate.
pub const HORIZON_HALF_LIVES: f64 = 20.0;
/// Share of executions breaching a threshold above which it is tightened.
pub const TIGHTEN_SHARE: f64 = 0.2;
/// Factor applied to a tightened threshold.
pub const TIGHTEN_FACTOR: f64 = 0.9;
/// Factor applied to every threshold after a clean record.
pub const RELAX_FACTOR: f64 = 1.05;
/// Instances that must have reported a pattern before it becomes a rule.
pub const RULE_MIN_INSTANCES: i32 = 2;
/// Mean success rate a pattern needs to become a rule.
pub const RULE_MIN_SUCCESS: f64 = 0.9;
/// Lowest error threshold learning may set.
pub const ERROR_FLOOR: f64 = 0.01;
/// Lowest latency threshold learning may set, in milliseconds.
pub const LATENCY_FLOOR: f64 = 100.0;
/// Lowest cost threshold learning may set.
pub const COST_FLOOR: f64 = 0.01;

/// An agent type's outcomes of applied changes, each weighted by its age
/// (`2^(-age / half-life)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Outcomes {
    /// Sum of the weights.
    pub weight: f64,
    /// Sum of weight × success (1 or 0, or a pattern's reported rate).
    pub successes: f64,
}

impl Outcomes {
    /// The success rate these outcomes give: the prior
    /// ([`DEFAULT_SUCCESS_RATE`] worth [`PRIOR_WEIGHT`] outcomes) updated
    /// with them, to four decimals. No outcomes: the prior.
    pub fn success_rate(&self) -> f64 {
        let rate = (DEFAULT_SUCCESS_RATE * PRIOR_WEIGHT + self.successes.max(0.0))
            / (PRIOR_WEIGHT + self.weight.max(0.0));
        round_to(rate.clamp(0.0, 1.0), 4)
    }
}

/// What one pass saw for one agent type.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// Proposals approved by consensus (recorded; not an outcome).
    pub approved: u64,
    /// Proposals rejected by consensus (recorded; not an outcome).
    pub rejected: u64,
    /// Execution metrics reported.
    pub executions: u64,
    /// Executions that breached the error-rate threshold.
    pub error_breaches: u64,
    /// Executions that breached the latency threshold.
    pub latency_breaches: u64,
    /// Executions that breached the cost threshold.
    pub cost_breaches: u64,
    /// Pattern reports.
    pub pattern_reports: u64,
    /// Sum of the reported pattern success rates.
    pub pattern_success_sum: f64,
}

impl Evidence {
    /// Executions with a breach of any threshold.
    pub fn breaches(&self) -> u64 {
        self.error_breaches + self.latency_breaches + self.cost_breaches
    }
}

/// A learned profile and how many thresholds moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// The new profile.
    pub profile: SafetyProfile,
    /// Threshold values that changed.
    pub thresholds_changed: u64,
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Applies the learning rule (module docs) to `current`: the success rate
/// from `outcomes` (every outcome so far, new evidence included), the
/// thresholds from the new evidence `ev`.
pub fn learn(
    current: &SafetyProfile,
    ev: &Evidence,
    outcomes: &Outcomes,
    min_samples: u64,
) -> Learned {
    let mut profile = SafetyProfile {
        success_rate: outcomes.success_rate(),
        ..current.clone()
    };
    let mut changed = 0;
    if ev.executions >= min_samples && ev.executions > 0 {
        let n = ev.executions as f64;
        let clean = ev.breaches() == 0;
        let adjust = |t: f64, breaches: u64, floor: f64, ceiling: f64, decimals: i32| {
            let next = if breaches as f64 / n > TIGHTEN_SHARE {
                (t * TIGHTEN_FACTOR).max(floor)
            } else if clean {
                (t * RELAX_FACTOR).min(ceiling)
            } else {
                t
            };
            round_to(next, decimals)
        };
        let error = adjust(
            current.error_threshold,
            ev.error_breaches,
            ERROR_FLOOR,
            (DEFAULT_ERROR_THRESHOLD * 2.0).min(1.0),
            4,
        );
        let latency = adjust(
            current.latency_threshold,
            ev.latency_breaches,
            LATENCY_FLOOR,
            DEFAULT_LATENCY_THRESHOLD * 2.0,
            1,
        );
        let cost = adjust(
            current.cost_threshold,
            ev.cost_breaches,
            COST_FLOOR,
            DEFAULT_COST_THRESHOLD * 2.0,
            4,
        );
        for (old, new) in [
            (current.error_threshold, error),
            (current.latency_threshold, latency),
            (current.cost_threshold, cost),
        ] {
            if (old - new).abs() > 1e-9 {
                changed += 1;
            }
        }
        profile.error_threshold = error;
        profile.latency_threshold = latency;
        profile.cost_threshold = cost;
    }
    Learned {
        profile,
        thresholds_changed: changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::default_profile;

    /// The outcomes of `ev` alone, all fresh (weight 1).
    fn fresh(ev: &Evidence) -> Outcomes {
        Outcomes {
            weight: (ev.executions + ev.pattern_reports) as f64,
            successes: ev.executions.saturating_sub(ev.breaches()) as f64 + ev.pattern_success_sum,
        }
    }

    #[test]
    fn frequent_error_breaches_tighten_the_error_threshold_only() {
        let ev = Evidence {
            executions: 3,
            error_breaches: 2,
            ..Evidence::default()
        };
        let l = learn(&default_profile(), &ev, &fresh(&ev), 3);
        assert_eq!(l.thresholds_changed, 1);
        assert_eq!(l.profile.error_threshold, 0.09);
        assert_eq!(l.profile.latency_threshold, 3000.0);
        // 10 prior outcomes at 0.95 plus 1 success in 3: (9.5 + 1) / 13.
        assert_eq!(l.profile.success_rate, round_to(10.5 / 13.0, 4));
    }

    #[test]
    fn a_clean_record_relaxes_up_to_the_ceiling() {
        let ev = Evidence {
            executions: 5,
            ..Evidence::default()
        };
        let l = learn(&default_profile(), &ev, &fresh(&ev), 3);
        assert_eq!(l.thresholds_changed, 3);
        assert_eq!(l.profile.error_threshold, 0.105);
        let mut p = default_profile();
        p.latency_threshold = 6000.0;
        assert_eq!(
            learn(&p, &ev, &fresh(&ev), 3).profile.latency_threshold,
            6000.0
        );
    }

    #[test]
    fn too_few_executions_leave_thresholds_alone() {
        let ev = Evidence {
            executions: 2,
            error_breaches: 2,
            pattern_reports: 2,
            pattern_success_sum: 2.0,
            ..Evidence::default()
        };
        let l = learn(&default_profile(), &ev, &fresh(&ev), 3);
        assert_eq!(l.thresholds_changed, 0);
        assert_eq!(l.profile.error_threshold, DEFAULT_ERROR_THRESHOLD);
        assert!(l.profile.success_rate < 0.95);
    }

    #[test]
    fn floors_hold() {
        let mut p = default_profile();
        p.error_threshold = 0.0105;
        let ev = Evidence {
            executions: 1,
            error_breaches: 1,
            ..Evidence::default()
        };
        assert_eq!(
            learn(&p, &ev, &fresh(&ev), 1).profile.error_threshold,
            ERROR_FLOOR
        );
    }

    #[test]
    fn consensus_decisions_are_not_outcomes() {
        let mut low = default_profile();
        low.success_rate = 0.76;
        let ev = Evidence {
            rejected: 30,
            approved: 3,
            ..Evidence::default()
        };
        let l = learn(&low, &ev, &Outcomes::default(), 3);
        assert_eq!(l.profile.success_rate, DEFAULT_SUCCESS_RATE);
        assert_eq!(l.thresholds_changed, 0);
    }

    #[test]
    fn failures_lose_weight_as_they_age() {
        // Ten fresh failures: 9.5 / 20, far below a 0.8 floor.
        let fresh = Outcomes {
            weight: 10.0,
            successes: 0.0,
        };
        assert_eq!(fresh.success_rate(), 0.475);
        // Each half-life halves their weight; 2.4 half-lives later
        // (10 · 2^-2.4 = 1.89 outcomes) the rate is back near the floor, and
        // one half-life more is well above it.
        let at = |half_lives: f64| Outcomes {
            weight: 10.0 * 0.5f64.powf(half_lives),
            successes: 0.0,
        };
        assert!(at(1.0).success_rate() < 0.8);
        assert!(at(3.4).success_rate() > 0.8, "{}", at(3.4).success_rate());
        assert_eq!(at(40.0).success_rate(), DEFAULT_SUCCESS_RATE);
    }
}
