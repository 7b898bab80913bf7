//! The message bodies of spec §3, one file per family. Each message encodes to and decodes
//! from a *plain* body (before compression/encryption, see [`super::body`]).

/// Implements [`Message`] for a struct from its fields in wire order, each with its Java
/// field name (the name a decode error gives): `wire_fields!(Kick { device_id: "deviceId",
/// user_id: "userId" });`. How a field is written and read is its type's [`WireField`]. The
/// names it uses (`Message`, `WireField`, `FieldWriter`, `FieldReader`, `ProtocolError`) are
/// the invoking module's imports.
macro_rules! wire_fields {
    ($ty:ident { $($field:ident: $name:literal),+ $(,)? }) => {
        impl Message for $ty {
            fn write(&self, w: &mut FieldWriter) {
                $(WireField::put(&self.$field, w);)+
            }

            fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
                // A struct expression evaluates its fields in the order written: wire order.
                Ok(Self {
                    $($field: WireField::get(r, $name)?,)+
                })
            }
        }
    };
}

mod bind;
mod fast_connect;
mod gateway;
mod handshake;
mod http;
mod kick;
mod ok_error;

pub use bind::BindUser;
pub use fast_connect::{FastConnectOk, FastConnectRequest};
pub use gateway::{GatewayKick, GatewayPush, GatewayTraceId};
pub use handshake::{HandshakeOk, HandshakeRequest};
pub use http::{HttpRequest, HttpResponse, decode_headers, encode_headers};
pub use kick::Kick;
pub use ok_error::{ErrorCode, ErrorMessage, OkMessage};

use super::ProtocolError;
use super::fields::{FieldReader, FieldWriter};

/// A message with a fixed field layout.
pub trait Message: Sized {
    /// Writes the fields in wire order.
    fn write(&self, w: &mut FieldWriter);
    /// Reads the fields in wire order.
    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError>;

    /// The plain body.
    fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new();
        self.write(&mut w);
        w.finish()
    }

    /// Parses a plain body. Trailing bytes are ignored, as the Java decoders do.
    fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        Self::read(&mut FieldReader::new(body))
    }
}

/// A field type's wire form (spec §1.7), what [`wire_fields!`] writes and reads per field.
trait WireField: Sized {
    /// Writes the value.
    fn put(&self, w: &mut FieldWriter);
    /// Reads a value; `field` names it in errors.
    fn get(r: &mut FieldReader<'_>, field: &'static str) -> Result<Self, ProtocolError>;
}

/// [`WireField`] for a type the field codec has a `put_*`/`get_*` pair for; `|v| arg` turns
/// the field `v` into what the `put_*` takes.
macro_rules! wire_field {
    ($ty:ty: $put:ident, $get:ident, |$v:ident| $arg:expr) => {
        impl WireField for $ty {
            fn put(&self, w: &mut FieldWriter) {
                let $v = self;
                w.$put($arg);
            }
            fn get(r: &mut FieldReader<'_>, field: &'static str) -> Result<Self, ProtocolError> {
                r.$get(field)
            }
        }
    };
}

wire_field!(i8: put_i8, get_i8, |v| *v);
wire_field!(i32: put_i32, get_i32, |v| *v);
wire_field!(i64: put_i64, get_i64, |v| *v);
wire_field!(Option<String>: put_string, get_string, |v| v.as_deref());
wire_field!(Option<Vec<u8>>: put_bytes, get_bytes, |v| v.as_deref());

