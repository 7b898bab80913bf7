//! GatewayPushResult: the JSON `data` of gateway OK/ERROR replies (spec §9.4).

use serde::{Deserialize, Serialize};

use crate::clock::wall_ms;

/// Result details a gateway returns: the user, its client type and time points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewayPushResult {
    /// The user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Client type; omitted unless > 0 (as the original).
    #[serde(default, skip_serializing_if = "not_positive")]
    pub client_type: i32,
    /// Alternating point name and epoch millis.
    #[serde(default)]
    pub time_points: Vec<serde_json::Value>,
}

fn not_positive(v: &i32) -> bool {
    *v <= 0
}

impl GatewayPushResult {
    /// An empty result for `user_id`.
    pub(crate) fn new(user_id: &str, client_type: i32) -> Self {
        Self {
            user_id: Some(user_id.to_string()),
            client_type,
            time_points: Vec::new(),
        }
    }

    /// Records a named time point now.
    pub(crate) fn point(&mut self, name: &str) {
        self.time_points.push(name.into());
        self.time_points.push(wall_ms().into());
    }

    /// JSON text.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
