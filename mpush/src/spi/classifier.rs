//! `ClientClassifier`: maps a device's `osName` to a client type (spec §8.1).

pub use crate::protocol::ClientType;

/// Client type codes of the default classifier (the constants of [`ClientType`]).
pub(super) mod client_types {
    use super::ClientType;
    /// Phones: android, ios.
    pub(crate) const MOBILE: ClientType = ClientType::MOBILE;
    /// Desktops: windows, mac, linux.
    pub(crate) const PC: ClientType = ClientType::PC;
    /// Browsers: web, h5.
    pub(crate) const WEB: ClientType = ClientType::WEB;
    /// Anything else (all unknown OSes share this slot).
    pub(crate) const UNKNOWN: ClientType = ClientType::UNKNOWN;
}

/// Decides the client type of a connection from its handshake's `osName`.
///
/// Must be pure and fast (called on every bind and for every Redis route read), and must
/// give the same answer on every node of a cluster.
pub trait ClientClassifier: Send + Sync + 'static {
    /// The client type for `os_name` (`None` when the client sent none).
    fn classify(&self, os_name: Option<&str>) -> ClientType;
}

/// MPush's classifier: lower-cased substring match, first match wins, in the order
/// MOBILE (android, ios), PC (windows, mac, linux), WEB (web, h5). A missing osName is
/// UNKNOWN (the original crashes, quirk Q15).
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultClientClassifier;

impl ClientClassifier for DefaultClientClassifier {
    fn classify(&self, os_name: Option<&str>) -> ClientType {
        const TABLE: [(ClientType, &[&str]); 3] = [
            (client_types::MOBILE, &["android", "ios"]),
            (client_types::PC, &["windows", "mac", "linux"]),
            (client_types::WEB, &["web", "h5"]),
        ];
        let Some(os) = os_name else {
            return client_types::UNKNOWN;
        };
        let os = os.to_ascii_lowercase();
        TABLE
            .iter()
            .find(|(_, keys)| keys.iter().any(|k| os.contains(k)))
            .map_or(client_types::UNKNOWN, |(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_like_mpush() {
        let c = DefaultClientClassifier;
        assert_eq!(c.classify(Some("Android")), client_types::MOBILE);
        assert_eq!(c.classify(Some("iOS")), client_types::MOBILE);
        assert_eq!(c.classify(Some("Windows 10")), client_types::PC);
        assert_eq!(c.classify(Some("macOS")), client_types::PC);
        assert_eq!(c.classify(Some("Linux")), client_types::PC);
        assert_eq!(c.classify(Some("web")), client_types::WEB);
        assert_eq!(c.classify(Some("H5")), client_types::WEB);
        assert_eq!(c.classify(Some("tizen")), client_types::UNKNOWN);
        assert_eq!(c.classify(None), client_types::UNKNOWN);
        // first match wins: "ios" is checked before "web"
        assert_eq!(c.classify(Some("ios-webview")), client_types::MOBILE);
    }

    /// The codes of spec §8.1, and the decimal form of the Redis route field both ways.
    #[test]
    fn codes_and_redis_field_form() {
        assert_eq!(
            [
                ClientType::MOBILE,
                ClientType::PC,
                ClientType::WEB,
                ClientType::UNKNOWN
            ]
            .map(i32::from),
            [1, 2, 3, -1]
        );
        assert_eq!(ClientType::UNKNOWN.to_string(), "-1");
        assert_eq!(ClientType::WEB.to_string(), "3");
        assert_eq!("-1".parse::<ClientType>(), Ok(ClientType::UNKNOWN));
        assert_eq!("2".parse::<ClientType>(), Ok(ClientType::PC));
        assert!("two".parse::<ClientType>().is_err());
        assert_eq!(ClientType::from(7).code(), 7);
        assert_eq!(ClientType::default(), ClientType::NONE);
    }
}
