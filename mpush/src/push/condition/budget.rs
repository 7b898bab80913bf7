//! The hard per-evaluation budget of a condition and the per-broadcast guard built on it.
//!
//! A condition has no loops, so without strings its cost is bounded by its tree size. Strings
//! are the exception: each `replace(/./g,'$&$&$&$&')` multiplies a string's length by four, and
//! twelve of them in a 317-byte condition once took ~10 s and 168 MB for one session. So every
//! evaluation runs under a [`Budget`]: no string it produces may exceed [`MAX_STRING_LEN`]
//! bytes (checked before the allocation), and it may take at most [`MAX_EVAL_STEPS`] steps,
//! where a step is one syntax-tree node, one byte a string operation scans or produces, or
//! [`STEPS_PER_REGEX_MATCH`] per regex match. A [`BroadcastCondition`] also caps the steps of
//! all evaluations of one broadcast (at [`BROADCAST_STEPS_PER_SESSION`] per evaluation on
//! average, after a [`BROADCAST_STEPS_BURST`]), so that a condition that stays just under the
//! per-evaluation limit cannot cost a large broadcast seconds either; it stops matching on the
//! first violation, so that a broadcast can report it to the sender as an error.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Condition, EvalError, SessionVars, Value};

/// Longest string (in UTF-8 bytes) that one evaluation may produce by `+`, `replace`, case
/// conversion or `String(..)`. Session values themselves are borrowed and do not count; the
/// limit is above the decompressed size of any bind packet, so that a condition can still copy
/// (e.g. `toLowerCase`) the longest `tags` a client can send.
pub const MAX_STRING_LEN: usize = 128 * 1024;
/// Most steps one evaluation may take: at most about a millisecond of CPU (measured with
/// `condition-bench`, docs/CONDITIONS.md); the documented example conditions take 5 to 700.
pub const MAX_EVAL_STEPS: u64 = 1 << 18;
/// Steps charged per regex match, on top of the bytes scanned: finding and expanding one match
/// costs about as much as scanning a hundred bytes.
pub const STEPS_PER_REGEX_MATCH: u64 = 64;
/// Steps per evaluation that a broadcast may use on average (about 3 µs of CPU, a third of what
/// the delivery itself costs), so its evaluations cost at most a fixed share of the broadcast.
pub const BROADCAST_STEPS_PER_SESSION: u64 = 4096;
/// Steps a broadcast may use beyond [`BROADCAST_STEPS_PER_SESSION`] per evaluation, so that a
/// few expensive sessions (e.g. with long `tags`) do not stop it.
pub const BROADCAST_STEPS_BURST: u64 = 1 << 24;

/// A condition used more than its budget. Unlike a `TypeError`, which only means "no match"
/// for that session, this is reported to whoever sent the condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExceeded {
    /// One evaluation would have produced a string longer than the limit.
    #[error("a string longer than {limit} bytes")]
    StringLength {
        /// [`MAX_STRING_LEN`].
        limit: usize,
    },
    /// One evaluation took more steps than the limit.
    #[error("more than {limit} evaluation steps")]
    Steps {
        /// [`MAX_EVAL_STEPS`].
        limit: u64,
    },
    /// The evaluations of one broadcast took more steps together than it allows.
    #[error("more than {per_session} evaluation steps per session on average over a broadcast")]
    BroadcastSteps {
        /// [`BROADCAST_STEPS_PER_SESSION`].
        per_session: u64,
    },
}

/// What is left of one evaluation's budget.
#[derive(Debug)]
pub(super) struct Budget {
    steps_left: u64,
}

impl Budget {
    pub(super) fn new() -> Self {
        Self {
            steps_left: MAX_EVAL_STEPS,
        }
    }

