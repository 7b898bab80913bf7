//! Tests of loading (formats, substitutions, key paths in errors), the unknown-key policy and
//! validation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

mod sections;
mod values;

use super::de::fmt_duration;
use super::*;

/// The brief's sample plus keys from MPush's own `mpush.conf` / `reference.conf`.
const FULL: &str = r#"
mp.log-level=debug
mp.log-dir=${mp.home}/logs
mp.core.min-heartbeat=10s
mp.core.max-packet-size=10k
mp.core.epoll-provider=netty
mp.net { connect-server-port=3000, gateway-server-port=3001, admin-server-port=3002 }
mp.net.write-buffer-water-mark.connect-server-high=64k
mp.net.write-buffer-water-mark.gateway-server-low=1m
mp.net.snd_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
mp.net.traffic-shaping.connect-server { enabled:false, check-interval:100ms, read-global-limit:100k }
mp.net.connect-server-register-attr { zone = "east" }
mp.net.public-host-mapping { "10.0.0.5":"1.2.3.4" }
mp.net.gateway-client-multicast="239.239.239.99"
mp.redis { cluster-model=single, nodes:["127.0.0.1:6379"], password="" }
mp.redis.config { maxTotal:8, maxIdle:4, jmxNamePrefix:pool }
mp.zk { server-address="127.0.0.1:2181", namespace=mpush, digest=mpush }
mp.zk.sessionTimeoutMs=7s
mp.zk.connectionTimeoutMs=2000
mp.zk.retry { baseSleepTimeMs=3s, maxRetries=3, maxSleepMs=5s }
mp.push.flow-control.global { limit=5000, max=0, duration=1s }
mp.push.flow-control.broadcast.limit=100
mp.spi { cache-manager=memory, thread-pool-factory:"com.mpush.tools.thread.pool.DefaultThreadPoolFactory" }
mp.security.private-key="AAEC"
mp.security.public-key="AAECAw=="
mp.http.proxy-enabled=true
mp.http.dns-mapping {"www.baidu.com":["127.0.0.1:8080"]}
mp.thread.pool.conn-work=0
mp.thread.pool.event-bus { min:1, max:16, queue-size:10000 }
mp.monitor.dump-stack=false
mp.monitor.dump-dir=${mp.home}/tmp
mp.snowflake { workerId=0 }
other.app.key = 1
"#;

type Mutation = Box<dyn FnOnce(&mut MPushConfig)>;

