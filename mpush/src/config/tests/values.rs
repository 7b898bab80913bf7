//! Value readers (durations, sizes, integers), key paths in errors, and the unknown/unused key policy.

use super::*;

/// `key = text` loads, and `read` gives `want`, for each `(text, want)`.
fn assert_reads<T: PartialEq + std::fmt::Debug>(
    key: &str,
    read: impl Fn(&MPushConfig) -> T,
    cases: &[(&str, T)],
) {
    for (text, want) in cases {
        let c = MPushConfig::from_hocon_str(&format!("{key} = {text}"))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&read(&c), want, "{text}");
    }
}

/// `key = bad` is a parse error whose message starts with `key: expected`, for each `bad`.
fn assert_rejected(key: &str, bad: &[&str], expected: &str) {
    for bad in bad {
        let m = parse_err(&format!("{key} = {bad}"));
        assert!(m.starts_with(&format!("{key}: {expected}")), "{bad}: {m}");
    }
}

#[test]
fn durations_in_every_accepted_form() {
    let cases: [(&str, Duration); 13] = [
        ("500ms", Duration::from_millis(500)),
        ("500 ms", Duration::from_millis(500)),
        ("250 milliseconds", Duration::from_millis(250)),
        ("10s", Duration::from_secs(10)),
        ("10 seconds", Duration::from_secs(10)),
        ("3m", Duration::from_secs(180)),
        ("2 minutes", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("2d", Duration::from_secs(2 * 86_400)),
        ("1.5s", Duration::from_millis(1500)),
        // A plain number is milliseconds, written as a number or (from ${?VAR}) a string.
        ("2000", Duration::from_millis(2000)),
        ("\"2000\"", Duration::from_millis(2000)),
        ("1e3", Duration::from_millis(1000)),
    ];
    assert_reads("mp.zk.sessionTimeoutMs", |c| c.zk.session_timeout, &cases);
    assert_rejected(
        "mp.zk.sessionTimeoutMs",
        &["fast", "10 parsecs", "-5s", "[1]"],
        "expected a duration such as 500ms",
    );
}

#[test]
fn sizes_in_every_accepted_form() {
    let cases: [(&str, usize); 11] = [
        ("10k", 10 * 1024),
        ("10K", 10 * 1024),
        ("3m", 3 * 1024 * 1024),
        ("1g", 1 << 30),
        ("64KiB", 64 * 1024),
        ("2kB", 2000),
        ("512 MB", 512_000_000),
        ("1.5k", 1536),
        // A plain number is bytes, as a number or (from ${?VAR}) a string.
        ("65536", 65536),
        ("\"65536\"", 65536),
        ("2e3", 2000),
    ];
    assert_reads(
        "mp.core.max-packet-size",
        |c| c.core.max_packet_size,
        &cases,
    );
    assert_rejected(
        "mp.core.max-packet-size",
        &["10 KB", "big", "-1k", "{ a = 1 }"],
        "expected a size such as 10k",
    );
}

#[test]
fn integers_from_numbers_and_substituted_strings() {
    let c = MPushConfig::from_hocon_str(
        "mp.net { connect-server-port = \"4000\", gateway-server-port = 4.001e3 }\n\
         mp.push.flow-control.global.max = 7",
    )
    .unwrap();
    assert_eq!(c.net.connect_server_port, 4000);
    assert_eq!(c.net.gateway_server_port, 4001);
    assert_eq!(c.push.global_flow_control.max, 7);
    assert_rejected(
        "mp.core.max-hb-timeout-times",
        &["1.5", "true", "\"x1\""],
        "expected an integer, got",
    );
    assert_invalid(
        "mp.core.max-hb-timeout-times = -1",
        "mp.core.max-hb-timeout-times",
        "must be 0..=4294967295, got -1",
    );
}

#[test]
fn misspelt_section_keys_get_did_you_mean() {
    let cases = [
        (
            "mp.net.conect-server-port = 1",
            "unknown key mp.net.conect-server-port (did you mean mp.net.connect-server-port?)",
        ),
        (
            "mp.net.write-buffer-water-mark.connect-server-hihg = 1k",
            "unknown key mp.net.write-buffer-water-mark.connect-server-hihg (did you mean \
             mp.net.write-buffer-water-mark.connect-server-high?)",
        ),
        (
            "mp.push.max-ack-timout = 5s",
            "unknown key mp.push.max-ack-timout (did you mean mp.push.max-ack-timeout?)",
        ),
        (
            "mp.push.flow-control.broadcast.durations = 1s",
            "unknown key mp.push.flow-control.broadcast.durations (did you mean \
             mp.push.flow-control.broadcast.duration?)",
        ),
        (
            "mp.redis.pasword = x",
            "unknown key mp.redis.pasword (did you mean mp.redis.password?)",
        ),
        (
            "mp.security.public_key = x",
            "unknown key mp.security.public_key (did you mean mp.security.public-key?)",
        ),
        // A misspelt MPush-only key is still suggested, so it is not taken for a new one.
        (
            "mp.zk.watch-pth = /",
            "unknown key mp.zk.watch-pth (did you mean mp.zk.watch-path?)",
        ),
        (
            "mp.push.flow-control.regional { limit = 1 }",
            "unknown key mp.push.flow-control.regional (did you mean mp.push.flow-control.global?)",
        ),
        // Nothing close: no hint.
        (
            "mp.push.flow-control.per-user-quota { limit = 1 }",
            "unknown key mp.push.flow-control.per-user-quota",
        ),
    ];
    assert_parse_errors(&cases);
}

#[test]
fn wrong_types_report_the_full_key_path() {
    let cases = [
        (
            "mp.push.flow-control.global.limit = lots",
            "mp.push.flow-control.global.limit: expected an integer, got \"lots\"",
        ),
        (
            "mp.net.write-buffer-water-mark.gateway-server-low = [1]",
            "mp.net.write-buffer-water-mark.gateway-server-low: expected a size such as 10k, \
             10m or a plain number of bytes, got a list",
        ),
        (
            "mp.redis.nodes = [\"h:1\", [\"h:2\"]]",
            "mp.redis.nodes[1]: expected a list of \"ip:port\" strings, got a list",
        ),
        (
            "mp.net.public-host-mapping { \"10.0.0.1\" { a = 1 } }",
            "mp.net.public-host-mapping.10.0.0.1: expected a string, got an object",
        ),
        (
            "mp.net.public-host-mapping = 5",
            "mp.net.public-host-mapping: expected an object of \"local-ip\":\"public-ip\", got 5",
        ),
        (
            "mp.net.connect-server-register-attr = [1]",
            "mp.net.connect-server-register-attr: expected an object, got a list",
        ),
        (
            "mp.push.flow-control = 1",
            "mp.push.flow-control: expected an object, got 1",
        ),
        (
            "mp.push.flow-control.global = 1",
            "mp.push.flow-control.global: expected an object, got 1",
        ),
        (
            "mp.net.write-buffer-water-mark = \"x\"",
            "mp.net.write-buffer-water-mark: expected an object, got \"x\"",
        ),
        (
            "mp.spi.cache-manager = null",
            "mp.spi.cache-manager: expected a string, got null",
        ),
    ];
    assert_parse_errors(&cases);
}

#[test]
fn mpush_known_unused_keys_are_accepted_and_tuning_ones_reported() {
    let c = MPushConfig::from_hocon_str(
        "mp.net.rcv_buf.connect-server = 64k\n\
         mp.net.alloc-server-protocol = http\n\
         mp.zk.retry { maxRetries = 9 }\n\
         mp.redis.config.maxTotal = 64\n\
         mp.core.epoll-provider = nio\n\
         mp.security.ras-key-length = 2048\n\
         mp.spi.dns-mapping-manager = x\n\
         mp.monitor.dump-stack = true",
    )
    .unwrap();
    // Only the tuning key that differs from MPush's default is worth a start-up warning.
    assert_eq!(c.accepted_without_effect, ["mp.net.rcv_buf.connect-server"]);
    assert_eq!(
        c.settings_without_effect(),
        ["mp.net.rcv_buf.connect-server is accepted for MPush compatibility but has no effect"]
    );
    // Its MPush default is not reported.
    let c = MPushConfig::from_hocon_str("mp.net.rcv_buf.connect-server = 32k").unwrap();
    assert!(c.settings_without_effect().is_empty());
}

#[test]
fn key_helpers() {
    assert_eq!(
        de::field_names::<SpiConfig>(),
        [
            "cache-manager",
            "mq-client",
            "service-registry",
            "dns-mapping-manager"
        ]
    );
    assert!(de::field_names::<NetConfig>().contains(&"write-buffer-water-mark.connect-server-low"));
    assert!(de::field_names::<ZkConfig>().contains(&"sessionTimeoutMs"));
    assert_eq!(
        keys::static_key("mp.push.flow-control.broadcast.max"),
        Some("mp.push.flow-control.broadcast.max")
    );
    assert_eq!(keys::static_key("mp.net.no-such-key"), None);
    let known = ["max-packet-size", "min-heartbeat"];
    assert_eq!(
        de::suggest("max_Packet_Sise", known),
        Some("max-packet-size")
    );
    assert_eq!(de::suggest("entirely-different", known), None);
}
