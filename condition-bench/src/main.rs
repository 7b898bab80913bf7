//! Per-evaluation cost of broadcast conditions: the built-in evaluator (`mpush::condition`)
//! against QuickJS (`rquickjs`) sandboxed with a memory limit and an interrupt handler.
//!
//! `cargo run --release --manifest-path condition-bench/Cargo.toml`
//!
//! Both engines see the same 20,000 synthetic sessions (the size of one node's broadcast) and
//! compile each condition once per broadcast, as `push::broadcast` does. QuickJS gets what a
//! server would need: one runtime and context per broadcast (per thread), the condition wrapped
//! once into a function of the session variables and called per session.
//! Results are printed as ns per evaluation and as projected broadcast deliveries/s per core,
//! given the ~11 µs of server CPU one broadcast delivery costs without a condition.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mpush::condition::{Condition, SessionVars};
use rquickjs::{Context, Function, Runtime, Value};

/// Server CPU per broadcast delivery without a condition (README benchmark), in ns.
const DELIVERY_NS: f64 = 11_000.0;
const SESSIONS: usize = 20_000;
const ROUNDS: usize = 10;

const CONDITIONS: &[&str] = &[
    "userId % 100 < 20",
    r#"tags!=null && tags.indexOf("test")!=-1"#,
    r#"clientVersion.indexOf("android")!=-1 && clientVersion.replace(/[^\d]/g,"") > 20"#,
];

struct Session {
    user_id: String,
    tags: Option<String>,
    client_version: Option<String>,
    os_name: Option<String>,
    os_version: Option<String>,
}

fn sessions() -> Vec<Session> {
    (0..SESSIONS)
        .map(|i| Session {
            user_id: format!("{}", 100_000 + i),
            tags: (i % 3 != 0).then(|| if i % 2 == 0 { "vip,test" } else { "beta" }.to_owned()),
            client_version: Some(
                if i % 2 == 0 {
                    "android 2.1"
                } else {
                    "ios 9.9.1"
                }
                .to_owned(),
            ),
            os_name: Some(if i % 2 == 0 { "android" } else { "ios" }.to_owned()),
            os_version: Some("14".to_owned()),
        })
        .collect()
}

fn vars(s: &Session) -> SessionVars<'_> {
    SessionVars {
        user_id: Some(&s.user_id),
        tags: s.tags.as_deref(),
        client_version: s.client_version.as_deref(),
        os_name: s.os_name.as_deref(),
        os_version: s.os_version.as_deref(),
    }
}

/// Best of `ROUNDS` passes over all sessions, in ns per evaluation, and the match count.
fn best_of(mut pass: impl FnMut() -> usize) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut hits = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        hits = pass();
        best = best.min(t.elapsed().as_nanos() as f64 / SESSIONS as f64);
    }
    (best, hits)
}

fn builtin(src: &str, sessions: &[Session]) -> (f64, f64, usize) {
    let t = Instant::now();
    let n = 1000;
    for _ in 0..n {
        black_box(Condition::compile(black_box(src)).expect("compiles"));
    }
    let compile_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let c = Condition::compile(src).expect("compiles");
    let (eval_ns, hits) = best_of(|| {
        sessions
            .iter()
            .filter(|s| c.matches(black_box(&vars(s))))
            .count()
    });
    (compile_ns, eval_ns, hits)
}

/// A sandboxed QuickJS runtime as a server would configure it for one broadcast.
fn quickjs_runtime(stop: &Arc<AtomicBool>) -> Runtime {
    let rt = Runtime::new().expect("runtime");
    rt.set_memory_limit(16 << 20);
    rt.set_max_stack_size(256 << 10);
    let stop = Arc::clone(stop);
    rt.set_interrupt_handler(Some(Box::new(move || stop.load(Ordering::Relaxed))));
    rt
}

fn js_opt<'js>(ctx: &rquickjs::Ctx<'js>, v: Option<&str>) -> Value<'js> {
    match v {
        Some(s) => rquickjs::String::from_str(ctx.clone(), s)
            .expect("string")
            .into_value(),
        None => Value::new_null(ctx.clone()),
    }
}

fn wrap(src: &str) -> String {
    format!("(function(userId,tags,clientVersion,osName,osVersion){{return ({src});}})")
}

