//! JSON packets of the WebSocket transport (spec §1.9, §3.15), without I/O.
//!
//! A WebSocket text frame carries one object `{cmd, flags, sessionId, body}`. [`to_inbound`]
//! turns an inbound JSON packet into the typed request the session state machine takes (the
//! same machine TCP drives); [`encode_out`], [`encode_push`] and [`encode_kick`] build the
//! outbound text frames with the keys of §3.15 straight from the session's replies and the
//! server's messages (no binary body in between). There is no crypto and no compression here.

use serde_json::{Map, Value, json};

use super::ProtocolError;
use super::message::{BindUser, ErrorMessage, HandshakeRequest, Kick, OkMessage};
use super::packet::{Command, flags};
use super::session::{Inbound, Out, Request};

/// One decoded WebSocket JSON packet.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPacket {
    /// The command.
    pub cmd: Command,
    /// Flags; 16 (`JSON_BODY`) when the client omitted them.
    pub flags: u8,
    /// Request id (or push id for an ACK).
    pub session_id: i32,
    /// The body object, if present and not null.
    pub body: Option<Map<String, Value>>,
}

fn bad(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::Json(reason.into())
}

/// Parses one text frame. Rejects non-objects, a missing or out-of-range `cmd`, and a
/// non-empty body without the `JSON_BODY` flag (the original crashes on it and closes).
pub fn decode(text: &str) -> Result<JsonPacket, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("not a JSON object"));
    };
    let int = |v: Option<&Value>, name: &str| -> Result<Option<i64>, ProtocolError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(format!("{name} is not an integer"))),
        }
    };
    let cmd = int(obj.get("cmd"), "cmd")?.ok_or_else(|| bad("missing cmd"))?;
    let cmd = u8::try_from(cmd).map_err(|_| bad(format!("cmd {cmd} out of range")))?;
    let flags = match int(obj.get("flags"), "flags")? {
        Some(f) => u8::try_from(f).map_err(|_| bad(format!("flags {f} out of range")))?,
        None => flags::JSON_BODY,
    };
    let session_id = int(obj.get("sessionId"), "sessionId")?.unwrap_or(0);
    // Java reads it as an int: out-of-range ids wrap as they would there.
    let session_id = session_id as i32;
    let body = match obj.remove("body") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(bad("body is not an object")),
    };
    if body.as_ref().is_some_and(|b| !b.is_empty()) && flags & flags::JSON_BODY == 0 {
        return Err(bad("body without the JSON_BODY flag"));
    }
    Ok(JsonPacket {
        cmd: Command::from_code(cmd),
        flags,
        session_id,
        body,
    })
}

