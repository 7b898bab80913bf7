//! Deterministic tests of the session state machine: no sockets, no runtime, no clock. Each
//! test plays the driver: it feeds requests and effect results and checks the exact actions.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::protocol::body;
use crate::protocol::crypto::{AesCipher, Cipher};
use crate::protocol::message::{
    BindUser, ErrorCode, ErrorMessage, FastConnectRequest, HandshakeRequest, HttpRequest, Message,
    OkMessage,
};
use crate::protocol::{ClientType, Command, flags};

/// §18.1 decrypted HANDSHAKE body.
const HANDSHAKE_PLAIN: &str = "000f383630383830303230373039393634\
    0007416e64726f6964 0005342e312e32 0005312e382e31 00101d2e319497a4574d55aea22153933714\
    001017e3177c3402423f6d49f5fa58ffdfbd 0003a980 0003a980 0000000000000000";
/// §18.2 server key.
const SERVER_KEY: &str = "101112131415161718191a1b1c1d1e1f";
const SESSION_KEY: &str = "07f2056f201754287550efe144e2c1a2";
const IV: &str = "1d2e319497a4574d55aea22153933714";
const CLIENT_KEY: &str = "17e3177c3402423f6d49f5fa58ffdfbd";
const DEVICE: &str = "860880020709964";
const NOW: i64 = 1_500_000_000_000;
const TICKET: &str = "257392dacc43bd0b8f586d8666dad2bb";

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn key(s: &str) -> [u8; 16] {
    hex(s).try_into().unwrap()
}

/// A session with a fixed configuration (min = max = 180 s, a day's tickets) and a fixed
/// server key, fed the way a driver would.
struct H {
    s: Session,
    cfg: SessionConfig,
}

impl H {
    fn new(flavor: Flavor) -> Self {
        Self {
            s: Session::new(flavor),
            cfg: SessionConfig {
                min_heartbeat: Duration::from_secs(180),
                max_heartbeat: Duration::from_secs(180),
                session_expired_time: Duration::from_secs(86_400),
            },
        }
    }