fn quickjs(src: &str, sessions: &[Session]) -> (f64, f64, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        let rt = quickjs_runtime(&stop);
        let ctx = Context::full(&rt).expect("context");
        ctx.with(|ctx| {
            let f: Function<'_> = ctx.eval(wrap(src)).expect("compiles");
            black_box(f);
        });
    }
    let compile_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let rt = quickjs_runtime(&stop);
    let ctx = Context::full(&rt).expect("context");
    let (eval_ns, hits) = ctx.with(|ctx| {
        let f: Function<'_> = ctx.eval(wrap(src)).expect("compiles");
        best_of(|| {
            sessions
                .iter()
                .filter(|s| {
                    let args = (
                        js_opt(&ctx, Some(&s.user_id)),
                        js_opt(&ctx, s.tags.as_deref()),
                        js_opt(&ctx, s.client_version.as_deref()),
                        js_opt(&ctx, s.os_name.as_deref()),
                        js_opt(&ctx, s.os_version.as_deref()),
                    );
                    matches!(
                        f.call::<_, Value<'_>>(args).map(|v| v.as_bool()),
                        Ok(Some(true))
                    )
                })
                .count()
        })
    });
    (compile_ns, eval_ns, hits)
}

/// The issue's 317-byte condition: `userId` and twelve chained `.replace(/./g,'$&$&$&$&')`.
fn bomb() -> String {
    let mut s = String::from("userId");
    for _ in 0..12 {
        s.push_str(".replace(/./g,'$&$&$&$&')");
    }
    s.push_str(".length > 0");
    s
}

fn quickjs_bomb(src: &str) -> (Duration, String) {
    let stop = Arc::new(AtomicBool::new(false));
    let rt = quickjs_runtime(&stop);
    let ctx = Context::full(&rt).expect("context");
    let t = Instant::now();
    let outcome = ctx.with(|ctx| {
        let f: Function<'_> = ctx.eval(wrap(src)).expect("compiles");
        let r: rquickjs::Result<Value<'_>> = f.call((js_opt(&ctx, Some("1234567890")),));
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        }
    });
    (t.elapsed(), outcome)
}

fn projected(eval_ns: f64) -> f64 {
    1e9 / (DELIVERY_NS + eval_ns)
}

fn main() {
    let sessions = sessions();
    println!(
        "{SESSIONS} sessions, best of {ROUNDS}; projected = deliveries/s/core at {DELIVERY_NS} ns/delivery + eval"
    );
    println!("no condition: {:.0} deliveries/s/core", projected(0.0));
    for src in CONDITIONS {
        let (bc, be, bh) = builtin(src, &sessions);
        let (qc, qe, qh) = quickjs(src, &sessions);
        assert_eq!(bh, qh, "engines disagree on {src}");
        println!("condition {src:?} ({bh} of {SESSIONS} match)");
        println!(
            "  builtin: compile {bc:>9.0} ns, eval {be:>7.1} ns -> {:.0} deliveries/s/core",
            projected(be)
        );
        println!(
            "  quickjs: runtime+context+compile {qc:>9.0} ns, eval {qe:>7.1} ns -> {:.0} deliveries/s/core",
            projected(qe)
        );
    }
    let b = bomb();
    let (took, outcome) = quickjs_bomb(&b);
    println!(
        "bomb ({} bytes), quickjs with a 16 MiB limit: {took:?}: {outcome}",
        b.len()
    );
    // The built-in evaluator under its budget: the bomb and other conditions built to use as
    // much of the budget as they can, on a session whose userId is 64 KiB (longer than any
    // bind packet allows), timed per evaluation.
    let long_id = "x".repeat(64 * 1024);
    let searches = vec![r#"userId.indexOf("y")==-1"#; 15].join(" && ");
    let worst: [(&str, String, &str); 5] = [
        ("bomb (317 bytes)", b.clone(), "1234567890"),
        ("bomb, long id", b.clone(), &long_id),
        (
            "/./g with $& on 64 KiB",
            "userId.replace(/./g,'$&').length > 0".to_owned(),
            &long_id,
        ),
        (
            "/x/g on 64 KiB",
            "userId.replace(/x/g,'y').length > 0".to_owned(),
            &long_id,
        ),
        ("15 failed indexOf on 64 KiB", searches, &long_id),
    ];
    for (name, src, id) in worst {
        let c = Condition::compile(&src).expect("compiles");
        let vars = SessionVars {
            user_id: Some(id),
            ..SessionVars::default()
        };
        let mut best = Duration::MAX;
        let mut outcome = Ok(false);
        for _ in 0..20 {
            let t = Instant::now();
            outcome = black_box(c.try_matches(black_box(&vars)));
            best = best.min(t.elapsed());
        }
        println!("builtin, {name}: {best:?} per evaluation: {outcome:?}");
    }
}
