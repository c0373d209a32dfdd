//! The consensus engine: a proposal (from `proposals_for_consensus_queue`)
//! is recorded with the live instances asked to vote (one broadcast on
//! `consensus_vote_requests_queue`), votes (`consensus_votes_queue`) are
//! collected, and the proposal is decided once, either as soon as every
//! expected voter has voted or when its deadline passes; the result goes to
//! the proposing instance only (`consensus_results_queue`, targeted).
//!
//! * [`handlers`]: the transactional consumers of proposals and votes;
//! * [`store`]: the SQL on `centralcloud.proposals` / `centralcloud.votes`
//!   and the one place a decision is written and its result sent;
//! * [`decider`]: the periodic task deciding proposals past their deadline.
//!
//! A vote counts when it was sent (its envelope's `created_at`) before the
//! deadline, even if centralcloud handles it later (it was down, or busy):
//! a proposal past its deadline is decided once no vote sent in time is
//! left in the votes queue. Later votes are recorded, not counted.
//!
//! This module holds the decision rule itself ([`decide`]): approved when
//! approvals / votes cast reach the quorum; confidence = approvals / votes.
//! A proposal is decided exactly once, however many centralcloud workers or
//! processes run: the decision is a conditional
//! `UPDATE ... WHERE status = 'collecting'` on the row the deciding
//! transaction holds locked, in the transaction that sends the result.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use pgflow_core::protocol::validate::MAX_TEXT_LEN;
use pgflow_core::protocol::{ConsensusStatus, Vote};

pub mod decider;
pub mod handlers;
pub mod store;

/// A ratio within this distance below the quorum still meets it, so that
/// a quorum written to four decimals (0.6667) means what it says (2/3).
pub const QUORUM_TOLERANCE: f64 = 5e-5;

/// Why a proposal is being decided now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// Every expected voter has voted.
    AllVoted,
    /// The deadline passed.
    Deadline,
    /// No live instance was subscribed to vote.
    NoVoters,
}

impl DecidedBy {
    /// The value stored in `proposals.decided_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::AllVoted => "all_voted",
            DecidedBy::Deadline => "deadline",
            DecidedBy::NoVoters => "no_voters",
        }
    }
}

/// One counted vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastVote {
    /// The voting instance.
    pub voter: String,
    /// Its vote.
    pub vote: Vote,
    /// Its reason.
    pub reason: String,
}

/// The outcome for one proposal.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Approved or rejected.
    pub status: ConsensusStatus,
    /// Approvals / votes cast (0 without votes).
    pub confidence: f64,
    /// Why, in words.
    pub rationale: String,
    /// The counted votes by voter.
    pub votes: BTreeMap<String, Vote>,
}

/// Decides on the counted `votes`, given who was `expected` to vote.
pub fn decide(votes: &[CastVote], expected: &[String], quorum: f64, by: DecidedBy) -> Decision {
    let cast = votes.len();
    let approvals = votes.iter().filter(|v| v.vote == Vote::Approve).count();
    let confidence = if cast == 0 {
        0.0
    } else {
        approvals as f64 / cast as f64
    };
    let approved = cast > 0 && confidence + QUORUM_TOLERANCE >= quorum;
    let status = if approved {
        ConsensusStatus::Approved
    } else {
        ConsensusStatus::Rejected
    };
    let mut r = String::new();
    let verdict = if approved { "approved" } else { "rejected" };
    if by == DecidedBy::NoVoters {
        r.push_str(
            "rejected: no live instance was subscribed to consensus_vote_requests_queue to vote",
        );
    } else if cast == 0 {
        let _ = write!(
            r,
            "rejected: no votes were cast before the deadline ({} expected: {})",
            expected.len(),
            list_or_none(expected.iter().map(String::as_str))
        );
    } else {
        let relation = if approved { "meets" } else { "is below" };
        let _ = write!(
            r,
            "{verdict}{}: {approvals} of {cast} votes approve; confidence {confidence:.2} {relation} the quorum {quorum:.4}",
            if by == DecidedBy::Deadline { " at the deadline" } else { "" },
        );
        let missing: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .filter(|e| !votes.iter().any(|v| v.voter == *e))
            .collect();
        if missing.is_empty() {
            let _ = write!(r, "; all {} expected voters voted", expected.len());
        } else {
            let _ = write!(
                r,
                "; {} of {} expected voters did not vote ({})",
                missing.len(),
                expected.len(),
                missing.join(", ")
            );
        }
        let against: Vec<String> = votes
            .iter()
            .filter(|v| v.vote == Vote::Reject)
            .map(|v| format!("{}: {}", v.voter, v.reason))
            .collect();
        if !against.is_empty() {
            let _ = write!(r, "; against: {}", against.join("; "));
        }
    }
    Decision {
        status,
        confidence,
        rationale: truncate(r, MAX_TEXT_LEN),
        votes: votes.iter().map(|v| (v.voter.clone(), v.vote)).collect(),
    }
}

