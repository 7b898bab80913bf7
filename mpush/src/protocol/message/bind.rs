//! BIND / UNBIND (cmd 5 / 6, spec §3.5): "BindUserMessage".

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

/// Bind a user to the connection (or unbind it). Field order: userId, data, tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindUser {
    /// The user; required.
    pub user_id: Option<String>,
    /// Free data for the bind validator (`alias` in the Java client).
    pub data: Option<String>,
    /// Free-text tags used by broadcast filters.
    pub tags: Option<String>,
}

wire_fields!(BindUser {
    user_id: "userId",
    data: "data",
    tags: "tags"
});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bind_vector() {
        let m = BindUser {
            user_id: Some("user-1".into()),
            data: None,
            tags: Some("tag1".into()),
        };
        assert_eq!(
            m.encode(),
            hex::decode("0006757365722d310000000474616731").unwrap()
        );
    }
}