    /// Charges `n` steps; fails once the evaluation has used more than [`MAX_EVAL_STEPS`].
    pub(super) fn charge(&mut self, n: u64) -> Result<(), EvalError> {
        match self.steps_left.checked_sub(n) {
            Some(left) => {
                self.steps_left = left;
                Ok(())
            }
            None => {
                self.steps_left = 0;
                Err(EvalError::Budget(BudgetExceeded::Steps {
                    limit: MAX_EVAL_STEPS,
                }))
            }
        }
    }

    /// Charges a scan of `bytes` bytes.
    pub(super) fn scan(&mut self, bytes: usize) -> Result<(), EvalError> {
        self.charge(u64::try_from(bytes).unwrap_or(u64::MAX))
    }

    /// Checks that a string of `len` bytes may be produced, and charges for producing it.
    /// Called before the allocation, so a rejected string never exists.
    pub(super) fn produce(&mut self, len: usize) -> Result<(), EvalError> {
        check_len(len)?;
        self.scan(len)
    }

    /// Steps used so far.
    pub(super) fn used(&self) -> u64 {
        MAX_EVAL_STEPS - self.steps_left
    }
}

/// Fails if a string of `len` bytes would exceed [`MAX_STRING_LEN`].
fn check_len(len: usize) -> Result<(), EvalError> {
    if len > MAX_STRING_LEN {
        Err(EvalError::Budget(BudgetExceeded::StringLength {
            limit: MAX_STRING_LEN,
        }))
    } else {
        Ok(())
    }
}

/// Appends `piece` unless that would make `out` longer than [`MAX_STRING_LEN`].
pub(super) fn push_capped(out: &mut String, piece: &str) -> Result<(), EvalError> {
    check_len(out.len().saturating_add(piece.len()))?;
    out.push_str(piece);
    Ok(())
}

/// A condition evaluated over one broadcast. The first budget violation, on whichever session,
/// trips it: from then on it matches nothing, so the rest of the broadcast costs almost nothing,
/// and [`BroadcastCondition::exceeded`] tells the broadcast to answer the sender with an error.
#[derive(Debug)]
pub struct BroadcastCondition {
    condition: Condition,
    steps: AtomicU64,
    evaluations: AtomicU64,
    exceeded: OnceLock<BudgetExceeded>,
}

impl BroadcastCondition {
    /// Starts a broadcast's evaluations of `condition` with a fresh broadcast budget.
    pub fn new(condition: Condition) -> Self {
        Self {
            condition,
            steps: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
            exceeded: OnceLock::new(),
        }
    }

    /// The condition.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// As [`Condition::matches`], but `false` for every session once the budget was exceeded.
    pub fn matches(&self, vars: &SessionVars<'_>) -> bool {
        if self.exceeded.get().is_some() {
            return false;
        }
        let mut budget = Budget::new();
        let result = self.condition.eval_in(vars, &mut budget);
        let total = self
            .steps
            .fetch_add(budget.used(), Ordering::Relaxed)
            .saturating_add(budget.used());
        let evaluations = self.evaluations.fetch_add(1, Ordering::Relaxed) + 1;
        let allowed = evaluations
            .saturating_mul(BROADCAST_STEPS_PER_SESSION)
            .saturating_add(BROADCAST_STEPS_BURST);
        match result {
            Err(EvalError::Budget(e)) => {
                let _ = self.exceeded.set(e);
                false
            }
            _ if total > allowed => {
                let _ = self.exceeded.set(BudgetExceeded::BroadcastSteps {
                    per_session: BROADCAST_STEPS_PER_SESSION,
                });
                false
            }
            r => matches!(r, Ok(Value::Bool(true))),
        }
    }

    /// The first budget violation of this broadcast, if any.
    pub fn exceeded(&self) -> Option<BudgetExceeded> {
        self.exceeded.get().copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::push::condition::{ConditionError, MAX_DEPTH};

    /// The issue's 317-byte condition: `userId` and twelve chained `.replace(/./g,'$&$&$&$&')`.
    fn bomb(steps: usize) -> String {
        format!(
            "userId{}.length > 0",
            ".replace(/./g,'$&$&$&$&')".repeat(steps)
        )
    }

    fn user(id: &str) -> SessionVars<'_> {
        SessionVars {
            user_id: Some(id),
            ..SessionVars::default()
        }
    }

