//! Rough timing of the broadcast condition evaluator on the documented examples.
//!
//! `cargo bench -p mpush --bench condition` (a plain binary: no bench framework needed).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use mpush::condition::{Condition, SessionVars};

/// The three conditions the MPush documentation gives as examples.
const EXAMPLES: [&str; 3] = [
    "userId % 100 < 20",
    r#"tags!=null && tags.indexOf("test")!=-1"#,
    r#"clientVersion.indexOf("android")!=-1 && clientVersion.replace(/[^\d]/g,"") > 20"#,
];

fn main() {
    let sessions = [
        SessionVars {
            user_id: Some("123"),
            tags: Some("vip,test"),
            client_version: Some("android 2.1.3"),
            os_name: Some("android"),
            os_version: Some("10"),
        },
        SessionVars {
            user_id: Some("user-7"),
            tags: None,
            client_version: Some("ios 9.0"),
            os_name: Some("ios"),
            os_version: Some("17"),
        },
    ];
    let n = 1_000_000;
    for src in EXAMPLES {
        let c = Condition::compile(src).unwrap();
        let start = Instant::now();
        let mut hits = 0usize;
        for i in 0..n {
            hits += usize::from(c.matches(black_box(&sessions[i % 2])));
        }
        let ns = start.elapsed().as_nanos() as f64 / n as f64;
        println!("{ns:8.1} ns/eval  hits={hits}  {src}");
    }
}