fn invalid_key(mutate: impl FnOnce(&mut MPushConfig)) -> (&'static str, String) {
    let mut c = MPushConfig::default();
    mutate(&mut c);
    match c.validate() {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Loading `text` fails validation of `key` with exactly `message`.
fn assert_invalid(text: &str, key: &str, message: &str) {
    match MPushConfig::from_hocon_str(text) {
        Err(ConfigError::Invalid { key: k, message: m }) => {
            assert_eq!((k, m.as_str()), (key, message), "{text}");
        }
        other => panic!("expected Invalid for {text:?}, got {other:?}"),
    }
}

fn parse_err(text: &str) -> String {
    match MPushConfig::from_hocon_str(text) {
        Err(ConfigError::Parse(m)) => m,
        other => panic!("expected Parse, got {other:?}"),
    }
}

/// Each `(text, message)`: loading `text` is a parse error with exactly `message`.
fn assert_parse_errors(cases: &[(&str, &str)]) {
    for &(text, want) in cases {
        assert_eq!(parse_err(text), want, "{text}");
    }
}

#[test]
fn defaults_match_spec_16() {
    let c = MPushConfig::default();
    c.validate().unwrap();
    assert_eq!(c.core.max_packet_size, 10240);
    assert_eq!(c.core.compress_threshold, 10240);
    assert_eq!(c.core.min_heartbeat, Duration::from_secs(180));
    assert_eq!(c.core.max_heartbeat, Duration::from_secs(180));
    assert_eq!(c.core.max_hb_timeout_times, 2);
    assert_eq!(c.core.session_expired_time, Duration::from_secs(86_400));
    assert_eq!(c.security.aes_key_length, 16);
    assert_eq!(c.security.public_key, DEFAULT_PUBLIC_KEY);
    assert_eq!(c.security.private_key, DEFAULT_PRIVATE_KEY);
    let n = &c.net;
    assert_eq!((n.local_ip.as_str(), n.public_ip.as_str()), ("", ""));
    assert_eq!(n.connect_server_bind_ip, "");
    assert_eq!(n.connect_server_register_ip, "");
    assert_eq!(n.connect_server_port, 3000);
    assert_eq!(
        serde_json::to_string(&n.connect_server_register_attr).unwrap(),
        r#"{"weight":1}"#
    );
    assert_eq!(n.gateway_server_bind_ip, "");
    assert_eq!(n.gateway_server_register_ip, "");
    assert_eq!(n.gateway_server_port, 3001);
    assert_eq!(n.gateway_server_net, "tcp");
    assert_eq!(n.gateway_client_num, 1);
    assert_eq!(n.gateway_client_port, 4000);
    assert_eq!(n.gateway_server_multicast, "239.239.239.88");
    assert_eq!(n.gateway_client_multicast, "239.239.239.99");
    assert_eq!(n.gateway_max_packet_size, 10240);
    assert_eq!(n.gateway_max_in_flight, 4096);
    assert_eq!(n.connect_server_max_connections, 100_000);
    assert_eq!(n.connect_server_ip_connect_rate, 0);
    assert_eq!(n.connect_server_max_pending_handshakes, 1024);
    assert_eq!(n.connect_server_park_idle, Duration::from_secs(60));
    assert_eq!(n.connect_server_park_poll, Duration::from_millis(10));
    assert_eq!(n.admin_server_port, 3002);
    assert_eq!((n.ws_server_port, n.ws_path.as_str()), (0, "/"));
    assert_eq!(n.connect_server_low_water_mark, 32 * 1024);
    assert_eq!(n.connect_server_high_water_mark, 64 * 1024);
    assert_eq!(n.gateway_server_low_water_mark, 10 * 1024 * 1024);
    assert_eq!(n.gateway_server_high_water_mark, 20 * 1024 * 1024);
    assert!(n.public_host_mapping.is_empty());
    assert_eq!(c.zk.server_address, "127.0.0.1:2181");
    assert_eq!(
        (c.zk.namespace.as_str(), c.zk.digest.as_str()),
        ("mpush", "mpush")
    );
    assert_eq!(c.zk.session_timeout, Duration::from_secs(5));
    assert_eq!(c.zk.connection_timeout, Duration::from_secs(5));
    assert_eq!(c.redis.cluster_model, "single");
    assert_eq!(c.redis.nodes, ["127.0.0.1:6379"]);
    assert_eq!(c.redis.password, "");
    let fc = |limit, max| FlowControlConfig {
        limit,
        max,
        duration: Duration::from_secs(1),
    };
    assert_eq!(c.push.global_flow_control, fc(5000, 0));
    assert_eq!(c.push.broadcast_flow_control, fc(3000, 100_000));
    assert_eq!(c.push.max_ack_timeout, Duration::from_secs(60));
    assert_eq!(c.spi, SpiConfig::default());
    assert_eq!(c.spi.cache_manager, "");
}

#[test]
fn empty_input_is_defaults() {
    assert_eq!(
        MPushConfig::from_hocon_str("").unwrap(),
        MPushConfig::default()
    );
    assert_eq!(
        MPushConfig::from_hocon_str("{}").unwrap(),
        MPushConfig::default()
    );
}

#[test]
fn full_sample_lands_in_the_right_fields() {
    let c = MPushConfig::from_hocon_str(FULL).unwrap();
    let mut want = MPushConfig::default();
    want.core.min_heartbeat = Duration::from_secs(10);
    want.net.gateway_server_low_water_mark = 1024 * 1024;
    want.net
        .connect_server_register_attr
        .insert("zone".into(), serde_json::Value::from("east"));
    want.net
        .public_host_mapping
        .insert("10.0.0.5".into(), "1.2.3.4".into());
    want.zk.session_timeout = Duration::from_secs(7);
    want.zk.connection_timeout = Duration::from_millis(2000);
    want.push.broadcast_flow_control.limit = 100;
    want.spi.cache_manager = "memory".into();
    want.security.private_key = "AAEC".into();
    want.security.public_key = "AAECAw==".into();
    want.http.proxy_enabled = true;
    want.http
        .dns_mapping
        .insert("www.baidu.com".into(), vec!["127.0.0.1:8080".into()]);
    // The sample's tuning keys repeat MPush's defaults.
    want.accepted_without_effect = vec![];
    assert_eq!(c, want);
}

#[test]
fn json_and_units() {
    let c = MPushConfig::from_hocon_str(
        r#"{"mp": {"core": {"max-packet-size": 65536, "compress-threshold": "1m",
            "min-heartbeat": 500000, "max-heartbeat": "1h", "session-expired-time": "2d"},
            "net": {"gateway-max-packet-size": "64K", "ws-path": "/ws",
                "gateway-max-in-flight": 100, "connect-server-max-connections": 7,
                "connect-server-ip-connect-rate": 20,
                "connect-server-max-pending-handshakes": 9,
                "connect-server-park-idle": "5m", "connect-server-park-poll": "20ms"},
            "push": {"max-ack-timeout": "2m"}}}"#,
    )
    .unwrap();
    assert_eq!(c.net.gateway_max_in_flight, 100);
    assert_eq!(c.net.connect_server_max_connections, 7);
    assert_eq!(c.net.connect_server_ip_connect_rate, 20);
    assert_eq!(c.net.connect_server_max_pending_handshakes, 9);
    assert_eq!(c.net.connect_server_park_idle, Duration::from_secs(300));
    assert_eq!(c.net.connect_server_park_poll, Duration::from_millis(20));
    assert_eq!(c.push.max_ack_timeout, Duration::from_secs(120));
    assert_eq!(c.core.max_packet_size, 65536);
    assert_eq!(c.core.compress_threshold, 1024 * 1024);
    assert_eq!(c.core.min_heartbeat, Duration::from_millis(500_000));
    assert_eq!(c.core.max_heartbeat, Duration::from_secs(3600));
    assert_eq!(c.core.session_expired_time, Duration::from_secs(2 * 86_400));
    assert_eq!(c.net.gateway_max_packet_size, 64 * 1024);
    assert_eq!(c.net.ws_path, "/ws");
    // `3m` is minutes as a duration, MiB as a size.
    let c = MPushConfig::from_hocon_str(
        "mp.core { max-heartbeat=3m, max-packet-size=3m }\nmp.core.min-heartbeat=500ms\nmp.core.min-heartbeat=${mp.core.max-heartbeat}",
    )
    .unwrap();
    assert_eq!(c.core.max_heartbeat, Duration::from_secs(180));
    assert_eq!(c.core.min_heartbeat, Duration::from_secs(180));
    assert_eq!(c.core.max_packet_size, 3 * 1024 * 1024);
}

