//! Unit tests of the PEM loading and the reload stamps.

use super::*;

fn write_cert(dir: &Path, name: &str) -> TlsListenerConfig {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    TlsListenerConfig {
        cert: cert_path.display().to_string(),
        key: key_path.display().to_string(),
        client_ca: String::new(),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpush-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn loads_and_reloads_only_on_change() {
    let dir = temp_dir("reload");
    let files = write_cert(&dir, "a");
    let tls = ReloadableTls::load(&files).expect("load");
    assert!(!tls.reload_if_changed(false).expect("unchanged"));
    assert!(tls.reload_if_changed(true).expect("forced"));
    std::fs::write(&files.cert, "not pem").expect("overwrite");
    // A broken file keeps the old config and reports why.
    let err = tls.reload_if_changed(true).expect_err("broken cert");
    assert!(err.to_string().contains("a.crt"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_files_name_the_file() {
    let files = TlsListenerConfig {
        cert: "/nonexistent/c.pem".into(),
        key: "/nonexistent/k.pem".into(),
        client_ca: String::new(),
    };
    let err = ReloadableTls::load(&files).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
}

#[test]
fn server_names_from_addresses() {
    assert!(matches!(
        server_name("127.0.0.1:3000", ""),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("[::1]:3000", ""),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("a:1", "push.example"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(server_name("x:1", "bad name!").is_err());
}