/// A command byte: the same signed byte on the wire, read back as the unsigned command.
impl WireField for u8 {
    fn put(&self, w: &mut FieldWriter) {
        w.put_i8(*self as i8);
    }
    fn get(r: &mut FieldReader<'_>, field: &'static str) -> Result<Self, ProtocolError> {
        Ok(r.get_i8(field)? as u8)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn opt_string() -> impl Strategy<Value = Option<String>> {
        // "" decodes as None on the wire, so generate only None or non-empty.
        prop::option::of(".{1,40}")
    }

    fn opt_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::of(prop::collection::vec(any::<u8>(), 1..64))
    }

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let enc = m.encode();
        assert_eq!(M::decode(&enc).unwrap(), m);
    }

    proptest! {
        #[test]
        fn handshake(device in opt_string(), os in opt_string(), osv in opt_string(), cv in opt_string(),
                     iv in opt_bytes(), key in opt_bytes(), min in any::<i32>(), max in any::<i32>(), ts in any::<i64>()) {
            round_trip(HandshakeRequest { device_id: device, os_name: os, os_version: osv, client_version: cv,
                iv, client_key: key, min_heartbeat: min, max_heartbeat: max, timestamp: ts });
        }

        #[test]
        fn handshake_ok(key in opt_bytes(), hb in any::<i32>(), sid in opt_string(), exp in any::<i64>()) {
            round_trip(HandshakeOk { server_key: key, heartbeat: hb, session_id: sid, expire_time: exp });
        }

        #[test]
        fn fast_connect(sid in opt_string(), dev in opt_string(), min in any::<i32>(), max in any::<i32>(), hb in any::<i32>()) {
            round_trip(FastConnectRequest { session_id: sid, device_id: dev, min_heartbeat: min, max_heartbeat: max });
            round_trip(FastConnectOk { heartbeat: hb });
        }

        #[test]
        fn bind_kick(u in opt_string(), d in opt_string(), t in opt_string()) {
            round_trip(BindUser { user_id: u.clone(), data: d.clone(), tags: t });
            round_trip(Kick { device_id: d, user_id: u });
        }

        #[test]
        fn ok_error(cmd in any::<u8>(), code in any::<i8>(), a in opt_string(), b in opt_string()) {
            round_trip(OkMessage { cmd, code, data: a.clone() });
            round_trip(ErrorMessage { cmd, code, reason: a, data: b });
        }

        #[test]
        fn http(m in any::<i8>(), uri in opt_string(), body in opt_bytes(), status in any::<i32>(), reason in opt_string(),
                headers in prop::collection::btree_map("[a-zA-Z-]{1,10}", "[a-z0-9 ]{1,10}", 0..4)) {
            let headers: Vec<(String, String)> = headers.into_iter().collect();
            round_trip(HttpRequest { method: m, uri, headers: headers.clone(), body: body.clone() });
            round_trip(HttpResponse { status_code: status, reason_phrase: reason, headers, body });
        }

        #[test]
        fn gateway(u in opt_string(), ct in any::<i32>(), to in any::<i32>(), content in opt_bytes(), task in opt_string(),
                   tags in prop::option::of(prop::collection::btree_set("[a-z,\"\\\\ ]{1,8}", 1..4)), cond in opt_string(),
                   dev in opt_string(), conn in opt_string(), srv in opt_string(), port in any::<i32>()) {
            round_trip(GatewayPush { user_id: u.clone(), client_type: ct, timeout: to, content, task_id: task,
                tags: tags.map(|s| s.into_iter().collect()), condition: cond });
            round_trip(GatewayKick { user_id: u, device_id: dev, conn_id: conn, client_type: ct, target_server: srv, target_port: port });
        }

        #[test]
        fn decoders_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = HandshakeRequest::decode(&body);
            let _ = HandshakeOk::decode(&body);
            let _ = FastConnectRequest::decode(&body);
            let _ = FastConnectOk::decode(&body);
            let _ = BindUser::decode(&body);
            let _ = OkMessage::decode(&body);
            let _ = ErrorMessage::decode(&body);
            let _ = Kick::decode(&body);
            let _ = HttpRequest::decode(&body);
            let _ = HttpResponse::decode(&body);
            let _ = GatewayPush::decode(&body);
            let _ = GatewayKick::decode(&body);
        }
    }
}