#[test]
fn redis_nodes_forms() {
    let c = MPushConfig::from_hocon_str(
        r#"mp.redis { cluster-model=cluster, nodes:["10.0.0.1:6380", "10.0.0.2:6381:secret",
            {host:"10.0.0.3", port:6382}, {host:"10.0.0.4", port:6383, password:pw}] }"#,
    )
    .unwrap();
    assert_eq!(c.redis.cluster_model, "cluster");
    assert_eq!(
        c.redis.nodes,
        [
            "10.0.0.1:6380",
            "10.0.0.2:6381:secret",
            "10.0.0.3:6382",
            "10.0.0.4:6383:pw"
        ]
    );
    let m = parse_err("mp.redis.nodes = \"127.0.0.1:6379\"");
    assert!(m.contains("mp.redis.nodes: expected a list"), "{m}");
    let m = parse_err("mp.redis.nodes = [[\"127.0.0.1:6379\"]]");
    assert!(m.contains("mp.redis.nodes"), "{m}");
}

#[test]
fn substitutions() {
    let dir = std::env::current_dir().unwrap().display().to_string();
    let c = MPushConfig::from_hocon_str(
        "mp.zk.namespace=${user.dir}\nmp.zk.digest=${mp.home}x\nmp.net.connect-server-register-ip=${mp.net.public-ip}",
    )
    .unwrap();
    assert_eq!(c.zk.namespace, dir);
    assert_eq!(c.zk.digest, format!("{dir}x"));
    assert_eq!(c.net.connect_server_register_ip, "");
    // The file wins over the built-in fallbacks.
    let c = MPushConfig::from_hocon_str("mp.home=/opt/mp\nmp.zk.namespace=${mp.home}/ns").unwrap();
    assert_eq!(c.zk.namespace, "/opt/mp/ns");
    // The process environment (PATH is set in any test environment).
    let path = std::env::var("PATH").unwrap();
    let c = MPushConfig::from_hocon_str("mp.zk.digest=${?PATH}").unwrap();
    assert_eq!(c.zk.digest, path);
    let m = parse_err("mp.zk.digest=${NO_SUCH_VARIABLE_FOR_MPUSH_TEST}");
    assert!(m.contains("NO_SUCH_VARIABLE_FOR_MPUSH_TEST"), "{m}");
}