    /// Evaluates under a fresh budget and returns the result and the steps it used.
    fn run(c: &Condition, vars: &SessionVars<'_>) -> (Result<bool, EvalError>, u64) {
        let mut b = Budget::new();
        let r = c.eval_in(vars, &mut b).map(|v| v == Value::Bool(true));
        (r, b.used())
    }

    #[test]
    fn the_issue_bomb_is_stopped_by_the_string_cap_before_it_allocates() {
        let src = bomb(12);
        assert_eq!(src.len(), 317);
        let c = Condition::compile(&src).unwrap();
        let (r, used) = run(&c, &user("1234567890"));
        // Its fourth replace (on 2,560 bytes) runs out of steps: a fraction of a millisecond
        // (see condition-bench), where it used to take ~10 s and 168 MB.
        let steps = BudgetExceeded::Steps {
            limit: MAX_EVAL_STEPS,
        };
        assert_eq!(r, Err(EvalError::Budget(steps)));
        assert_eq!(used, MAX_EVAL_STEPS);
        assert_eq!(c.try_matches(&user("1234567890")), Err(steps));
        // `matches` keeps its boolean contract: an exceeded budget is not a match.
        assert!(!c.matches(&user("1234567890")));
        // Two more steps (which used to abort the process) fail the same way.
        let c = Condition::compile(&bomb(14)).unwrap();
        assert_eq!(c.try_matches(&user("1234567890")), Err(steps));
    }