/// A string field of a body (numbers and booleans are accepted as their text, as Java's
/// JSON binding does; null and absent are `None`).
fn field(body: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    match body?.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Turns an inbound JSON packet into the typed request the session state machine takes
/// (no binary round trip). Commands the WebSocket transport does not serve (heartbeat, fast
/// connect, anything but handshake, bind, unbind, push and ack) are
/// [`Request::Unsupported`]: ERROR 101 and close, as the original.
pub fn to_inbound(p: &JsonPacket) -> Inbound {
    let b = p.body.as_ref();
    let bind_user = || BindUser {
        user_id: field(b, "userId"),
        data: field(b, "data"),
        tags: field(b, "tags"),
    };
    let req = match p.cmd {
        Command::Handshake => Request::Handshake(HandshakeRequest {
            device_id: field(b, "deviceId"),
            os_name: field(b, "osName"),
            os_version: field(b, "osVersion"),
            client_version: field(b, "clientVersion"),
            ..HandshakeRequest::default()
        }),
        Command::Bind => Request::Bind(bind_user()),
        Command::Unbind => Request::Unbind(bind_user()),
        Command::Push => Request::Push {
            flags: p.flags & flags::ACK_MASK,
            content: field(b, "content").unwrap_or_default().into_bytes().into(),
        },
        Command::Ack => Request::Ack,
        other => Request::Unsupported(other),
    };
    Inbound {
        sid: p.session_id,
        req,
    }
}

/// One outbound frame: `{body?, cmd, flags, sessionId}` with `flags` = the ACK bits plus
/// `JSON_BODY`, and `body` omitted when it has no key. Keys come out in alphabetical order,
/// nulls are never written: the bytes the Java server's serialiser produces (less its
/// `bodyLength` artefact, §1.9).
fn frame(cmd: Command, session_id: i32, packet_flags: u8, body: Map<String, Value>) -> String {
    let mut obj = Map::new();
    obj.insert("cmd".into(), json!(cmd.code()));
    obj.insert(
        "flags".into(),
        json!((packet_flags & flags::ACK_MASK) | flags::JSON_BODY),
    );
    obj.insert("sessionId".into(), json!(session_id));
    if !body.is_empty() {
        obj.insert("body".into(), Value::Object(body));
    }
    Value::Object(obj).to_string()
}

/// A body from `(key, value)` pairs, leaving out the `None`s.
fn body<const N: usize>(fields: [(&str, Option<Value>); N]) -> Map<String, Value> {
    fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
}

/// The JSON text frame of a session reply (§3.15), built from the reply itself.
pub fn encode_out(out: &Out) -> String {
    match out {
        // No keys, no ticket, no heartbeat on WebSocket: HandshakeOk has no body (a TCP
        // HandshakeOk's sealed body has no JSON form and is not sent here).
        Out::HandshakeOk { sid, .. } => frame(Command::Handshake, *sid, 0, Map::new()),
        Out::FastConnectOk { sid, heartbeat_ms } => frame(
            Command::FastConnect,
            *sid,
            0,
            body([("heartbeat", Some(json!(heartbeat_ms)))]),
        ),
        Out::Ok { sid, cmd, data } => encode_ok(
            *sid,
            &OkMessage {
                cmd: cmd.code(),
                code: 0,
                data: Some((*data).to_string()),
            },
        ),
        Out::Error { sid, msg } => encode_error(*sid, msg),
        Out::Ack { sid } => frame(Command::Ack, *sid, 0, Map::new()),
    }
}

/// An OK frame: `code` omitted when 0, `data` when absent.
pub fn encode_ok(session_id: i32, msg: &OkMessage) -> String {
    frame(
        Command::Ok,
        session_id,
        0,
        body([
            ("cmd", Some(json!(msg.cmd))),
            ("code", (msg.code != 0).then(|| json!(msg.code))),
            ("data", msg.data.as_ref().map(|d| json!(d))),
        ]),
    )
}

/// An ERROR frame: `cmd` and `code` omitted when 0, `reason` and `data` when absent.
pub fn encode_error(session_id: i32, msg: &ErrorMessage) -> String {
    frame(
        Command::Error,
        session_id,
        0,
        body([
            ("cmd", (msg.cmd != 0).then(|| json!(msg.cmd))),
            ("code", (msg.code != 0).then(|| json!(msg.code))),
            ("reason", msg.reason.as_ref().map(|r| json!(r))),
            ("data", msg.data.as_ref().map(|d| json!(d))),
        ]),
    )
}

/// A KICK frame: `{deviceId, userId}`.
pub fn encode_kick(session_id: i32, msg: &Kick) -> String {
    frame(
        Command::Kick,
        session_id,
        0,
        body([
            ("deviceId", msg.device_id.as_ref().map(|d| json!(d))),
            ("userId", msg.user_id.as_ref().map(|u| json!(u))),
        ]),
    )
}

/// A PUSH frame. The content is bytes on the wire but a string in JSON (§3.15): it is decoded
/// as UTF-8 (invalid sequences become U+FFFD, as Java's `new String(bytes, UTF_8)`). Only the
/// ACK bits of `packet_flags` are kept.
pub fn encode_push(session_id: i32, packet_flags: u8, content: &[u8]) -> String {
    frame(
        Command::Push,
        session_id,
        packet_flags,
        body([("content", Some(json!(String::from_utf8_lossy(content))))]),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn decode_defaults_and_bind_mapping() {
        let p = decode(r#"{"cmd":5,"sessionId":3,"body":{"userId":"u1","tags":"a,b"}}"#).unwrap();
        assert_eq!((p.cmd, p.flags, p.session_id), (Command::Bind, 16, 3));
        let inbound = to_inbound(&p);
        assert_eq!(inbound.sid, 3);
        let Request::Bind(bind) = inbound.req else {
            panic!("not a bind: {:?}", inbound.req);
        };
        assert_eq!(bind.user_id.as_deref(), Some("u1"));
        assert_eq!(bind.tags.as_deref(), Some("a,b"));
        assert_eq!(bind.data, None);
    }

    #[test]
    fn upstream_push_keeps_only_the_ack_bits() {
        let p = decode(r#"{"cmd":15,"flags":24,"sessionId":9,"body":{"content":"up"}}"#).unwrap();
        let Request::Push { flags, content } = to_inbound(&p).req else {
            panic!("not a push");
        };
        assert_eq!((flags, &content[..]), (flags::AUTO_ACK, &b"up"[..]));
        let p = decode(r#"{"cmd":7,"sessionId":1}"#).unwrap();
        assert_eq!(
            to_inbound(&p).req,
            Request::Unsupported(Command::FastConnect)
        );
    }

    #[test]
    fn decode_rejects_garbage() {
        for bad in [
            "nope",
            "[1]",
            r#"{"flags":16}"#,
            r#"{"cmd":300}"#,
            r#"{"cmd":5,"flags":0,"body":{"userId":"u"}}"#,
            r#"{"cmd":5,"body":"x"}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    /// Exact bytes: keys alphabetical, nulls and zero codes omitted, as the Java server.
    #[test]
    fn replies_are_the_java_servers_bytes() {
        let out = |o: Out| encode_out(&o);
        assert_eq!(
            out(Out::HandshakeOk { sid: 1, body: None }),
            r#"{"cmd":2,"flags":16,"sessionId":1}"#
        );
        assert_eq!(
            out(Out::Ok {
                sid: 2,
                cmd: Command::Bind,
                data: "bind success"
            }),
            r#"{"body":{"cmd":5,"data":"bind success"},"cmd":11,"flags":16,"sessionId":2}"#
        );
        assert_eq!(
            out(Out::Error {
                sid: 5,
                msg: ErrorMessage::from_code(1, super::super::message::ErrorCode::UnsupportedCmd)
            }),
            r#"{"body":{"cmd":1,"code":101,"reason":"unsupported command"},"cmd":10,"flags":16,"sessionId":5}"#
        );
        assert_eq!(
            out(Out::Error {
                sid: 0,
                msg: ErrorMessage::with_reason(0, "x")
            }),
            r#"{"body":{"reason":"x"},"cmd":10,"flags":16,"sessionId":0}"#
        );
        assert_eq!(
            out(Out::Ack { sid: 77 }),
            r#"{"cmd":23,"flags":16,"sessionId":77}"#
        );
        assert_eq!(
            encode_ok(
                4,
                &OkMessage {
                    cmd: 16,
                    code: 0,
                    data: None
                }
            ),
            r#"{"body":{"cmd":16},"cmd":11,"flags":16,"sessionId":4}"#
        );
    }

    #[test]
    fn pushes_and_kicks() {
        assert_eq!(
            encode_push(7, flags::AUTO_ACK | flags::CRYPTO, "h\u{e9}\n\"".as_bytes()),
            r#"{"body":{"content":"hé\n\""},"cmd":15,"flags":24,"sessionId":7}"#
        );
        // Invalid UTF-8 is replaced, never an error.
        let v: Value = serde_json::from_str(&encode_push(8, 0, &[0x66, 0xff])).unwrap();
        assert_eq!(v["body"]["content"], "f\u{fffd}");
        assert_eq!(v["flags"], 16);
        let kick = Kick {
            device_id: Some("d1".into()),
            user_id: Some("u1".into()),
        };
        assert_eq!(
            encode_kick(0, &kick),
            r#"{"body":{"deviceId":"d1","userId":"u1"},"cmd":13,"flags":16,"sessionId":0}"#
        );
        // One frame per line in the shared outbound buffer: compact JSON has no newline.
        assert!(!encode_push(1, 0, b"a\nb").contains('\n'));
    }
}