#[test]
fn unknown_keys_in_implemented_sections_are_errors() {
    let m = parse_err("mp.core.max-pakcet-size=10k");
    assert!(
        m.contains("unknown key mp.core.max-pakcet-size (did you mean mp.core.max-packet-size?)"),
        "{m}"
    );
    let m = parse_err("mp.zk.session-timeout-ms=5s");
    assert!(m.contains("did you mean mp.zk.sessionTimeoutMs?"), "{m}");
    let m = parse_err("mp.net.write-buffer-water-mark.connect-low=1k");
    assert!(
        m.contains("unknown key mp.net.write-buffer-water-mark.connect-low"),
        "{m}"
    );
    let m = parse_err("mp.push.flow-control.global.limt=1");
    assert!(m.contains("mp.push.flow-control.global.limit?"), "{m}");
    let m = parse_err("mp.spi.totally-unrelated-thing=x");
    assert!(
        m.ends_with("unknown key mp.spi.totally-unrelated-thing"),
        "{m}"
    );
    // Unknown top-level mp keys and keys outside mp are only warned about / ignored.
    MPushConfig::from_hocon_str("mp.whatever=1\nfoo.bar=2").unwrap();
}

#[test]
fn wrong_types_are_parse_errors_naming_the_key() {
    let m = parse_err("mp.core.min-heartbeat=fast");
    assert!(
        m.starts_with("mp.core.min-heartbeat: expected a duration") && m.ends_with("got \"fast\""),
        "{m}"
    );
    let m = parse_err("mp.core.max-packet-size=10 KB");
    assert!(
        m.starts_with("mp.core.max-packet-size: expected a size"),
        "{m}"
    );
    let m = parse_err("mp.net.connect-server-port=abc");
    assert!(
        m.contains("mp.net.connect-server-port: expected an integer"),
        "{m}"
    );
    let m = parse_err("mp.net.ws-path { a = 1 }");
    assert!(
        m.contains("mp.net.ws-path: expected a string, got an object"),
        "{m}"
    );
    let m = parse_err("mp.core = 5");
    assert!(m.contains("mp.core: expected an object, got 5"), "{m}");
    let m = parse_err("mp = 5");
    assert!(m.contains("mp: expected an object"), "{m}");
    assert_invalid(
        "mp.net.connect-server-port=70000",
        "mp.net.connect-server-port",
        "must be 0..=65535, got 70000",
    );
}

#[test]
fn bad_syntax_is_parse_error_with_parser_message() {
    let m = parse_err("mp { core { max-packet-size = ");
    assert!(m.contains("ParseError at 1:"), "{m}");
    let m = parse_err("mp.redis { nodes:[] s//[\"127.0.0.1:6379\"]\n }");
    assert!(m.contains("stray `s`"), "{m}");
}

