//! Fuzz target: arbitrary bytes as a broadcast condition and the session it is evaluated
//! against. Compiling and evaluating may fail but never panic, and an evaluation never
//! produces a string beyond the budget's cap.
//!
//! Input: `source \0 userId \0 tags \0 clientVersion \0 osName \0 osVersion` (missing or
//! non-UTF-8 parts are null / lossily decoded).
//!
//! `cargo +nightly fuzz run condition -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpush::condition::{
    BroadcastCondition, Condition, EvalError, SessionVars, Value, MAX_STRING_LEN,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0).map(String::from_utf8_lossy);
    let Some(src) = parts.next() else { return };
    let Ok(condition) = Condition::compile(&src) else {
        return;
    };
    let fields: Vec<_> = parts.take(5).collect();
    let field = |i: usize| fields.get(i).map(|s| &**s);
    let vars = SessionVars {
        user_id: field(0),
        tags: field(1),
        client_version: field(2),
        os_name: field(3),
        os_version: field(4),
    };
    let longest_input = fields.iter().map(|f| f.len()).max().unwrap_or(0);
    let result = condition.eval(&vars);
    if let Ok(Value::Str(s)) = &result {
        assert!(s.len() <= MAX_STRING_LEN.max(longest_input), "{} bytes", s.len());
    }
    let matched = matches!(result, Ok(Value::Bool(true)));
    let budget_error = match result {
        Err(EvalError::Budget(e)) => Some(e),
        _ => None,
    };
    // The three ways to ask must agree.
    assert_eq!(condition.matches(&vars), matched);
    match condition.try_matches(&vars) {
        Ok(m) => assert!(m == matched && budget_error.is_none()),
        Err(e) => assert_eq!(Some(e), budget_error),
    }
    let broadcast = BroadcastCondition::new(condition);
    assert_eq!(broadcast.matches(&vars), matched);
    assert_eq!(broadcast.exceeded(), budget_error);
});
