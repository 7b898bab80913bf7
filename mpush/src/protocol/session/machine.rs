//! The per-connection session state machine: handshake, fast connect, bind, unbind, upstream
//! push and ack (spec §4, §8.2, §8.3, §9.2), without I/O.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;

use super::action::{Action, BindOutcome, Decrypted, Event, Inbound, Out, Request};
use super::identity::Identity;
use super::ticket::{ReusableSession, is_wire_safe, make_ticket, session_cache_key};
use crate::protocol::crypto::{AES_KEY_LEN, AesCipher, Cipher, mix_keys};
use crate::protocol::message::{
    BindUser, ErrorCode, ErrorMessage, FastConnectRequest, HandshakeOk, HandshakeRequest,
    HttpRequest, Message,
};
use crate::protocol::{ClientType, Command, flags};

/// Which transport drives the session: it decides what a HANDSHAKE does (§4.3 last paragraph).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// MPush binary frames: RSA handshake, AES session, ticket, heartbeat.
    #[default]
    Tcp,
    /// WebSocket JSON: no keys, no ticket, no heartbeat; an empty HandshakeOk.
    Ws,
}

/// The configuration the session reads (a copy of the relevant `mp.core` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// `mp.core.min-heartbeat`.
    pub min_heartbeat: Duration,
    /// `mp.core.max-heartbeat`.
    pub max_heartbeat: Duration,
    /// `mp.core.session-expired-time`: ticket lifetime and cache TTL.
    pub session_expired_time: Duration,
}

/// What the session borrows from its environment for one call: configuration, the client
/// classifier and the source of server keys (the driver's RNG; tests pass a fixed key).
pub struct Cx<'a> {
    /// Configuration.
    pub cfg: &'a SessionConfig,
    /// Client type for an osName (the `ClientClassifier` SPI).
    pub classify: &'a dyn Fn(Option<&str>) -> ClientType,
    /// A fresh random server key per handshake (§4.3 step 4).
    pub server_key: &'a mut dyn FnMut() -> [u8; AES_KEY_LEN],
}

impl std::fmt::Debug for Cx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Negotiated heartbeat (spec §7.1): the client's max clamped into [min, max], at least 1 ms.
pub fn negotiate_heartbeat(cfg: &SessionConfig, client_max_ms: i32) -> Duration {
    let min = cfg.min_heartbeat.as_millis() as i64;
    let max = cfg.max_heartbeat.as_millis() as i64;
    Duration::from_millis(min.max(i64::from(client_max_ms).min(max)).max(1) as u64)
}

/// The effect the session waits for, and the id of the request whose reply waits with it.
#[derive(Debug)]
struct Pending {
    sid: i32,
    effect: Effect,
}

/// What a [`Pending`] waits for, with what the session needs to go on.
#[derive(Debug)]
enum Effect {
    Handshake,
    FastConnect {
        device_id: Option<String>,
        max_heartbeat: i32,
    },
    BindCheck {
        user_id: String,
        tags: Option<String>,
    },
    BindRoute {
        user_id: String,
        client_type: ClientType,
    },
    Unbind,
}

/// One client's session: identity, cipher, bound user, and the queue of actions its driver
/// has not executed yet. Fields are public for readers elsewhere in the server (routes,
/// broadcast filters, kicks), which hold the connection's lock while they look.
#[derive(Debug, Default)]
pub struct Session {
    /// Device id, OS name and version, client version from the handshake; `Some` once
    /// handshaken (see also [`Session::device_id`] and the other accessors).
    pub identity: Option<Identity>,
    /// The session cipher (AES with the session key) once handshaken over TCP.
    pub cipher: Option<Cipher>,
    /// Negotiated heartbeat in milliseconds (at least 1, see [`negotiate_heartbeat`]); read
    /// through [`Session::heartbeat`]. `None` before the handshake (and always on WebSocket).
    /// 4 bytes where an `Option<Duration>` takes 16: every connection holds one.
    heartbeat_ms: Option<NonZeroU32>,
    /// Bound user. `Box<str>`, not `String`: 16 bytes in every session instead of 24.
    pub user_id: Option<Box<str>>,
    /// Tags of the bound user (free text, used by broadcast filters).
    pub tags: Option<Box<str>>,
    /// Client type derived from `os_name` at bind time.
    pub client_type: ClientType,
    /// `true` while a bind has registered the local route but its cluster route write has not
    /// completed: a cluster route naming another connection is then older, not newer, so it
    /// proves no displacement (and the route must not be "repaired" by anyone but the bind).
    pub binding: bool,
    flavor: Flavor,
    pending: Option<Box<Pending>>,
    actions: VecDeque<Action>,
}