    #[test]
    fn a_chain_too_long_for_the_depth_limit_is_a_compile_error() {
        let e: ConditionError = Condition::compile(&bomb(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.message.contains("nested deeper than 64"), "{e}");
    }

    #[test]
    fn strings_up_to_the_cap_are_allowed() {
        let id = "x".repeat(MAX_STRING_LEN / 2);
        let c = Condition::compile("(userId + userId).length").unwrap();
        assert_eq!(c.eval(&user(&id)), Ok(Value::Number(MAX_STRING_LEN as f64)));
        let longer = format!("{id}x");
        assert_eq!(
            c.eval(&user(&longer)),
            Err(EvalError::Budget(BudgetExceeded::StringLength {
                limit: MAX_STRING_LEN
            }))
        );
        // The same cap applies inside replace, before the output grows past it.
        let c = Condition::compile("userId.replace('x', '$`$`$`') != ''").unwrap();
        assert!(c.try_matches(&user("xx")).unwrap());
        let c = Condition::compile("userId.replace(/$/, '$`$`$`') != ''").unwrap();
        assert_eq!(
            c.try_matches(&user(&id)),
            Err(BudgetExceeded::StringLength {
                limit: MAX_STRING_LEN
            })
        );
    }

    #[test]
    fn work_without_allocation_is_capped_by_steps() {
        // Each failed search scans the whole (session-provided) string without producing one.
        // Slightly under 64 KiB, so that the per-node steps of the searches that fit still do.
        let id = "a".repeat(64 * 1024 - 64);
        let searches = (MAX_EVAL_STEPS as usize / id.len()) + 1;
        let src = vec![r#"userId.indexOf("b")==-1"#; searches].join(" && ");
        let c = Condition::compile(&src).unwrap();
        let (r, used) = run(&c, &user(&id));
        let steps = BudgetExceeded::Steps {
            limit: MAX_EVAL_STEPS,
        };
        assert_eq!(r, Err(EvalError::Budget(steps)));
        assert_eq!(used, MAX_EVAL_STEPS);
        // One search fewer fits.
        let src = vec![r#"userId.indexOf("b")==-1"#; searches - 1].join(" && ");
        assert_eq!(
            Condition::compile(&src).unwrap().try_matches(&user(&id)),
            Ok(true)
        );
        // Regex matches cost more than the bytes they cover.
        let c = Condition::compile("userId.replace(/a/g,'b').length > 0").unwrap();
        let (r, used) = run(&c, &user(&id));
        assert_eq!(r, Err(EvalError::Budget(steps)), "{used}");
    }

    #[test]
    fn documented_conditions_fit_the_broadcast_average() {
        let vars = SessionVars {
            user_id: Some("100119"),
            tags: Some("vip,test,beta"),
            client_version: Some("android-1.10.3"),
            os_name: Some("android"),
            os_version: Some("14"),
        };
        for src in [
            "userId % 100 < 20",
            r#"tags!=null && tags.indexOf("test")!=-1"#,
            r#"clientVersion.indexOf("android")!=-1 && clientVersion.replace(/[^\d]/g,"") > 20"#,
        ] {
            let c = Condition::compile(src).unwrap();
            let (r, used) = run(&c, &vars);
            assert_eq!(r, Ok(true), "{src}");
            // Below the broadcast average, so they can run on any number of sessions.
            assert!(used < BROADCAST_STEPS_PER_SESSION, "{src}: {used} steps");
        }
    }

    #[test]
    fn a_broadcast_condition_trips_on_the_first_violation_and_then_matches_nothing() {
        // Short ids match cheaply; a long one sets the bomb off.
        let src = format!("userId.length < 3 || {}", bomb(12));
        let bc = BroadcastCondition::new(Condition::compile(&src).unwrap());
        assert!(bc.matches(&user("1")));
        assert_eq!(bc.exceeded(), None);
        assert!(!bc.matches(&user("1234567890")));
        let steps = BudgetExceeded::Steps {
            limit: MAX_EVAL_STEPS,
        };
        assert_eq!(bc.exceeded(), Some(steps));
        assert!(!bc.matches(&user("2")), "tripped: nothing matches any more");
        assert_eq!(bc.exceeded(), Some(steps));
        assert_eq!(bc.condition().source(), src);
    }

    #[test]
    fn a_broadcast_condition_caps_the_average_steps_of_its_evaluations() {
        let id = "a".repeat(64 * 1024);
        let c = Condition::compile(r#"userId.indexOf("b")==-1"#).unwrap();
        let (r, per_eval) = run(&c, &user(&id));
        assert_eq!(r, Ok(true));
        assert!(per_eval < MAX_EVAL_STEPS && per_eval > BROADCAST_STEPS_PER_SESSION);
        let bc = BroadcastCondition::new(c);
        // n evaluations fit while n * per_eval <= BURST + n * PER_SESSION.
        let fits = BROADCAST_STEPS_BURST / (per_eval - BROADCAST_STEPS_PER_SESSION);
        for i in 0..fits {
            assert!(bc.matches(&user(&id)), "evaluation {i} of {fits}");
        }
        assert!(!bc.matches(&user(&id)));
        assert_eq!(
            bc.exceeded(),
            Some(BudgetExceeded::BroadcastSteps {
                per_session: BROADCAST_STEPS_PER_SESSION
            })
        );
    }

    #[test]
    fn a_broadcast_of_cheap_evaluations_never_trips() {
        let c = Condition::compile(
            r#"clientVersion.indexOf("android")!=-1 && clientVersion.replace(/[^\d]/g,"") > 20"#,
        )
        .unwrap();
        let bc = BroadcastCondition::new(c);
        let vars = SessionVars {
            client_version: Some("android-1.10.3"),
            ..SessionVars::default()
        };
        // Well past the burst: only the average matters.
        let n = 2 * BROADCAST_STEPS_BURST / BROADCAST_STEPS_PER_SESSION;
        assert!((0..n).all(|_| bc.matches(&vars)));
        assert_eq!(bc.exceeded(), None);
    }
}
