//! GatewayPushResult: the JSON `data` of gateway OK/ERROR replies (spec §9.4).

use serde::Serialize;
use serde::ser::SerializeSeq;

use crate::clock::wall_ms;

/// Result details a gateway returns: the user, its client type and time points. Borrowed
/// and with static point names, so building one per push allocates only its point list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewayPushResult<'a> {
    /// The user.
    pub user_id: Option<&'a str>,
    /// Client type; omitted unless > 0 (as the original).
    #[serde(skip_serializing_if = "not_positive")]
    pub client_type: i32,
    /// Point names and epoch millis, written alternating (`["a", 1, "b", 2]`, as MPush).
    #[serde(serialize_with = "alternating")]
    pub time_points: Vec<(&'static str, i64)>,
}

fn not_positive(v: &i32) -> bool {
    *v <= 0
}

fn alternating<S: serde::Serializer>(
    points: &[(&'static str, i64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(points.len() * 2))?;
    for (name, ms) in points {
        seq.serialize_element(name)?;
        seq.serialize_element(ms)?;
    }
    seq.end()
}

impl<'a> GatewayPushResult<'a> {
    /// An empty result for `user_id`.
    pub(crate) fn new(user_id: &'a str, client_type: i32) -> Self {
        Self {
            user_id: Some(user_id),
            client_type,
            // A push records at most four points (begin, before-send, waiting-ack, end).
            time_points: Vec::with_capacity(4),
        }
    }

    /// Records a named time point now.
    pub(crate) fn point(&mut self, name: &'static str) {
        self.time_points.push((name, wall_ms()));
    }

    /// JSON text.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON keeps MPush's shape: camelCase, clientType only when positive, and the
    /// time points as one alternating name/millis array.
    #[test]
    fn json_shape() {
        let mut r = GatewayPushResult::new("u1", 2);
        r.time_points.push(("push-center-begin", 10));
        r.time_points.push(("success-end", 12));
        assert_eq!(
            r.to_json(),
            r#"{"userId":"u1","clientType":2,"timePoints":["push-center-begin",10,"success-end",12]}"#
        );
        let r = GatewayPushResult::new("u2", 0);
        assert_eq!(r.to_json(), r#"{"userId":"u2","timePoints":[]}"#);
    }
}