impl Session {
    /// A fresh, not yet handshaken session.
    pub fn new(flavor: Flavor) -> Self {
        Self {
            flavor,
            ..Self::default()
        }
    }

    /// The negotiated heartbeat; `None` before the handshake (and always on WebSocket).
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat_ms
            .map(|ms| Duration::from_millis(u64::from(ms.get())))
    }

    /// Records a negotiated heartbeat, in whole milliseconds (as it goes on the wire), at
    /// least 1 ms and at most `u32::MAX` ms (≈ 49 days).
    fn set_heartbeat(&mut self, heartbeat: Duration) {
        let ms = super::idle::interval_ms(heartbeat);
        self.heartbeat_ms = Some(NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN));
    }

    /// The transport flavour.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Changes the transport flavour (before any request).
    pub fn set_flavor(&mut self, flavor: Flavor) {
        self.flavor = flavor;
    }

    /// `true` once a handshake or fast connect has completed.
    pub fn is_handshaken(&self) -> bool {
        self.identity.is_some()
    }

    /// Device id from the handshake; `Some` once handshaken.
    pub fn device_id(&self) -> Option<&str> {
        self.identity.as_ref().map(Identity::device_id)
    }

    /// OS name from the handshake.
    pub fn os_name(&self) -> Option<&str> {
        self.identity.as_ref().and_then(Identity::os_name)
    }

    /// OS version from the handshake.
    pub fn os_version(&self) -> Option<&str> {
        self.identity.as_ref().and_then(Identity::os_version)
    }

    /// Client version from the handshake.
    pub fn client_version(&self) -> Option<&str> {
        self.identity.as_ref().and_then(Identity::client_version)
    }

    /// `true` while no effect result is awaited: the driver may feed the next request.
    pub fn wants_read(&self) -> bool {
        self.pending.is_none()
    }

    /// The next action to execute, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        let a = self.actions.pop_front();
        if self.actions.is_empty() && self.actions.capacity() > 0 {
            // An idle session holds no queue: every bound connection would keep the slots its
            // handshake and bind grew (four actions of ~100 bytes each), for one allocation
            // per handled packet.
            self.actions = VecDeque::new();
        }
        a
    }

    fn send(&mut self, out: Out) {
        self.actions.push_back(Action::Send(out));
    }

    fn error_close(&mut self, sid: i32, msg: ErrorMessage) {
        self.send(Out::Error { sid, msg });
        self.actions.push_back(Action::Close);
    }

    fn dispatch_error(&mut self, sid: i32, cmd: Command) {
        self.error_close(
            sid,
            ErrorMessage::from_code(cmd.code(), ErrorCode::DispatchError),
        );
    }

    /// One inbound request. `now_ms` is the wall clock in ms (tickets, §4.3 step 6).
    pub fn on_packet(&mut self, cx: &mut Cx<'_>, now_ms: i64, inbound: Inbound) {
        let Inbound { sid, req } = inbound;
        if self.pending.is_some() {
            // The driver must not feed requests while an effect is awaited; treat it as the
            // handling error it would be.
            let cmd = command_of(&req);
            self.dispatch_error(sid, cmd);
            return;
        }
        match req {
            Request::Heartbeat => {}
            Request::SealedHandshake { flags, body } => {
                if body.is_empty() {
                    self.dispatch_error(sid, Command::Handshake);
                    return;
                }
                self.wait(sid, Effect::Handshake);
                self.actions.push_back(Action::Decrypt { flags, body });
            }
            Request::Handshake(req) => self.handshake(cx, now_ms, sid, req),
            Request::FastConnect(req) => self.fast_connect(sid, req),
            Request::Bind(req) => self.bind(sid, req),
            Request::Unbind(req) => self.unbind(sid, req),
            Request::Push { flags, content } => self.upstream(sid, flags, content),
            Request::Ack => self.actions.push_back(Action::AckArrived { push_id: sid }),
            Request::HttpProxy(req) => self.http_proxy(sid, req),
            Request::Malformed(cmd) => self.dispatch_error(sid, cmd),
            Request::Unsupported(cmd) => self.error_close(
                sid,
                ErrorMessage::from_code(cmd.code(), ErrorCode::UnsupportedCmd),
            ),
        }
    }

    /// The result of [`Action::Decrypt`]. Ignored unless a handshake waits for it.
    pub fn on_decrypted(&mut self, cx: &mut Cx<'_>, now_ms: i64, result: Decrypted) {
        let Some(sid) = self.take_pending_sid(|e| matches!(e, Effect::Handshake)) else {
            return;
        };
        match result {
            Decrypted::Plain(plain) => match HandshakeRequest::decode(&plain) {
                Ok(req) => self.handshake(cx, now_ms, sid, req),
                Err(_) => self.dispatch_error(sid, Command::Handshake),
            },
            Decrypted::Failed(_) => self.dispatch_error(sid, Command::Handshake),
            Decrypted::Busy => self.error_close(
                sid,
                ErrorMessage::with_reason(Command::Handshake.code(), "Server busy"),
            ),
            Decrypted::Abandoned => self.actions.push_back(Action::Close),
        }
    }

    fn handshake(&mut self, cx: &mut Cx<'_>, now_ms: i64, sid: i32, req: HandshakeRequest) {
        let param_invalid = |s: &mut Self| {
            s.error_close(
                sid,
                ErrorMessage::with_reason(Command::Handshake.code(), "Param invalid"),
            );
        };
        let keys = match self.flavor {
            Flavor::Tcp => match (as_key(&req.iv), as_key(&req.client_key)) {
                (Some(iv), Some(client_key)) => Some((iv, client_key)),
                _ => return param_invalid(self),
            },
            Flavor::Ws => None,
        };
        let device_id = req.device_id.clone().unwrap_or_default();
        if device_id.is_empty() {
            return param_invalid(self);
        }
        if self.device_id() == Some(device_id.as_str()) {
            // A retried handshake: answer and keep the connection (the Java client ignores it).
            self.send(Out::Error {
                sid,
                msg: ErrorMessage::from_code(Command::Handshake.code(), ErrorCode::RepeatHandshake),
            });
            return;
        }
        self.identity = Some(Identity::new(
            &device_id,
            req.os_name.as_deref(),
            req.os_version.as_deref(),
            req.client_version.as_deref(),
        ));
        let Some((iv, client_key)) = keys else {
            self.send(Out::HandshakeOk { sid, body: None });
            self.actions
                .push_back(Action::Emit(Event::HandshakeDone { device_id }));
            return;
        };
        let server_key = (cx.server_key)();
        let session_key = mix_keys(&client_key, &server_key);
        let heartbeat = negotiate_heartbeat(cx.cfg, req.max_heartbeat);
        let ticket = make_ticket(&device_id, now_ms);
        let ttl = cx.cfg.session_expired_time;
        // 64-bit arithmetic (quirk Q26 fixed).
        let expire_time = now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let ok = HandshakeOk {
            server_key: Some(server_key.to_vec()),
            heartbeat: i32::try_from(heartbeat.as_millis()).unwrap_or(i32::MAX),
            session_id: Some(ticket.clone()),
            expire_time,
        };
        // HandshakeOk goes out under AES(clientKey, iv), queued before anything else, so the
        // session key set here applies from the next frame on (§4.2).
        self.cipher = Some(Cipher::Aes(AesCipher::new(session_key, iv)));
        self.set_heartbeat(heartbeat);
        self.send(Out::HandshakeOk {
            sid,
            body: Some((ok, AesCipher::new(client_key, iv))),
        });
        self.actions.push_back(Action::Emit(Event::HandshakeDone {
            device_id: device_id.clone(),
        }));
        let session = ReusableSession {
            os_name: req.os_name,
            os_version: req.os_version,
            client_version: req.client_version,
            device_id,
            session_key,
            iv,
        };
        // A session whose fields contain a comma cannot be read back by any MPush server
        // (quirk Q12): it is not stored, so a fast reconnect falls back to a full handshake.
        let fields = [
            session.os_name.as_deref(),
            session.os_version.as_deref(),
            session.client_version.as_deref(),
        ];
        if is_wire_safe(&session.device_id) && fields.into_iter().flatten().all(is_wire_safe) {
            self.actions.push_back(Action::StoreSession {
                key: session_cache_key(&ticket),
                value: session.encode(),
                ttl: ttl.max(Duration::from_secs(1)),
            });
        }
    }

    fn fast_connect(&mut self, sid: i32, req: FastConnectRequest) {
        let Some(ticket) = req.session_id.filter(|t| !t.is_empty()) else {
            self.fast_connect_error(sid, ErrorCode::SessionExpired);
            return;
        };
        self.wait(
            sid,
            Effect::FastConnect {
                device_id: req.device_id,
                max_heartbeat: req.max_heartbeat,
            },
        );
        self.actions.push_back(Action::LoadSession {
            key: session_cache_key(&ticket),
        });
    }

    fn fast_connect_error(&mut self, sid: i32, code: ErrorCode) {
        // The connection stays open: the client falls back to a full handshake on it.
        self.send(Out::Error {
            sid,
            msg: ErrorMessage::from_code(Command::FastConnect.code(), code),
        });
    }

    /// The result of [`Action::LoadSession`] (`None`: missing, expired, unreadable, or the
    /// cache failed or was too slow). Ignored unless a fast connect waits for it.
    pub fn on_session_loaded(&mut self, cx: &mut Cx<'_>, value: Option<String>) {
        let Some((sid, (device_id, max_heartbeat))) = self.take_pending(|e| match e {
            Effect::FastConnect {
                device_id,
                max_heartbeat,
            } => Some((device_id.take(), *max_heartbeat)),
            _ => None,
        }) else {
            return;
        };
        let Some(session) = value.as_deref().and_then(ReusableSession::decode) else {
            return self.fast_connect_error(sid, ErrorCode::SessionExpired);
        };
        if device_id.as_deref() != Some(session.device_id.as_str()) {
            return self.fast_connect_error(sid, ErrorCode::InvalidDevice);
        }
        let heartbeat = negotiate_heartbeat(cx.cfg, max_heartbeat);
        // FastConnectOk is raw; the restored cipher applies from the next frame.
        self.send(Out::FastConnectOk {
            sid,
            heartbeat_ms: i32::try_from(heartbeat.as_millis()).unwrap_or(i32::MAX),
        });
        // The bound user is not restored: the client binds again.
        self.cipher = Some(Cipher::Aes(AesCipher::new(session.session_key, session.iv)));
        self.identity = Some(Identity::new(
            &session.device_id,
            session.os_name.as_deref(),
            session.os_version.as_deref(),
            session.client_version.as_deref(),
        ));
        self.set_heartbeat(heartbeat);
        self.actions.push_back(Action::Emit(Event::HandshakeDone {
            device_id: session.device_id,
        }));
    }

    /// The checks BIND and UNBIND share (§8.2 steps 1–2): a user id, then a handshake.
    fn checked_user(&mut self, sid: i32, cmd: Command, req: &BindUser) -> Option<String> {
        let Some(user_id) = req.user_id.clone().filter(|u| !u.is_empty()) else {
            self.error_close(sid, ErrorMessage::with_reason(cmd.code(), "invalid param"));
            return None;
        };
        if !self.is_handshaken() {
            self.error_close(sid, ErrorMessage::with_reason(cmd.code(), "not handshake"));
            return None;
        }
        Some(user_id)
    }

    fn bind(&mut self, sid: i32, req: BindUser) {
        let Some(user_id) = self.checked_user(sid, Command::Bind, &req) else {
            return;
        };
        match self.user_id.take() {
            Some(u) if *u == *user_id => {
                // Re-binding the same user only updates the tags.
                self.user_id = Some(u);
                self.tags = req.tags.map(String::into_boxed_str);
                self.bind_ok(sid);
                return;
            }
            Some(old) => {
                // Quirk Q4: the original answers this implicit unbind with an extra OK/ERROR
                // tagged cmd 5 before the bind's own answer. mpush-rs sends only the bind's.
                self.tags = None;
                self.actions.push_back(Action::RemoveRoutes {
                    user_id: old.into(),
                    client_type: self.client_type,
                    report: false,
                });
            }
            None => {}
        }
        self.actions.push_back(Action::CheckBind {
            user_id: user_id.clone(),
            data: req.data,
        });
        self.wait(
            sid,
            Effect::BindCheck {
                user_id,
                tags: req.tags,
            },
        );
    }

    fn bind_ok(&mut self, sid: i32) {
        self.send(Out::Ok {
            sid,
            cmd: Command::Bind,
            data: "bind success",
        });
    }

    fn bind_failed(&mut self, sid: i32) {
        self.error_close(
            sid,
            ErrorMessage::with_reason(Command::Bind.code(), "bind failed"),
        );
    }

    /// The result of [`Action::CheckBind`]. Ignored unless a bind waits for it.
    pub fn on_bind_checked(&mut self, cx: &mut Cx<'_>, outcome: BindOutcome) {
        let Some((sid, (user_id, tags))) = self.take_pending(|e| match e {
            Effect::BindCheck { user_id, tags } => Some((std::mem::take(user_id), tags.take())),
            _ => None,
        }) else {
            return;
        };
        match outcome {
            BindOutcome::Allowed => {}
            BindOutcome::Denied(_) => return self.bind_failed(sid),
            BindOutcome::Unavailable(reason) => {
                // Nothing changed and the client did nothing wrong: it may retry on this
                // connection. The Java client treats any ERROR on BIND as a failed bind.
                self.send(Out::Error {
                    sid,
                    msg: ErrorMessage::with_reason(
                        Command::Bind.code(),
                        &format!("bind failed: validator unavailable ({reason})"),
                    ),
                });
                return;
            }
        }
        let client_type = (cx.classify)(self.os_name());
        self.user_id = Some(user_id.as_str().into());
        self.tags = tags.map(String::into_boxed_str);
        self.client_type = client_type;
        self.binding = true;
        self.actions.push_back(Action::WriteRoute {
            user_id: user_id.clone(),
            client_type,
        });
        self.wait(
            sid,
            Effect::BindRoute {
                user_id,
                client_type,
            },
        );
    }

    /// The result of [`Action::WriteRoute`]. Ignored unless a bind waits for it.
    pub fn on_route_written(&mut self, result: Result<(), String>) {
        let Some((sid, (user_id, client_type))) = self.take_pending(|e| match e {
            Effect::BindRoute {
                user_id,
                client_type,
            } => Some((std::mem::take(user_id), *client_type)),
            _ => None,
        }) else {
            return;
        };
        self.binding = false;
        match result {
            Ok(()) => {
                // OK only after the route write: the route is what a push needs.
                self.bind_ok(sid);
                self.actions.push_back(Action::BindDone {
                    user_id,
                    client_type,
                });
            }
            Err(_) => {
                self.user_id = None;
                self.tags = None;
                self.actions.push_back(Action::UndoRoute {
                    user_id,
                    client_type,
                });
                self.bind_failed(sid);
            }
        }
    }

    fn unbind(&mut self, sid: i32, req: BindUser) {
        if self.checked_user(sid, Command::Unbind, &req).is_none() {
            return;
        }
        let Some(user_id) = self.user_id.as_deref().map(str::to_owned) else {
            // Quirk Q5 fixed: unbinding a never-bound connection is a no-op, not a crash.
            self.unbind_ok(sid);
            return;
        };
        // It acts on the connection's bound user, whatever the request names (§8.3).
        self.actions.push_back(Action::RemoveRoutes {
            user_id,
            client_type: self.client_type,
            report: true,
        });
        self.wait(sid, Effect::Unbind);
    }

    fn unbind_ok(&mut self, sid: i32) {
        self.send(Out::Ok {
            sid,
            cmd: Command::Unbind,
            data: "unbind success",
        });
    }

    /// The result of a reported [`Action::RemoveRoutes`] (`false`: the cache could not be
    /// updated). Ignored unless an unbind waits for it.
    pub fn on_routes_removed(&mut self, ok: bool) {
        let Some(sid) = self.take_pending_sid(|e| matches!(e, Effect::Unbind)) else {
            return;
        };
        if ok {
            self.user_id = None;
            self.tags = None;
            self.unbind_ok(sid);
        } else {
            self.send(Out::Error {
                sid,
                msg: ErrorMessage::with_reason(Command::Unbind.code(), "unbind failed"),
            });
        }
    }

    fn upstream(&mut self, sid: i32, packet_flags: u8, content: Bytes) {
        self.actions.push_back(Action::Upstream {
            sid,
            flags: packet_flags,
            content,
            device_id: self.device_id().map(str::to_owned),
            user_id: self.user_id.as_deref().map(str::to_owned),
        });
        if packet_flags & flags::AUTO_ACK != 0 {
            self.send(Out::Ack { sid });
        }
    }

    fn http_proxy(&mut self, sid: i32, req: Box<HttpRequest>) {
        // MPush proxies for any connection; mpush-rs only for a handshaken one, so the server
        // is no open relay for anyone who can open a socket (and the reply can be sealed).
        if !self.is_handshaken() {
            self.error_close(
                sid,
                ErrorMessage::with_reason(Command::HttpProxy.code(), "not handshake"),
            );
            return;
        }
        self.actions.push_back(Action::HttpProxy { sid, req });
    }

    /// The connection closed: drop what is still routed here, then report the close (§8.5).
    /// Any awaited effect is abandoned.
    pub fn on_closed(&mut self) {
        self.pending = None;
        if let Some(user_id) = self.user_id.as_deref().map(str::to_owned) {
            self.actions.push_back(Action::RemoveRoutes {
                user_id,
                client_type: self.client_type,
                report: false,
            });
        }
        self.actions
            .push_back(Action::Emit(Event::ConnectionClosed));
    }

    /// Waits for `effect`, whose outcome answers request `sid`.
    fn wait(&mut self, sid: i32, effect: Effect) {
        self.pending = Some(Box::new(Pending { sid, effect }));
    }

    /// Takes the pending effect if `f` accepts it (returns `Some`), with the id of the request
    /// it answers; a stale or unexpected result leaves the session as it was.
    fn take_pending<T>(&mut self, f: impl FnOnce(&mut Effect) -> Option<T>) -> Option<(i32, T)> {
        let p = self.pending.as_deref_mut()?;
        let v = f(&mut p.effect)?;
        let sid = p.sid;
        self.pending = None;
        Some((sid, v))
    }

    /// [`Session::take_pending`] for an effect that carries nothing but the request id.
    fn take_pending_sid(&mut self, wanted: fn(&Effect) -> bool) -> Option<i32> {
        self.take_pending(|e| wanted(e).then_some(()))
            .map(|(sid, ())| sid)
    }
}

/// The command a request came as (for the ERROR reply when it cannot be handled).
fn command_of(req: &Request) -> Command {
    match req {
        Request::Heartbeat => Command::Heartbeat,
        Request::SealedHandshake { .. } | Request::Handshake(_) => Command::Handshake,
        Request::FastConnect(_) => Command::FastConnect,
        Request::Bind(_) => Command::Bind,
        Request::Unbind(_) => Command::Unbind,
        Request::Push { .. } => Command::Push,
        Request::Ack => Command::Ack,
        Request::HttpProxy(_) => Command::HttpProxy,
        Request::Malformed(c) | Request::Unsupported(c) => *c,
    }
}

fn as_key(v: &Option<Vec<u8>>) -> Option<[u8; AES_KEY_LEN]> {
    v.as_deref().and_then(|b| b.try_into().ok())
}
