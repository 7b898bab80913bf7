//! The sections added with the WebSocket liveness, the HTTP proxy and TLS.

use super::*;

#[test]
fn websocket_bounds() {
    let c =
        MPushConfig::from_hocon_str("mp.net { ws-max-frame-size = 1m, ws-handshake-timeout = 2s }")
            .unwrap();
    assert_eq!(c.net.ws_max_frame_size, 1 << 20);
    assert_eq!(c.net.ws_handshake_timeout, Duration::from_secs(2));
    let d = MPushConfig::default().net;
    assert_eq!(
        (d.ws_max_frame_size, d.ws_handshake_timeout),
        (64 * 1024, Duration::from_secs(10))
    );
    for (mutate, key, msg) in [
        (
            Box::new(|c: &mut MPushConfig| c.net.ws_max_frame_size = 100) as Mutation,
            "mp.net.ws-max-frame-size",
            "between 1k and 1g",
        ),
        (
            Box::new(|c: &mut MPushConfig| c.net.ws_handshake_timeout = Duration::from_millis(50)),
            "mp.net.ws-handshake-timeout",
            "between 100ms and 10m, got 50ms",
        ),
        (
            Box::new(|c: &mut MPushConfig| c.net.ws_handshake_timeout = Duration::from_secs(3600)),
            "mp.net.ws-handshake-timeout",
            "between 100ms and 10m",
        ),
    ] {
        let (k, m) = invalid_key(mutate);
        assert_eq!(k, key);
        assert!(m.contains(msg), "{key}: {m}");
    }
}

#[test]
fn http_section_is_read_validated_and_strict() {
    let c = MPushConfig::from_hocon_str(
        r#"mp.http {
            proxy-enabled = on
            max-conn-per-host = 9
            default-read-timeout = 3s
            max-content-length = 1m
            dns-mapping { "api.example.com": ["10.0.0.7:8080", "10.0.0.8"] }
            allowed-hosts = ["api.example.com", "127.0.0.1:80"]
            max-in-flight = 10
            max-in-flight-per-connection = 2
        }"#,
    )
    .unwrap();
    let h = &c.http;
    assert!(h.proxy_enabled);
    assert_eq!(
        (
            h.max_conn_per_host,
            h.default_read_timeout,
            h.max_content_length
        ),
        (9, Duration::from_secs(3), 1024 * 1024)
    );
    assert_eq!(
        h.dns_mapping["api.example.com"],
        ["10.0.0.7:8080", "10.0.0.8"]
    );
    assert_eq!(h.allowed_hosts, ["api.example.com", "127.0.0.1:80"]);
    assert_eq!((h.max_in_flight, h.max_in_flight_per_connection), (10, 2));
    assert!(c.accepted_without_effect.is_empty());

    let err = |text: &str| MPushConfig::from_hocon_str(text).unwrap_err().to_string();
    assert!(
        err("mp.http.proxy-enable = true").contains("did you mean mp.http.proxy-enabled"),
        "{}",
        err("mp.http.proxy-enable = true")
    );
    assert!(err("mp.http.proxy-enabled = maybe").contains("expected a boolean"));
    assert!(
        err(r#"mp.http.dns-mapping { "a.b": ["not a target!"] }"#).contains("mp.http.dns-mapping")
    );
    assert!(err("mp.http.max-in-flight = 0").contains("mp.http.max-in-flight"));
    assert!(err("mp.http.default-read-timeout = 11m").contains("mp.http.default-read-timeout"));
}

#[test]
fn tls_and_allowlist_keys_load_and_validate() {
    let c = MPushConfig::from_hocon_str(
        r#"
mp.net.connect-server-tls { cert = "/etc/mpush/server.crt", key = "/etc/mpush/server.key" }
mp.net.gateway-server-tls { cert = "g.crt", key = "g.key", client-ca = "ca.pem" }
mp.net.admin-http-tls { cert = "a.crt", key = "a.key" }
mp.net.alloc-server-tls { cert = "l.crt", key = "l.key" }
mp.net.gateway-client-tls { ca = "ca.pem", cert = "s.crt", key = "s.key" }
mp.net.tls-reload-interval = 2s
mp.net.gateway-allowed-networks = ["127.0.0.0/8", "10.0.0.0/8", "192.0.2.7"]
"#,
    )
    .unwrap();
    assert!(c.net.connect_server_tls.enabled());
    assert_eq!(c.net.connect_server_tls.key, "/etc/mpush/server.key");
    assert_eq!(c.net.gateway_server_tls.client_ca, "ca.pem");
    assert_eq!(c.net.admin_http_tls.cert, "a.crt");
    assert_eq!(c.net.alloc_server_tls.key, "l.key");
    assert!(!c.net.ws_server_tls.enabled());
    assert!(c.net.gateway_client_tls.enabled());
    assert_eq!(c.net.tls_reload_interval, Duration::from_secs(2));
    let nets: Vec<String> = c
        .net
        .gateway_allowed_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["127.0.0.0/8", "10.0.0.0/8", "192.0.2.7/32"]);

    let err = parse_err("mp.net.gateway-allowed-networks = [\"10.0.0.0/33\"]");
    assert!(err.contains("gateway-allowed-networks"), "{err}");
    let (key, _) = invalid_key(|c| c.net.gateway_server_tls.cert = "only-cert.pem".into());
    assert_eq!(key, "mp.net.gateway-server-tls");
    let (key, _) = invalid_key(|c| c.net.admin_http_tls.key = "only-key.pem".into());
    assert_eq!(key, "mp.net.admin-http-tls");
    let (key, _) = invalid_key(|c| c.net.alloc_server_tls.cert = "only-cert.pem".into());
    assert_eq!(key, "mp.net.alloc-server-tls");
    let (key, _) = invalid_key(|c| c.net.connect_server_tls.client_ca = "ca.pem".into());
    assert_eq!(key, "mp.net.connect-server-tls");
    let (key, _) = invalid_key(|c| c.net.gateway_client_tls.cert = "s.crt".into());
    assert_eq!(key, "mp.net.gateway-client-tls");
}
