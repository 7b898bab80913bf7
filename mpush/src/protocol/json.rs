//! JSON packets of the WebSocket transport (spec §1.9, §3.15), without I/O.
//!
//! A WebSocket text frame carries one object `{cmd, flags, sessionId, body}`. [`to_inbound`]
//! turns an inbound JSON packet into the typed request the session state machine takes (the
//! same machine TCP drives), and [`encode`] turns an outbound plain binary body into the JSON
//! keys of §3.15. [`to_packet`] gives the equivalent binary packet (for tests and tools).
//! There is no crypto and no compression here.

use serde_json::{Map, Value, json};

use super::ProtocolError;
use super::message::{BindUser, ErrorMessage, HandshakeRequest, Kick, Message, OkMessage};
use super::packet::{Command, Packet, flags};
use super::session::{Inbound, Request};

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

/// Turns an inbound JSON packet into the binary packet (plain body, no crypto/compress
/// flags, ACK bits kept) that the connection server's handlers decode. Commands without a
/// JSON mapping get an empty body; the caller rejects them before dispatch.
pub fn to_packet(p: &JsonPacket) -> Packet {
    let b = p.body.as_ref();
    let body: Vec<u8> = match p.cmd {
        Command::Handshake => HandshakeRequest {
            device_id: field(b, "deviceId"),
            os_name: field(b, "osName"),
            os_version: field(b, "osVersion"),
            client_version: field(b, "clientVersion"),
            ..HandshakeRequest::default()
        }
        .encode(),
        Command::Bind | Command::Unbind => BindUser {
            user_id: field(b, "userId"),
            data: field(b, "data"),
            tags: field(b, "tags"),
        }
        .encode(),
        Command::Push => field(b, "content").unwrap_or_default().into_bytes(),
        _ => Vec::new(),
    };
    Packet {
        flags: p.flags & flags::ACK_MASK,
        ..Packet::with_body(p.cmd, p.session_id, body)
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

/// Encodes an outbound packet as a JSON text frame. `plain` is the binary message body of
/// `cmd` before any crypto (as built for the TCP transport); it is re-expressed with the
/// §3.15 keys. `flags` keeps only the ACK bits, plus `JSON_BODY`.
pub fn encode(
    cmd: Command,
    session_id: i32,
    flags: u8,
    plain: &[u8],
) -> Result<String, ProtocolError> {
    let mut obj = Map::new();
    obj.insert("cmd".into(), json!(cmd.code()));
    obj.insert(
        "flags".into(),
        json!((flags & flags::ACK_MASK) | flags::JSON_BODY),
    );
    obj.insert("sessionId".into(), json!(session_id));
    let mut body = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            body.insert(k.into(), v);
        }
    };
    match cmd {
        Command::Ok => {
            let m = OkMessage::decode(plain)?;
            put("cmd", json!(m.cmd));
            if m.code != 0 {
                put("code", json!(m.code));
            }
            put("data", json!(m.data));
        }
        Command::Error => {
            let m = ErrorMessage::decode(plain)?;
            if m.cmd != 0 {
                put("cmd", json!(m.cmd));
            }
            if m.code != 0 {
                put("code", json!(m.code));
            }
            put("reason", json!(m.reason));
            put("data", json!(m.data));
        }
        Command::Kick => {
            let m = Kick::decode(plain)?;
            put("deviceId", json!(m.device_id));
            put("userId", json!(m.user_id));
        }
        Command::Push => {
            // Content is bytes on the wire but a string in JSON (§3.15): decode as UTF-8.
            put("content", json!(String::from_utf8_lossy(plain)));
        }
        // HandshakeOk and ACK carry no body on WebSocket.
        _ => {}
    }
    if !body.is_empty() {
        obj.insert("body".into(), Value::Object(body));
    }
    Ok(Value::Object(obj).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn decode_defaults_and_bind_mapping() {
        let p = decode(r#"{"cmd":5,"sessionId":3,"body":{"userId":"u1","tags":"a,b"}}"#).unwrap();
        assert_eq!((p.cmd, p.flags, p.session_id), (Command::Bind, 16, 3));
        let packet = to_packet(&p);
        let bind = BindUser::decode(&packet.body).unwrap();
        assert_eq!(bind.user_id.as_deref(), Some("u1"));
        assert_eq!(bind.tags.as_deref(), Some("a,b"));
        assert_eq!(packet.flags, 0);
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

    #[test]
    fn encode_push_ok_error() {
        let push = encode(Command::Push, 7, flags::AUTO_ACK | flags::CRYPTO, b"hi").unwrap();
        let v: Value = serde_json::from_str(&push).unwrap();
        assert_eq!(
            v,
            json!({"cmd":15,"flags":24,"sessionId":7,"body":{"content":"hi"}})
        );
        let ok = OkMessage {
            cmd: 5,
            code: 0,
            data: Some("bind success".into()),
        };
        let v: Value =
            serde_json::from_str(&encode(Command::Ok, 1, 0, &ok.encode()).unwrap()).unwrap();
        assert_eq!(v["body"], json!({"cmd":5,"data":"bind success"}));
        let err = ErrorMessage::with_reason(0, "x");
        let v: Value =
            serde_json::from_str(&encode(Command::Error, 1, 0, &err.encode()).unwrap()).unwrap();
        assert_eq!(v["body"], json!({"reason":"x"}));
        let ack = encode(Command::Ack, 9, 0, &[]).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&ack).unwrap(),
            json!({"cmd":23,"flags":16,"sessionId":9})
        );
    }
}