#[test]
fn missing_file_is_io_error_with_path() {
    let path = "/nonexistent/dir/mpush.conf";
    match MPushConfig::from_file(path) {
        Err(e @ ConfigError::Io { .. }) => {
            assert!(e.to_string().contains(path), "{e}");
            let ConfigError::Io { path: p, source } = e else {
                unreachable!()
            };
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn from_file_reports_path_in_parse_errors_and_resolves_includes() {
    let dir = std::env::temp_dir().join(format!("mpush-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("base.conf"), "mp.net.connect-server-port=4000\n").unwrap();
    let main = dir.join("main.conf");
    std::fs::write(
        &main,
        "include \"base.conf\"\nmp.net.gateway-server-port=4001\n",
    )
    .unwrap();
    let c = MPushConfig::from_file(&main).unwrap();
    assert_eq!(c.net.connect_server_port, 4000);
    assert_eq!(c.net.gateway_server_port, 4001);
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "mp {").unwrap();
    match MPushConfig::from_file(&bad) {
        Err(ConfigError::Parse(m)) => {
            assert!(m.starts_with(&bad.display().to_string()), "{m}");
            assert!(m.contains("ParseError"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/mpush.conf");
    let c = MPushConfig::from_file(path).unwrap();
    assert_eq!(c.spi.cache_manager, "memory");
    assert_eq!(c.spi.mq_client, "memory");
    assert_eq!(c.spi.service_registry, "memory");
    assert_eq!(
        (
            c.net.connect_server_port,
            c.net.gateway_server_port,
            c.net.admin_server_port
        ),
        (3000, 3001, 3002)
    );
    assert_eq!(c.core.min_heartbeat, Duration::from_secs(10));
    assert_eq!(c.core.max_heartbeat, Duration::from_secs(180));
    assert!(c.http.proxy_enabled);
}

/// MPush's `reference.conf` (key structure of the last release, comments dropped, the stray
/// `s` after `nodes:[]` removed) loads, with `nodes` filled in as a user would.
#[test]
fn mpush_reference_conf_loads() {
    let text = r#"
mp {
home=${user.dir}
log-level=warn
log-dir=${mp.home}/logs
log-conf-path=${mp.home}/conf/logback.xml
core {
    max-packet-size=10k
    compress-threshold=10k
    min-heartbeat=3m
    max-heartbeat=3m
    max-hb-timeout-times=2
    session-expired-time=1d
    epoll-provider=netty
}
security {
    private-key="MIIBNgIBADANBgkqhkiG9w0BAQEFAASCASAwggEcAgEAAoGBAKCE8JYKhsbydMPbiO7BJVq1pbuJWJHFxOR7L8Hv3ZVkSG4eNC8DdwAmDHYu/wadfw0ihKFm2gKDcLHp5yz5UQ8PZ8FyDYvgkrvGV0ak4nc40QDJWws621dm01e/INlGKOIStAAsxOityCLv0zm5Vf3+My/YaBvZcB5mGUsPbx8fAgEAAoGAAy0+WanRqwRHXUzt89OsupPXuNNqBlCEqgTqGAt4Nimq6Ur9u2R1KXKXUotxjp71Ubw6JbuUWvJg+5Rmd9RjT0HOUEQF3rvzEepKtaraPhV5ejEIrB+nJWNfGye4yzLdfEXJBGUQzrG+wNe13izfRNXI4dN/6Q5npzqaqv0E1CkCAQACAQACAQACAQACAQA="
    public-key="MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCghPCWCobG8nTD24juwSVataW7iViRxcTkey/B792VZEhuHjQvA3cAJgx2Lv8GnX8NIoShZtoCg3Cx6ecs+VEPD2fBcg2L4JK7xldGpOJ3ONEAyVsLOttXZtNXvyDZRijiErQALMTorcgi79M5uVX9/jMv2Ggb2XAeZhlLD28fHwIDAQAB"
    aes-key-length=16
}
net {
    local-ip=""
    public-ip=""
    connect-server-bind-ip=""
    connect-server-register-ip=${mp.net.public-ip}
    connect-server-port=3000
    connect-server-register-attr { weight:1 }
    gateway-server-bind-ip=""
    gateway-server-register-ip=${mp.net.local-ip}
    gateway-server-port=3001
    gateway-server-net=tcp
    gateway-client-port=4000
    gateway-server-multicast="239.239.239.88"
    gateway-client-multicast="239.239.239.99"
    gateway-client-num=1
    admin-server-port=3002
    ws-server-port=0
    ws-path="/"
    public-host-mapping { //"10.0.10.156":"111.1.32.137"
    }
    snd_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
    rcv_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
    write-buffer-water-mark {
        connect-server-low=32k
        connect-server-high=64k
        gateway-server-low=10m
        gateway-server-high=20m
    }
    traffic-shaping {
        gateway-client { enabled:false, check-interval:100ms, write-global-limit:30k, read-global-limit:0, write-channel-limit:3k, read-channel-limit:0 }
        gateway-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:30k, write-channel-limit:0, read-channel-limit:3k }
        connect-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:100k, write-channel-limit:3k, read-channel-limit:3k }
    }
}
zk {
    server-address="127.0.0.1:2181"
    namespace=mpush
    digest=mpush
    watch-path=/
    retry { baseSleepTimeMs=3s, maxRetries=3, maxSleepMs=5s }
    connectionTimeoutMs=5s
    sessionTimeoutMs=5s
}
redis {
    cluster-model=single //single,cluster,sentinel
    sentinel-master:""
    nodes:[] //["127.0.0.1:6379"]
    password=""
    config {
        maxTotal:8, maxIdle:4, minIdle:1, lifo:true, fairness:false, maxWaitMillis:5000,
        minEvictableIdleTimeMillis:300000, softMinEvictableIdleTimeMillis:1800000,
        numTestsPerEvictionRun:3, testOnCreate:false, testOnBorrow:false, testOnReturn:false,
        testWhileIdle:false, timeBetweenEvictionRunsMillis:60000, blockWhenExhausted:true,
        jmxEnabled:false, jmxNamePrefix:pool, jmxNameBase:pool
    }
}
http {
    proxy-enabled=false
    max-conn-per-host=5
    default-read-timeout=10s
    max-content-length=5m
    dns-mapping { //"mpush.com":["127.0.0.1:8080", "127.0.0.1:8081"]
    }
}
thread {
    pool {
        conn-work:0
        gateway-server-work:0
        http-work:0
        ack-timer:1
        push-task:0
        gateway-client-work:0
        push-client:2
        event-bus { min:1, max:16, queue-size:10000 }
        mq { min:1, max:4, queue-size:10000 }
    }
}
push {
   flow-control {
        global:{ limit:5000, max:0, duration:1s }
        broadcast:{ limit:3000, max:100000, duration:1s }
   }
}
monitor {
    dump-dir=${mp.home}/tmp
    dump-stack=false
    dump-period=1m
    print-log=true
    profile-enabled=false
    profile-slowly-duration=10ms
}
spi {
    thread-pool-factory:"com.mpush.tools.thread.pool.DefaultThreadPoolFactory"
    dns-mapping-manager:"com.mpush.common.net.HttpProxyDnsMappingManager"
}
}
"#;
    // nodes:[] with backends that may be Redis is rejected...
    match MPushConfig::from_hocon_str(text) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "mp.redis.nodes"),
        other => panic!("{other:?}"),
    }
    // ...and accepted once nodes are given (what every real mpush.conf does).
    let c = MPushConfig::from_hocon_str(&format!("{text}\nmp.redis.nodes=[\"127.0.0.1:6379\"]"))
        .unwrap();
    assert_eq!(c, MPushConfig::default());
    // ...or when no Redis backend can be selected.
    MPushConfig::from_hocon_str(&format!(
        "{text}\nmp.spi {{ cache-manager=memory, mq-client=memory }}"
    ))
    .unwrap();
}

#[test]
fn validation_errors() {
    let one_sec = Duration::from_secs(1);
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (
            Box::new(|c| c.security.aes_key_length = 32),
            "mp.security.aes-key-length",
            "must be 16",
        ),
        (
            Box::new(|c| c.core.max_packet_size = 1023),
            "mp.core.max-packet-size",
            "between 1k and 1g",
        ),
        (
            Box::new(|c| c.core.max_packet_size = (1 << 30) + 1),
            "mp.core.max-packet-size",
            "between 1k and 1g",
        ),
        (
            Box::new(|c| c.core.compress_threshold = 0),
            "mp.core.compress-threshold",
            "greater than 0",
        ),
        (
            Box::new(|c| {
                c.core.min_heartbeat = Duration::from_secs(10);
                c.core.max_heartbeat = Duration::from_secs(5);
            }),
            "mp.core.min-heartbeat",
            "must not exceed mp.core.max-heartbeat (10s > 5s)",
        ),
        (
            Box::new(|c| c.core.min_heartbeat = Duration::from_millis(50)),
            "mp.core.min-heartbeat",
            "at least 100ms, got 50ms",
        ),
        (
            Box::new(|c| c.core.max_heartbeat = Duration::from_secs(30 * 86_400)),
            "mp.core.max-heartbeat",
            "at most 2147483647ms",
        ),
        (
            Box::new(|c| c.core.session_expired_time = Duration::ZERO),
            "mp.core.session-expired-time",
            "at least 1s",
        ),
        (
            Box::new(|c| c.core.session_expired_time = Duration::from_secs(u64::MAX)),
            "mp.core.session-expired-time",
            "at most 2147483647s",
        ),
        (
            Box::new(|c| c.net.connect_server_low_water_mark = 128 * 1024),
            "mp.net.write-buffer-water-mark.connect-server-low",
            "must not exceed mp.net.write-buffer-water-mark.connect-server-high (131072 > 65536 bytes)",
        ),
        (
            Box::new(|c| c.net.gateway_server_high_water_mark = 1),
            "mp.net.write-buffer-water-mark.gateway-server-low",
            "must not exceed mp.net.write-buffer-water-mark.gateway-server-high",
        ),
        (
            Box::new(|c| c.net.gateway_server_net = "sctp".into()),
            "mp.net.gateway-server-net",
            "not supported by mpush-rs",
        ),
        (
            Box::new(|c| c.net.gateway_server_net = "quic".into()),
            "mp.net.gateway-server-net",
            "must be tcp or udp, got \"quic\"",
        ),
        (
            Box::new(|c| c.net.gateway_client_num = 0),
            "mp.net.gateway-client-num",
            "at least 1",
        ),
        (
            Box::new(|c| c.net.gateway_max_packet_size = 10),
            "mp.net.gateway-max-packet-size",
            "between 1k and 1g",
        ),
        (
            Box::new(|c| c.net.connect_server_max_connections = 0),
            "mp.net.connect-server-max-connections",
            "must be 1..=10000000, got 0",
        ),
        (
            Box::new(|c| c.net.connect_server_max_pending_handshakes = 0),
            "mp.net.connect-server-max-pending-handshakes",
            "must be 1..=1000000, got 0",
        ),
        (
            Box::new(|c| c.net.connect_server_park_poll = Duration::ZERO),
            "mp.net.connect-server-park-poll",
            "between 1ms and 1s",
        ),
        (
            Box::new(|c| c.net.gateway_max_in_flight = 0),
            "mp.net.gateway-max-in-flight",
            "must be 1..=1000000, got 0",
        ),
        (
            Box::new(|c| c.push.max_ack_timeout = Duration::ZERO),
            "mp.push.max-ack-timeout",
            "greater than 0",
        ),
        (
            Box::new(|c| c.push.max_ack_timeout = Duration::from_secs(30 * 86_400)),
            "mp.push.max-ack-timeout",
            "at most",
        ),
        (
            Box::new(|c| c.zk.session_timeout = Duration::ZERO),
            "mp.zk.sessionTimeoutMs",
            "greater than 0",
        ),
        (
            Box::new(|c| c.push.global_flow_control.limit = 0),
            "mp.push.flow-control.global.limit",
            "at least 1",
        ),
        (
            Box::new(|c| c.push.broadcast_flow_control.duration = Duration::ZERO),
            "mp.push.flow-control.broadcast.duration",
            "greater than 0",
        ),
        (
            Box::new(|c| c.redis.cluster_model = "sentinel".into()),
            "mp.redis.cluster-model",
            "sentinel is not supported by mpush-rs",
        ),
        (
            Box::new(|c| c.redis.cluster_model = "ring".into()),
            "mp.redis.cluster-model",
            "must be single or cluster",
        ),
        (
            Box::new(|c| c.redis.nodes.clear()),
            "mp.redis.nodes",
            "must not be empty",
        ),
        (
            Box::new(|c| c.redis.nodes = vec!["localhost".into()]),
            "mp.redis.nodes",
            "entry \"localhost\" is not \"ip:port\"",
        ),
        (
            Box::new(|c| c.redis.nodes = vec!["h:0".into()]),
            "mp.redis.nodes",
            "is not \"ip:port\"",
        ),
        (
            Box::new(|c| c.security.private_key = "not base64!".into()),
            "mp.security.private-key",
            "not valid base64",
        ),
        (
            Box::new(|c| c.security.public_key = String::new()),
            "mp.security.public-key",
            "must not be empty",
        ),
    ];
    for (mutate, want_key, want_msg) in cases {
        let (key, message) = invalid_key(mutate);
        assert_eq!(key, want_key, "{message}");
        assert!(message.contains(want_msg), "{key}: {message}");
    }
    // Display format.
    let e =
        MPushConfig::from_hocon_str("mp.core { min-heartbeat=10s, max-heartbeat=5s }").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid config value mp.core.min-heartbeat: must not exceed mp.core.max-heartbeat (10s > 5s)"
    );
    // Boundaries that are fine.
    let mut c = MPushConfig::default();
    c.core.min_heartbeat = one_sec;
    c.core.max_packet_size = 1024;
    c.net.gateway_server_net = "udp".into();
    c.redis.nodes.clear();
    c.spi.cache_manager = "memory".into();
    c.spi.mq_client = "memory".into();
    c.redis.nodes = vec!["h:1:pass:with:colons".into()];
    c.validate().unwrap();
}

#[test]
fn fmt_duration_units() {
    assert_eq!(fmt_duration(Duration::from_secs(180)), "3m");
    assert_eq!(fmt_duration(Duration::from_secs(86_400)), "1d");
    assert_eq!(fmt_duration(Duration::from_secs(7200)), "2h");
    assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(fmt_duration(Duration::ZERO), "0s");
}

#[test]
fn tuning_keys_without_effect_are_listed_once_each() {
    let c = MPushConfig::from_hocon_str(
        r#"mp.net.snd_buf.connect-server = 64k
           mp.net.rcv_buf { gateway-server = 1m }
           mp.net.traffic-shaping.connect-server.enabled = true
           mp.thread.pool.push-center = 4
           mp.thread.pool.push-client = 2
           mp.http.proxy-enabled = true
           mp.http.dns-mapping {}
           mp.net.write-buffer-water-mark.gateway-server-high = 30m
           mp.net.write-buffer-water-mark.connect-server-high = 30m
           mp.net.admin-server-port = 3002
           mp.log-level = debug"#,
    )
    .unwrap();
    assert_eq!(
        c.accepted_without_effect,
        // push-client = 2 is MPush's default: not reported; mp.http is read by HttpConfig.
        [
            "mp.net.snd_buf.connect-server",
            "mp.net.rcv_buf.gateway-server",
            "mp.net.traffic-shaping.connect-server.enabled",
            "mp.thread.pool.push-center",
        ]
    );
    assert!(
        c.http.proxy_enabled,
        "mp.http is read, not accepted without effect"
    );
    let notes = c.settings_without_effect();
    assert_eq!(notes.len(), 5, "{notes:?}");
    // Used (connect-server water mark, admin port since the console exists): no note.
    assert!(
        notes[4].starts_with("mp.net.write-buffer-water-mark.gateway-server-high is set"),
        "{notes:?}"
    );
    assert!(MPushConfig::default().settings_without_effect().is_empty());
    let mut c = MPushConfig::default();
    c.net.admin_server_port = 9999;
    assert!(c.settings_without_effect().is_empty());
    c.net.gateway_server_low_water_mark = 1;
    assert_eq!(c.settings_without_effect().len(), 1);
}