    fn call(&mut self, f: impl FnOnce(&mut Session, &mut Cx<'_>)) -> Vec<Action> {
        let classify = |os: Option<&str>| ClientType(i32::from(os == Some("Android")));
        let server_key = key(SERVER_KEY);
        let mut next_key = move || server_key;
        let mut cx = Cx {
            cfg: &self.cfg,
            classify: &classify,
            server_key: &mut next_key,
        };
        f(&mut self.s, &mut cx);
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn packet(&mut self, sid: i32, req: Request) -> Vec<Action> {
        self.call(|s, cx| s.on_packet(cx, NOW, Inbound { sid, req }))
    }

    fn decrypted(&mut self, d: Decrypted) -> Vec<Action> {
        self.call(|s, cx| s.on_decrypted(cx, NOW, d))
    }

    fn loaded(&mut self, v: Option<String>) -> Vec<Action> {
        self.call(|s, cx| s.on_session_loaded(cx, v))
    }

    fn checked(&mut self, o: BindOutcome) -> Vec<Action> {
        self.call(|s, cx| s.on_bind_checked(cx, o))
    }

    fn routed(&mut self, r: Result<(), String>) -> Vec<Action> {
        self.call(|s, _| s.on_route_written(r))
    }

    fn removed(&mut self, ok: bool) -> Vec<Action> {
        self.call(|s, _| s.on_routes_removed(ok))
    }

    /// The §18 handshake, completed.
    fn handshaken() -> Self {
        let mut h = Self::new(Flavor::Tcp);
        h.packet(1, sealed());
        h.decrypted(Decrypted::Plain(hex(HANDSHAKE_PLAIN).into()));
        assert!(h.s.is_handshaken());
        h
    }

    /// Handshaken and bound to `user` (no previous routes).
    fn bound(user: &str) -> Self {
        let mut h = Self::handshaken();
        h.packet(2, bind(user, Some("t")));
        h.checked(BindOutcome::Allowed);
        h.routed(Ok(()));
        assert_eq!(h.s.user_id.as_deref(), Some(user));
        h
    }
}

fn sealed() -> Request {
    Request::SealedHandshake {
        flags: flags::CRYPTO,
        body: Bytes::from_static(&[1; 128]),
    }
}

fn bind(user: &str, tags: Option<&str>) -> Request {
    Request::Bind(BindUser {
        user_id: Some(user.into()),
        data: None,
        tags: tags.map(Into::into),
    })
}

fn unbind(user: &str) -> Request {
    Request::Unbind(BindUser {
        user_id: Some(user.into()),
        ..BindUser::default()
    })
}

fn error(sid: i32, cmd: Command, code: ErrorCode) -> Action {
    Action::Send(Out::Error {
        sid,
        msg: ErrorMessage::from_code(cmd.code(), code),
    })
}

fn reason(sid: i32, cmd: Command, why: &str) -> Action {
    Action::Send(Out::Error {
        sid,
        msg: ErrorMessage::with_reason(cmd.code(), why),
    })
}

fn ok(sid: i32, cmd: Command, data: &'static str) -> Action {
    Action::Send(Out::Ok { sid, cmd, data })
}

fn handshake_req(device: Option<&str>) -> HandshakeRequest {
    HandshakeRequest {
        device_id: device.map(Into::into),
        os_name: Some("Android".into()),
        iv: Some(key(IV).to_vec()),
        client_key: Some(key(CLIENT_KEY).to_vec()),
        max_heartbeat: 240_000,
        ..HandshakeRequest::default()
    }
}

#[test]
fn handshake_matches_the_18_3_vector_and_replies_before_its_effects() {
    let mut h = H::new(Flavor::Tcp);
    let asked = h.packet(1, sealed());
    assert_eq!(
        asked,
        [Action::Decrypt {
            flags: flags::CRYPTO,
            body: Bytes::from_static(&[1; 128])
        }]
    );
    assert!(!h.s.wants_read(), "reads wait for the RSA result");
    let actions = h.decrypted(Decrypted::Plain(hex(HANDSHAKE_PLAIN).into()));
    assert!(h.s.wants_read());
    let [
        Action::Send(Out::HandshakeOk {
            sid: 1,
            body: Some((ok, hello)),
        }),
        emit,
        store,
    ] = actions.as_slice()
    else {
        panic!("unexpected actions {actions:?}");
    };
    assert_eq!(*hello, AesCipher::new(key(CLIENT_KEY), key(IV)));
    assert_eq!(
        ok.encode(),
        hex("0010101112131415161718191a1b1c1d1e1f 0002bf20 0020 \
             3235373339326461636334336264306238663538366438363636646164326262 0000015d441df400")
    );
    let (sealed, _) = body::seal(ok.encode(), Some(&Cipher::Aes(hello.clone())), 1 << 20).unwrap();
    assert_eq!(
        sealed.to_vec(),
        hex(
            "37002484d0bc0561c480a8074cd020caf326f52f78d7feda78ceca25cf1c5555\
             f94fe90e39fd9265a05f7c6310e8154b6fa9433c92de1ac3fc277337401b6185\
             e3af51af119997165fdee1f875042fdd"
        )
    );
    assert_eq!(
        *emit,
        Action::Emit(Event::HandshakeDone {
            device_id: DEVICE.into()
        })
    );
    let Action::StoreSession { key: k, value, ttl } = store else {
        panic!("no session write: {store:?}");
    };
    assert_eq!(k, &format!("mp:rs:{TICKET}"));
    assert_eq!(*ttl, Duration::from_secs(86_400));
    let stored = ReusableSession::decode(value).unwrap();
    assert_eq!(stored.session_key, key(SESSION_KEY));
    assert_eq!(stored.iv, key(IV));
    assert_eq!(stored.device_id, DEVICE);
    // The session key applies from the next frame.
    let Some(Cipher::Aes(c)) = &h.s.cipher else {
        panic!("no session cipher");
    };
    assert_eq!(*c, AesCipher::new(key(SESSION_KEY), key(IV)));
    assert_eq!(h.s.heartbeat(), Some(Duration::from_secs(180)));
    assert_eq!(h.s.os_name(), Some("Android"));
}

#[test]
fn handshake_errors() {
    let cases: [(Decrypted, Vec<Action>); 4] = [
        (
            Decrypted::Failed("bad block".into()),
            vec![
                error(1, Command::Handshake, ErrorCode::DispatchError),
                Action::Close,
            ],
        ),
        (
            Decrypted::Plain(Bytes::from_static(&[0, 9])),
            vec![
                error(1, Command::Handshake, ErrorCode::DispatchError),
                Action::Close,
            ],
        ),
        (
            Decrypted::Busy,
            vec![reason(1, Command::Handshake, "Server busy"), Action::Close],
        ),
        (Decrypted::Abandoned, vec![Action::Close]),
    ];
    for (result, expected) in cases {
        let mut h = H::new(Flavor::Tcp);
        h.packet(1, sealed());
        assert_eq!(h.decrypted(result), expected);
        assert!(!h.s.is_handshaken());
    }
    // An empty body needs no RSA: ERROR 100 at once.
    let mut h = H::new(Flavor::Tcp);
    let empty = Request::SealedHandshake {
        flags: flags::CRYPTO,
        body: Bytes::new(),
    };
    assert_eq!(
        h.packet(1, empty),
        [
            error(1, Command::Handshake, ErrorCode::DispatchError),
            Action::Close
        ]
    );
}

#[test]
fn handshake_param_checks_and_repeat() {
    let mut bad_iv = handshake_req(Some("d"));
    bad_iv.iv = Some(vec![1; 15]);
    let mut no_key = handshake_req(Some("d"));
    no_key.client_key = None;
    for req in [handshake_req(None), handshake_req(Some("")), bad_iv, no_key] {
        let mut h = H::new(Flavor::Tcp);
        assert_eq!(
            h.packet(4, Request::Handshake(req)),
            [
                reason(4, Command::Handshake, "Param invalid"),
                Action::Close
            ]
        );
        assert!(!h.s.is_handshaken());
    }
    let mut h = H::handshaken();
    let before = h.s.cipher.clone().map(|c| format!("{c:?}"));
    assert_eq!(
        h.packet(5, Request::Handshake(handshake_req(Some(DEVICE)))),
        [error(5, Command::Handshake, ErrorCode::RepeatHandshake)],
        "a repeated handshake is answered and the connection kept"
    );
    assert_eq!(h.s.cipher.clone().map(|c| format!("{c:?}")), before);
}

#[test]
fn a_comma_in_a_field_skips_the_session_write() {
    let mut h = H::new(Flavor::Tcp);
    let mut req = handshake_req(Some("d1"));
    req.os_version = Some("6,0".into());
    let actions = h.packet(1, Request::Handshake(req));
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(matches!(actions[0], Action::Send(Out::HandshakeOk { .. })));
    assert!(matches!(actions[1], Action::Emit(_)));
}

#[test]
fn websocket_handshake_has_no_keys_ticket_or_heartbeat() {
    let mut h = H::new(Flavor::Ws);
    let req = HandshakeRequest {
        device_id: Some("web-1".into()),
        os_name: Some("web".into()),
        ..HandshakeRequest::default()
    };
    assert_eq!(
        h.packet(3, Request::Handshake(req.clone())),
        [
            Action::Send(Out::HandshakeOk { sid: 3, body: None }),
            Action::Emit(Event::HandshakeDone {
                device_id: "web-1".into()
            })
        ]
    );
    assert!(h.s.cipher.is_none());
    assert!(h.s.heartbeat().is_none());
    assert_eq!(
        h.packet(4, Request::Handshake(req)),
        [error(4, Command::Handshake, ErrorCode::RepeatHandshake)]
    );
    let mut h = H::new(Flavor::Ws);
    assert_eq!(
        h.packet(5, Request::Handshake(HandshakeRequest::default())),
        [
            reason(5, Command::Handshake, "Param invalid"),
            Action::Close
        ]
    );
}

fn fast(ticket: Option<&str>, device: &str) -> Request {
    Request::FastConnect(FastConnectRequest {
        session_id: ticket.map(Into::into),
        device_id: Some(device.into()),
        min_heartbeat: 0,
        max_heartbeat: 1_000,
    })
}

fn stored_value() -> String {
    ReusableSession {
        os_name: Some("Android".into()),
        os_version: Some("4.1.2".into()),
        client_version: Some("1.8.1".into()),
        device_id: DEVICE.into(),
        session_key: key(SESSION_KEY),
        iv: key(IV),
    }
    .encode()
}

#[test]
fn fast_connect_hit_restores_the_session_but_not_the_user() {
    let mut h = H::new(Flavor::Tcp);
    assert_eq!(
        h.packet(3, fast(Some(TICKET), DEVICE)),
        [Action::LoadSession {
            key: format!("mp:rs:{TICKET}")
        }]
    );
    assert!(!h.s.wants_read());
    assert_eq!(
        h.loaded(Some(stored_value())),
        [
            Action::Send(Out::FastConnectOk {
                sid: 3,
                heartbeat_ms: 180_000
            }),
            Action::Emit(Event::HandshakeDone {
                device_id: DEVICE.into()
            })
        ]
    );
    assert!(h.s.wants_read());
    assert!(h.s.user_id.is_none());
    assert_eq!(h.s.os_version(), Some("4.1.2"));
    let Some(Cipher::Aes(c)) = &h.s.cipher else {
        panic!("no cipher restored");
    };
    assert_eq!(*c, AesCipher::new(key(SESSION_KEY), key(IV)));
}

#[test]
fn fast_connect_misses_are_answered_and_kept() {
    let expired = error(3, Command::FastConnect, ErrorCode::SessionExpired);
    for ticket in [None, Some("")] {
        let mut h = H::new(Flavor::Tcp);
        assert_eq!(
            h.packet(3, fast(ticket, DEVICE)),
            std::slice::from_ref(&expired)
        );
    }
    // Missing, undecodable (also what a cache error or timeout comes back as), wrong device.
    let cases = [
        (None, DEVICE, expired.clone()),
        (Some("a,b".to_string()), DEVICE, expired.clone()),
        (
            Some(stored_value()),
            "other-device",
            error(3, Command::FastConnect, ErrorCode::InvalidDevice),
        ),
    ];
    for (value, device, reply) in cases {
        let mut h = H::new(Flavor::Tcp);
        h.packet(3, fast(Some(TICKET), device));
        assert_eq!(h.loaded(value), [reply]);
        assert!(!h.s.is_handshaken());
        assert!(h.s.cipher.is_none());
        assert!(h.s.wants_read());
    }
}

#[test]
fn stale_results_are_ignored() {
    let mut h = H::new(Flavor::Tcp);
    assert!(h.loaded(Some(stored_value())).is_empty());
    assert!(h.routed(Ok(())).is_empty());
    assert!(h.checked(BindOutcome::Allowed).is_empty());
    assert!(h.removed(true).is_empty());
    assert!(h.decrypted(Decrypted::Busy).is_empty());
    assert!(!h.s.is_handshaken());
    // A result of another kind leaves the awaited effect in place.
    h.packet(3, fast(Some(TICKET), DEVICE));
    assert!(h.routed(Ok(())).is_empty());
    assert!(!h.s.wants_read());
    assert_eq!(h.loaded(Some(stored_value())).len(), 2);
}

#[test]
fn bind_writes_the_route_before_its_ok_and_publishes_after() {
    let mut h = H::handshaken();
    assert_eq!(
        h.packet(2, bind("user-1", Some("tag1"))),
        [Action::CheckBind {
            user_id: "user-1".into(),
            data: None
        }]
    );
    assert!(!h.s.wants_read());
    assert_eq!(
        h.checked(BindOutcome::Allowed),
        [Action::WriteRoute {
            user_id: "user-1".into(),
            client_type: ClientType::MOBILE
        }]
    );
    assert!(
        h.s.binding,
        "the binding flag is up while the route write runs"
    );
    assert_eq!(h.s.tags.as_deref(), Some("tag1"));
    assert_eq!(
        h.routed(Ok(())),
        [
            ok(2, Command::Bind, "bind success"),
            Action::BindDone {
                user_id: "user-1".into(),
                client_type: ClientType::MOBILE
            }
        ]
    );
    assert!(!h.s.binding);
    assert_eq!(h.s.user_id.as_deref(), Some("user-1"));
    // The OK encodes as in §18.4.
    let ok = OkMessage {
        cmd: Command::Bind.code(),
        code: 0,
        data: Some("bind success".into()),
    };
    assert_eq!(ok.encode(), hex("05 00 000c 62696e642073756363657373"));
}

#[test]
fn bind_18_4_body_decodes_to_the_request() {
    let req = BindUser::decode(&hex("0006757365722d310000000474616731")).unwrap();
    assert_eq!(req.user_id.as_deref(), Some("user-1"));
    assert_eq!(req.tags.as_deref(), Some("tag1"));
    assert_eq!(req.data, None);
}

#[test]
fn bind_route_failure_undoes_and_closes() {
    let mut h = H::handshaken();
    h.packet(2, bind("u", None));
    h.checked(BindOutcome::Allowed);
    assert_eq!(
        h.routed(Err("redis down".into())),
        [
            Action::UndoRoute {
                user_id: "u".into(),
                client_type: ClientType::MOBILE
            },
            reason(2, Command::Bind, "bind failed"),
            Action::Close
        ]
    );
    assert!(h.s.user_id.is_none());
    assert!(!h.s.binding);
}

#[test]
fn bind_validator_outcomes() {
    let mut h = H::handshaken();
    h.packet(2, bind("u", None));
    assert_eq!(
        h.checked(BindOutcome::Denied("banned".into())),
        [reason(2, Command::Bind, "bind failed"), Action::Close]
    );
    assert!(h.s.user_id.is_none());

    let mut h = H::handshaken();
    h.packet(2, bind("u", None));
    assert_eq!(
        h.checked(BindOutcome::Unavailable("auth backend down".into())),
        [reason(
            2,
            Command::Bind,
            "bind failed: validator unavailable (auth backend down)"
        )],
        "an unavailable validator is answered and the connection kept"
    );
    assert!(h.s.user_id.is_none());
    assert!(h.s.wants_read());
}

#[test]
fn bind_and_unbind_checks_close() {
    for (req, cmd) in [
        (bind("u", None), Command::Bind),
        (unbind("u"), Command::Unbind),
    ] {
        let mut h = H::new(Flavor::Tcp);
        assert_eq!(
            h.packet(2, req.clone()),
            [reason(2, cmd, "not handshake"), Action::Close]
        );
        let mut h = H::handshaken();
        let empty = match cmd {
            Command::Bind => bind("", None),
            _ => unbind(""),
        };
        assert_eq!(
            h.packet(2, empty),
            [reason(2, cmd, "invalid param"), Action::Close]
        );
    }
}

#[test]
fn rebinding_the_same_user_only_updates_tags() {
    let mut h = H::bound("u");
    assert_eq!(
        h.packet(9, bind("u", Some("new"))),
        [ok(9, Command::Bind, "bind success")]
    );
    assert_eq!(h.s.tags.as_deref(), Some("new"));
}

#[test]
fn binding_another_user_unbinds_the_old_one_first_without_an_extra_reply() {
    let mut h = H::bound("old");
    assert_eq!(
        h.packet(9, bind("new", None)),
        [
            Action::RemoveRoutes {
                user_id: "old".into(),
                client_type: ClientType::MOBILE,
                report: false
            },
            Action::CheckBind {
                user_id: "new".into(),
                data: None
            }
        ]
    );
    assert!(h.s.user_id.is_none());
    h.checked(BindOutcome::Allowed);
    assert_eq!(h.routed(Ok(()))[0], ok(9, Command::Bind, "bind success"));
    assert_eq!(h.s.user_id.as_deref(), Some("new"));
}

#[test]
fn unbind_flows() {
    let mut h = H::handshaken();
    assert_eq!(
        h.packet(6, unbind("u")),
        [ok(6, Command::Unbind, "unbind success")],
        "a never-bound unbind is a no-op (Q5 fixed)"
    );
    let mut h = H::bound("u");
    assert_eq!(
        h.packet(6, unbind("whatever")),
        [Action::RemoveRoutes {
            user_id: "u".into(),
            client_type: ClientType::MOBILE,
            report: true
        }]
    );
    assert_eq!(
        h.removed(false),
        [reason(6, Command::Unbind, "unbind failed")]
    );
    assert_eq!(
        h.s.user_id.as_deref(),
        Some("u"),
        "a failed unbind keeps the user"
    );
    h.packet(7, unbind("u"));
    assert_eq!(h.removed(true), [ok(7, Command::Unbind, "unbind success")]);
    assert!(h.s.user_id.is_none());
    assert!(h.s.tags.is_none());
}

#[test]
fn upstream_push_goes_to_the_handler_before_its_auto_ack() {
    let mut h = H::bound("u");
    let content = Bytes::from_static(b"{\"content\":\"hi\"}");
    assert_eq!(
        h.packet(
            7,
            Request::Push {
                flags: flags::AUTO_ACK,
                content: content.clone()
            }
        ),
        [
            Action::Upstream {
                sid: 7,
                flags: flags::AUTO_ACK,
                content: content.clone(),
                device_id: Some(DEVICE.into()),
                user_id: Some("u".into())
            },
            Action::Send(Out::Ack { sid: 7 })
        ]
    );
    let plain = h.packet(8, Request::Push { flags: 0, content });
    assert_eq!(plain.len(), 1, "no ACK without AUTO_ACK: {plain:?}");
}

#[test]
fn ack_heartbeat_unknown_and_malformed() {
    let mut h = H::handshaken();
    assert_eq!(
        h.packet(0x4000_0001, Request::Ack),
        [Action::AckArrived {
            push_id: 0x4000_0001
        }]
    );
    assert!(h.packet(0, Request::Heartbeat).is_empty());
    assert_eq!(
        h.packet(3, Request::Unsupported(Command::Unknown(99))),
        [
            error(3, Command::Unknown(99), ErrorCode::UnsupportedCmd),
            Action::Close
        ]
    );
    assert_eq!(
        h.packet(4, Request::Malformed(Command::Bind)),
        [
            error(4, Command::Bind, ErrorCode::DispatchError),
            Action::Close
        ]
    );
}

fn http_get(uri: &str) -> Box<HttpRequest> {
    Box::new(HttpRequest {
        method: 0,
        uri: Some(uri.into()),
        headers: vec![("readTimeout".into(), "1000".into())],
        body: None,
    })
}

#[test]
fn http_proxy_runs_off_the_session_without_gating_it() {
    let mut h = H::bound("u");
    let req = http_get("http://example.test/x");
    assert_eq!(
        h.packet(7, Request::HttpProxy(req.clone())),
        [Action::HttpProxy { sid: 7, req }]
    );
    // Not gating: the session reads on while the upstream answers, and a second request
    // (or anything else) is served at once.
    assert!(h.s.wants_read());
    assert!(
        !Action::HttpProxy {
            sid: 7,
            req: http_get("http://a/")
        }
        .is_gating()
    );
    let req = http_get("");
    assert_eq!(
        h.packet(8, Request::HttpProxy(req.clone())),
        [Action::HttpProxy { sid: 8, req }],
        "an empty uri is the proxy's to answer (one 400, Q11)"
    );
    assert_eq!(
        h.packet(9, Request::Ack),
        [Action::AckArrived { push_id: 9 }]
    );
}

#[test]
fn http_proxy_needs_a_handshake_and_disabled_is_unsupported() {
    let mut h = H::new(Flavor::Tcp);
    assert_eq!(
        h.packet(3, Request::HttpProxy(http_get("http://example.test/"))),
        [
            reason(3, Command::HttpProxy, "not handshake"),
            Action::Close
        ]
    );
    // A transport with the proxy off reports the packet as unsupported: ERROR 101, close.
    let mut h = H::handshaken();
    assert_eq!(
        h.packet(4, Request::Unsupported(Command::HttpProxy)),
        [
            error(4, Command::HttpProxy, ErrorCode::UnsupportedCmd),
            Action::Close
        ]
    );
    let mut h = H::handshaken();
    assert_eq!(
        h.packet(5, Request::Malformed(Command::HttpProxy)),
        [
            error(5, Command::HttpProxy, ErrorCode::DispatchError),
            Action::Close
        ]
    );
}

#[test]
fn a_request_while_an_effect_is_awaited_is_a_handling_error() {
    let mut h = H::handshaken();
    h.packet(2, bind("u", None));
    assert_eq!(
        h.packet(3, Request::Ack),
        [
            error(3, Command::Ack, ErrorCode::DispatchError),
            Action::Close
        ]
    );
}

#[test]
fn close_drops_routes_of_a_bound_session_then_reports() {
    let mut h = H::bound("u");
    assert_eq!(
        h.call(|s, _| s.on_closed()),
        [
            Action::RemoveRoutes {
                user_id: "u".into(),
                client_type: ClientType::MOBILE,
                report: false
            },
            Action::Emit(Event::ConnectionClosed)
        ]
    );
    let mut h = H::handshaken();
    assert_eq!(
        h.call(|s, _| s.on_closed()),
        [Action::Emit(Event::ConnectionClosed)]
    );
}

#[test]
fn heartbeat_negotiation_clamps() {
    let cfg = SessionConfig {
        min_heartbeat: Duration::from_secs(10),
        max_heartbeat: Duration::from_secs(180),
        session_expired_time: Duration::from_secs(1),
    };
    assert_eq!(negotiate_heartbeat(&cfg, 1), Duration::from_secs(10));
    assert_eq!(negotiate_heartbeat(&cfg, 60_000), Duration::from_secs(60));
    assert_eq!(
        negotiate_heartbeat(&cfg, i32::MAX),
        Duration::from_secs(180)
    );
    assert_eq!(negotiate_heartbeat(&cfg, -5), Duration::from_secs(10));
}

#[test]
fn session_stays_small() {
    let size = std::mem::size_of::<Session>();
    eprintln!("Session: {size} bytes");
    assert!(size <= 256, "Session grew to {size} bytes");
}

/// One step of a random driver: a request or an effect result, possibly out of turn.
#[derive(Debug, Clone)]
enum Step {
    Packet(i32, Request),
    Decrypted(Decrypted),
    Loaded(Option<String>),
    Checked(BindOutcome),
    Routed(bool),
    Removed(bool),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let user = prop::option::of(prop_oneof![Just(String::new()), "[a-c]{1,2}"]);
    let bind_user = (user, prop::option::of("[a-z]{0,3}")).prop_map(|(user_id, tags)| BindUser {
        user_id,
        data: None,
        tags,
    });
    let request = prop_oneof![
        Just(Request::Heartbeat),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(|b| Request::SealedHandshake {
            flags: flags::CRYPTO,
            body: b.into()
        }),
        prop::option::of("[a-b]{0,2}")
            .prop_map(|d| Request::Handshake(handshake_req(d.as_deref()))),
        (prop::option::of(Just(TICKET.to_string())), "[a-b]{0,2}").prop_map(|(t, d)| {
            Request::FastConnect(FastConnectRequest {
                session_id: t,
                device_id: Some(d),
                min_heartbeat: 0,
                max_heartbeat: 0,
            })
        }),
        bind_user.clone().prop_map(Request::Bind),
        bind_user.prop_map(Request::Unbind),
        any::<u8>().prop_map(|f| Request::Push {
            flags: f,
            content: Bytes::new()
        }),
        Just(Request::Ack),
        prop::option::of("[a-z:/]{0,8}").prop_map(|uri| Request::HttpProxy(Box::new(
            HttpRequest {
                uri,
                ..HttpRequest::default()
            }
        ))),
        any::<u8>().prop_map(|c| Request::Malformed(Command::from_code(c))),
        any::<u8>().prop_map(|c| Request::Unsupported(Command::from_code(c))),
    ];
    prop_oneof![
        (any::<i32>(), request).prop_map(|(sid, r)| Step::Packet(sid, r)),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Decrypted::Plain(b.into())),
            Just(Decrypted::Plain(hex(HANDSHAKE_PLAIN).into())),
            Just(Decrypted::Busy),
            Just(Decrypted::Abandoned),
            Just(Decrypted::Failed("x".into())),
        ]
        .prop_map(Step::Decrypted),
        prop::option::of(prop_oneof![Just(stored_value()), "[a-z,|0-9]{0,12}"])
            .prop_map(Step::Loaded),
        prop_oneof![
            Just(BindOutcome::Allowed),
            Just(BindOutcome::Denied("no".into())),
            Just(BindOutcome::Unavailable("down".into())),
        ]
        .prop_map(Step::Checked),
        any::<bool>().prop_map(Step::Routed),
        any::<bool>().prop_map(Step::Removed),
    ]
}

