//! Every cache key and MQ channel name mpush-rs reads or writes, in one place (spec §10, §11).
//!
//! The MPush names are shared with Java nodes of the same cluster and are written byte for
//! byte as MPush writes them, quirks included. The `mp:rust:*` names are mpush-rs's own
//! bookkeeping, which Java nodes neither read nor write.

/// What every [`user_route_key`] starts with.
pub const USER_ROUTE_PREFIX: &str = "mp:ur:";

/// The cache key of a user's routes: a hash, field = client type, value = ClientLocation JSON.
pub fn user_route_key(user_id: &str) -> String {
    format!("{USER_ROUTE_PREFIX}{user_id}")
}

/// The online-user sorted set of the servers sharing `public_ip`.
pub fn online_set_key(public_ip: &str) -> String {
    format!("mp:oul:{public_ip}")
}

/// Prefix of the reusable-session cache key.
const SESSION_PREFIX: &str = "mp:rs:";

/// The cache key under which the reusable session for `ticket` is stored (`mp:rs:<ticket>`).
pub fn session_cache_key(ticket: &str) -> String {
    format!("{SESSION_PREFIX}{ticket}")
}

/// The MQ channel of kick requests for the server whose gateway is `host:port`.
pub fn kick_channel(host: &str, port: i32) -> String {
    format!("/mpush/kick/{host}:{port}")
}

/// Channel on which userIds coming online are published.
pub const ONLINE_CHANNEL: &str = "/mpush/online/";
/// Channel on which userIds going offline are published.
pub const OFFLINE_CHANNEL: &str = "/mpush/offline/";

/// Progress hash of a broadcast task (no colon after `pt`: quirk Q21, kept for interop).
pub fn task_key(task_id: &str) -> String {
    format!("mp:pt{task_id}")
}

/// List of users a broadcast task reached (no `mp:` prefix: quirk Q21, kept).
pub fn task_success_key(task_id: &str) -> String {
    format!("{task_id}:sui")
}

/// The sorted set of users with a route to the server whose gateway is `host:port`.
///
/// Not an MPush key (Java nodes neither write nor read it): it lets the node that sees a
/// server leave the registry mark that server's routes offline without scanning every
/// `mp:ur:*` key. Members are user ids; scores are unused.
pub fn node_users_key(host: &str, port: i32) -> String {
    format!("mp:rust:nu:{host}:{port}")
}

/// The key whose absence tells the server whose gateway is `host:port` that the cache lost
/// its data (a Redis restart without persistence, a failover that missed writes, a FLUSHALL).
pub fn alive_marker_key(host: &str, port: u16) -> String {
    format!("mp:rust:alive:{host}:{port}")
}

/// Who is cleaning which dead server: field = its `host:port`, value = `<cleaner>|<ms>`.
pub const CLEANUP_CLAIMS: &str = "mp:rust:cleanup";

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact names of spec §10/§11 (and mpush-rs's own markers), so a move or a rename
    /// cannot change a byte that Java nodes or existing caches depend on.
    #[test]
    fn names_are_the_wire_names() {
        assert_eq!(user_route_key("u1"), "mp:ur:u1");
        assert_eq!(online_set_key("1.2.3.4"), "mp:oul:1.2.3.4");
        assert_eq!(session_cache_key("ab"), "mp:rs:ab");
        assert_eq!(kick_channel("10.0.0.5", 3001), "/mpush/kick/10.0.0.5:3001");
        assert_eq!(ONLINE_CHANNEL, "/mpush/online/");
        assert_eq!(OFFLINE_CHANNEL, "/mpush/offline/");
        assert_eq!(task_key("t9"), "mp:ptt9");
        assert_eq!(task_success_key("t9"), "t9:sui");
        assert_eq!(node_users_key("h", 3001), "mp:rust:nu:h:3001");
        assert_eq!(alive_marker_key("h", 3001), "mp:rust:alive:h:3001");
        assert_eq!(CLEANUP_CLAIMS, "mp:rust:cleanup");
    }
}