/// `rationale` with the voters whose votes were flagged (sent by instances
/// the proposal did not ask) named, so the result and the journey show them.
pub fn note_flagged(rationale: String, flagged: &[String]) -> String {
    if flagged.is_empty() {
        return rationale;
    }
    truncate(
        format!(
            "{rationale}; not counted: {} vote(s) from instances not asked to vote ({})",
            flagged.len(),
            flagged.join(", ")
        ),
        MAX_TEXT_LEN,
    )
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The protocol's name of a vote (as stored in `votes.vote`).
pub fn vote_str(v: Vote) -> &'static str {
    match v {
        Vote::Approve => "approve",
        Vote::Reject => "reject",
    }
}

/// The protocol's name of a decision (as stored in `proposals.status`).
pub fn status_str(s: ConsensusStatus) -> &'static str {
    match s {
        ConsensusStatus::Approved => "approved",
        ConsensusStatus::Rejected => "rejected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(voter: &str, vote: Vote) -> CastVote {
        CastVote {
            voter: voter.into(),
            vote,
            reason: format!("{voter} says so"),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn two_of_three_meets_the_default_quorum() {
        let votes = [
            v("s1", Vote::Approve),
            v("s2", Vote::Approve),
            v("s3", Vote::Reject),
        ];
        let d = decide(
            &votes,
            &names(&["s1", "s2", "s3"]),
            0.6667,
            DecidedBy::AllVoted,
        );
        assert_eq!(d.status, ConsensusStatus::Approved);
        assert!((d.confidence - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            d.rationale.contains("2 of 3 votes approve"),
            "{}",
            d.rationale
        );
        assert!(
            d.rationale.contains("against: s3: s3 says so"),
            "{}",
            d.rationale
        );
        assert_eq!(d.votes.len(), 3);
    }

    #[test]
    fn one_of_three_is_rejected_and_a_missing_voter_is_named() {
        let votes = [v("s1", Vote::Approve), v("s2", Vote::Reject)];
        let d = decide(
            &votes,
            &names(&["s1", "s2", "s3"]),
            0.6667,
            DecidedBy::Deadline,
        );
        assert_eq!(d.status, ConsensusStatus::Rejected);
        assert_eq!(d.confidence, 0.5);
        assert!(d.rationale.contains("at the deadline"), "{}", d.rationale);
        assert!(d.rationale.contains("did not vote (s3)"), "{}", d.rationale);
    }

    #[test]
    fn no_votes_means_rejection_with_the_reason() {
        let d = decide(&[], &names(&["s1"]), 0.5, DecidedBy::Deadline);
        assert_eq!((d.status, d.confidence), (ConsensusStatus::Rejected, 0.0));
        assert!(
            d.rationale.contains("no votes were cast"),
            "{}",
            d.rationale
        );
        let d = decide(&[], &[], 0.5, DecidedBy::NoVoters);
        assert!(d.rationale.contains("no live instance"), "{}", d.rationale);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let s = truncate("ééééé".to_string(), 6);
        assert!(s.len() <= 6 && s.ends_with("..."), "{s}");
    }
}
