//! GatewayPushResult: the JSON `data` of gateway OK/ERROR replies (spec §9.4).

use serde::Serialize;
use serde::ser::SerializeSeq;
use smallvec::SmallVec;

use crate::clock::wall_ms;

/// Result details a gateway returns: the user, its client type and time points. Borrowed,
/// with static point names and the points inline, so building one allocates nothing.
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
    pub time_points: SmallVec<[(&'static str, i64); 4]>,
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
            // Inline: a push records at most four points (begin, before-send, waiting-ack,
            // end), so building a result allocates nothing.
            time_points: SmallVec::new(),
        }
    }

    /// Records a named time point now.
    pub(crate) fn point(&mut self, name: &'static str) {
        self.time_points.push((name, wall_ms()));
    }

    /// JSON text.
    pub(crate) fn to_json(&self) -> String {
        // Sized for a user id of a few dozen bytes and four points (≈ 130 bytes), so the
        // text is written without growing; serde_json's own start is 128.
        let mut out = Vec::with_capacity(192);
        if serde_json::to_writer(&mut out, self).is_err() {
            return String::new();
        }
        // serde_json writes only UTF-8.
        String::from_utf8(out).unwrap_or_default()
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

    /// More points than fit inline are all kept.
    #[test]
    fn a_fifth_point_is_kept() {
        let mut r = GatewayPushResult::new("u", 0);
        for (i, name) in ["a", "b", "c", "d", "end"].into_iter().enumerate() {
            r.time_points.push((name, i as i64));
        }
        assert_eq!(
            r.to_json(),
            r#"{"userId":"u","timePoints":["a",0,"b",1,"c",2,"d",3,"end",4]}"#
        );
    }
}