proptest::proptest! {
    /// Random requests and results, in and out of turn, never panic; a close always follows
    /// the ERROR that explains it (or a handshake abandoned by its client); a batch that asks
    /// for a gating effect leaves the session waiting, any other leaves it reading.
    #[test]
    fn random_drivers_keep_the_invariants(
        ws in proptest::bool::ANY,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let mut h = H::new(if ws { Flavor::Ws } else { Flavor::Tcp });
        for s in steps {
            let was_waiting = !h.s.wants_read();
            let abandoned = matches!(s, Step::Decrypted(Decrypted::Abandoned));
            let actions = match s {
                Step::Packet(sid, req) => h.packet(sid, req),
                Step::Decrypted(d) => h.decrypted(d),
                Step::Loaded(v) => h.loaded(v),
                Step::Checked(o) => h.checked(o),
                Step::Routed(ok) => h.routed(if ok { Ok(()) } else { Err("down".into()) }),
                Step::Removed(ok) => h.removed(ok),
            };
            for (i, a) in actions.iter().enumerate() {
                if *a == Action::Close {
                    let explained = i > 0
                        && matches!(actions[i - 1], Action::Send(Out::Error { .. }));
                    proptest::prop_assert!(
                        explained || (abandoned && was_waiting && actions.len() == 1),
                        "unexplained close in {actions:?}"
                    );
                    proptest::prop_assert_eq!(i, actions.len() - 1, "actions after Close");
                }
            }
            let gating = actions.iter().filter(|a| a.is_gating()).count();
            proptest::prop_assert!(gating <= 1, "{actions:?}");
            if gating == 1 {
                proptest::prop_assert!(!h.s.wants_read());
            } else if !was_waiting {
                proptest::prop_assert!(h.s.wants_read());
            }
            if h.s.user_id.is_some() {
                proptest::prop_assert!(h.s.is_handshaken());
            }
        }
    }
}
