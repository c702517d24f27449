//! TLS failures name their cause, and certificate expiry is reported.
//!
//! Each case gets a certificate made for it (rcgen): expired, not yet
//! valid, for another name, without the extended key usage its role needs,
//! from an unknown CA; and peers that share no TLS version or cipher suite
//! with keybridge (`openssl s_server`). Peers are real: a rustls server in
//! this file, OpenSSL, the real PyKMIP server (KEYBRIDGE_TEST_KMIP_SERVER)
//! and `keybridge serve`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use keybridge::config::{Config, KmipConfig, KmsConfig};
use keybridge_kms::kmip::client::KmipClient;
use rcgen::ExtendedKeyUsagePurpose as Eku;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_keybridge");
const DAY: i64 = 86_400;

/// A test CA that signs leaves.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(cn: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        params.not_before = at(-DAY);
        params.not_after = at(3650 * DAY - 3600);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: rcgen::Issuer::new(params, key), pem }
    }

    /// The CA that scripts/kmip-certs made for PyKMIP (its key included).
    fn pykmip() -> Ca {
        let pki = common::kmip::pki();
        let pem = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
        Ca { issuer: rcgen::Issuer::from_ca_cert_pem(&pem, key).unwrap(), pem }
    }

    /// A leaf for `names` with `eku`, valid from `from` to `until` seconds
    /// from now: (certificate PEM, key PEM).
    fn leaf(&self, cn: &str, names: &[&str], eku: &[Eku], from: i64, until: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = eku.to_vec();
        params.use_authority_key_identifier_extension = true;
        params.not_before = at(from);
        params.not_after = at(until);
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

fn at(offset: i64) -> OffsetDateTime {
    let t = OffsetDateTime::now_utc() + time::Duration::seconds(offset);
    t.replace_nanosecond(0).unwrap()
}

/// Write `name.crt` / `name.key` (and the CA as `name-ca.crt` when given).
fn write(dir: &Path, name: &str, pair: &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, &pair.0).unwrap();
    std::fs::write(&k, &pair.1).unwrap();
    (c, k)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls server with `leaf`, asking for a client certificate from
/// `client_ca` when given; it completes handshakes and then waits. Its
/// address.
async fn rustls_server(leaf: &(String, String), client_ca: Option<&Ca>) -> (String, tokio::task::JoinHandle<()>) {
    let certs = CertificateDer::pem_slice_iter(leaf.0.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.1.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
            builder.with_client_cert_verifier(rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap())
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake sends its alert and ends here.
                let Ok(s) = acceptor.accept(s).await else { return };
                tokio::time::sleep(Duration::from_secs(20)).await;
                drop(s);
            });
        }
    });
    (addr, task)
}

/// A KMIP configuration for `server` trusting `ca` with client `cert`/`key`.
fn kmip_config(dir: &Path, server: &str, ca: &Path, cert: &Path, key: &Path, extra: &str) -> KmipConfig {
    let text = format!(
        "[catalog]\npath = \"x.db\"\n[[kms]]\nname = \"appliance\"\nkind = \"kmip\"\nservers = [\"{server}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nconnect_timeout_secs = 5\ntimeout_secs = 5\n{extra}",
        ca.display(),
        cert.display(),
        key.display()
    );
    match Config::parse(&text, &dir.join("keybridge.toml")).unwrap().kms.remove(0) {
        KmsConfig::Kmip(c) => c,
        _ => unreachable!(),
    }
}

/// The error of a first KMIP request (negotiation) with `config`.
async fn kmip_error(config: &KmipConfig) -> String {
    let client = KmipClient::new(config).unwrap();
    let err = client.facts().await.expect_err("the connection must fail").to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");
    err
}

#[track_caller]
fn has(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
}

/// keybridge's KMIP client against servers whose certificates are wrong in
/// one way each, and servers that refuse keybridge's client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmip_client_names_each_certificate_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kmip test CA");
    let other = Ca::new("some other CA");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (cert, key) = write(dir.path(), "client", &ca.leaf("keybridge", &[], &[Eku::ClientAuth], -DAY, 365 * DAY));
    let ip = ["127.0.0.1"];
    let cases: Vec<(&str, (String, String), Vec<&str>)> = vec![
        (
            "expired",
            ca.leaf("kmip", &ip, &[Eku::ServerAuth], -40 * DAY, -10 * DAY),
            vec!["certificate expired: the server presented a certificate that expired 10 days ago", "the server needs a renewed certificate"],
        ),
        (
            "not yet valid",
            ca.leaf("kmip", &ip, &[Eku::ServerAuth], 5 * DAY + 3600, 40 * DAY),
            vec!["certificate not yet valid: the server presented a certificate that is valid only from", "(5 days from now", "check the clocks"],
        ),
        (
            "wrong SAN",
            ca.leaf("kmip", &["kmip.example", "10.9.8.7"], &[Eku::ServerAuth], -DAY, 40 * DAY),
            vec!["certificate name mismatch: the server presented a certificate for DNS:kmip.example, IP:10.9.8.7, not for '127.0.0.1'", "set `server_name` in [[kms]] 'appliance'"],
        ),
        (
            "clientAuth only",
            ca.leaf("kmip", &ip, &[Eku::ClientAuth], -DAY, 40 * DAY),
            vec!["certificate not for this use: the server presented a certificate whose extendedKeyUsage allows client authentication, not server authentication", "extendedKeyUsage serverAuth"],
        ),
        (
            "unknown CA",
            other.leaf("kmip", &ip, &[Eku::ServerAuth], -DAY, 40 * DAY),
            vec!["unknown CA: the server presented a certificate that no CA in the `ca` file", "ca.crt of [[kms]] 'appliance' signed"],
        ),
    ];
    for (case, leaf, needles) in cases {
        let (addr, task) = rustls_server(&leaf, None).await;
        let err = kmip_error(&kmip_config(dir.path(), &addr, &ca_file, &cert, &key, "")).await;
        eprintln!("{case}: {err}");
        has(&err, &needles);
        task.abort();
    }

    // The server asks for a client certificate and refuses keybridge's
    // (TLS 1.3: the alert arrives after keybridge's side of the handshake).
    let server = ca.leaf("kmip", &ip, &[Eku::ServerAuth], -DAY, 40 * DAY);
    let (addr, task) = rustls_server(&server, Some(&ca)).await;
    let clients: Vec<(&str, (String, String), Vec<&str>)> = vec![
        (
            "expired client",
            ca.leaf("keybridge", &[], &[Eku::ClientAuth], -40 * DAY, -3 * DAY),
            vec!["client certificate refused: the server refused keybridge's client certificate", "with TLS alert certificate_expired", "keybridge's certificate expired 3 days ago"],
        ),
        (
            "serverAuth-only client",
            ca.leaf("keybridge", &[], &[Eku::ServerAuth], -DAY, 40 * DAY),
            vec!["with TLS alert unsupported_certificate", "lacks clientAuth (extendedKeyUsage serverAuth)", "reissue it with extendedKeyUsage clientAuth"],
        ),
        ("client from another CA", other.leaf("keybridge", &[], &[Eku::ClientAuth], -DAY, 40 * DAY), vec!["with TLS alert unknown_ca", "does not trust the CA that issued the certificate"]),
    ];
    for (case, leaf, needles) in clients {
        let (cert, key) = write(dir.path(), "refused", &leaf);
        let err = kmip_error(&kmip_config(dir.path(), &addr, &ca_file, &cert, &key, "")).await;
        eprintln!("{case}: {err}");
        has(&err, &needles);
        has(&err, &["refused.crt (`cert` of [[kms]] 'appliance')"]);
    }
    task.abort();
}

/// An `openssl s_server` with `args`, serving `cert`/`key` on a free port.
struct OpenSsl(Child, String);

impl OpenSsl {
    fn start(cert: &Path, key: &Path, args: &[&str]) -> OpenSsl {
        let port = common::free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl (scripts/install-deps installs it)");
        // Dropped (killed and reaped) if it never listens.
        let server = OpenSsl(child, format!("127.0.0.1:{port}"));
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("openssl s_server {args:?} did not listen");
    }
}

impl Drop for OpenSsl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Servers that share no TLS version, or no cipher suite, with keybridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmip_client_names_version_and_cipher_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kmip test CA");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (cert, key) = write(dir.path(), "client", &ca.leaf("keybridge", &[], &[Eku::ClientAuth], -DAY, 365 * DAY));
    let (scert, skey) = write(dir.path(), "server", &ca.leaf("kmip", &["127.0.0.1"], &[Eku::ServerAuth], -DAY, 365 * DAY));

    // TLS 1.1 and 1.0 only (OpenSSL 3 allows them at security level 0).
    let old = OpenSsl::start(&scert, &skey, &["-no_tls1_3", "-no_tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    let err = kmip_error(&kmip_config(dir.path(), &old.1, &ca_file, &cert, &key, "")).await;
    eprintln!("old TLS: {err}");
    has(&err, &["no TLS version in common", "TLS 1.3 and 1.2", "enable TLS 1.2 or 1.3 on the server"]);

    // TLS 1.2 with CBC suites only, which rustls does not implement.
    let cbc = OpenSsl::start(&scert, &skey, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA"]);
    let err = kmip_error(&kmip_config(dir.path(), &cbc.1, &ca_file, &cert, &key, "")).await;
    eprintln!("CBC only: {err}");
    has(&err, &["no cipher suite in common", "handshake_failure", "ECDHE-RSA-AES-GCM"]);
}

/// Against the real PyKMIP server (OpenSSL): client certificates it
/// refuses, each for its own reason, and a server name its certificate
/// does not carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pykmip_refusals_name_their_cause() {
    let Some(server) = common::kmip::shared_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = common::kmip::pki();
    let ca = Ca::pykmip();
    let ca_file = pki.join("ca.crt");
    let cases: Vec<(&str, (String, String), Vec<&str>)> = vec![
        (
            "expired client",
            ca.leaf("keybridge-test", &[], &[Eku::ClientAuth], -40 * DAY, -2 * DAY),
            vec!["with TLS alert certificate_expired", "keybridge's certificate expired 2 days ago", "renew it"],
        ),
        ("not yet valid client", ca.leaf("keybridge-test", &[], &[Eku::ClientAuth], 3 * DAY, 40 * DAY), vec!["with TLS alert bad_certificate", "not yet valid", "not valid until"]),
        (
            "serverAuth-only client",
            ca.leaf("keybridge-test", &[], &[Eku::ServerAuth], -DAY, 40 * DAY),
            vec!["with TLS alert unsupported_certificate", "lacks clientAuth (extendedKeyUsage serverAuth)"],
        ),
    ];
    for (case, leaf, needles) in cases {
        let (cert, key) = write(dir.path(), "pykmip-client", &leaf);
        let err = kmip_error(&kmip_config(dir.path(), &server, &ca_file, &cert, &key, "")).await;
        eprintln!("{case}: {err}");
        has(&err, &["client certificate refused: the server refused keybridge's client certificate"]);
        has(&err, &needles);
    }
    // PyKMIP's certificate names 127.0.0.1 and localhost.
    let err = kmip_error(&kmip_config(dir.path(), &server, &ca_file, &pki.join("client.crt"), &pki.join("client.key"), "server_name = \"kmip.example.com\"\n")).await;
    has(&err, &["certificate name mismatch", "for IP:127.0.0.1, DNS:localhost, not for 'kmip.example.com'", "`server_name = \"kmip.example.com\"` of [[kms]] 'appliance' must be one of those names"]);
}

/// The backup client (keybridge-client) against a service whose
/// certificate is wrong: the same causes, pointing at --ca and the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_client_names_each_certificate_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("service test CA");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let cases: Vec<(&str, (String, String), Vec<&str>)> = vec![
        ("expired", ca.leaf("svc", &["127.0.0.1"], &[Eku::ServerAuth], -40 * DAY, -10 * DAY), vec!["certificate expired: the server presented a certificate that expired 10 days ago"]),
        (
            "wrong SAN",
            ca.leaf("svc", &["backup.example"], &[Eku::ServerAuth], -DAY, 40 * DAY),
            vec!["certificate name mismatch: the server presented a certificate for DNS:backup.example, not for '127.0.0.1'", "use a URL whose host is one of those names"],
        ),
        ("clientAuth only", ca.leaf("svc", &["127.0.0.1"], &[Eku::ClientAuth], -DAY, 40 * DAY), vec!["certificate not for this use", "extendedKeyUsage serverAuth"]),
        ("unknown CA", Ca::new("other").leaf("svc", &["127.0.0.1"], &[Eku::ServerAuth], -DAY, 40 * DAY), vec!["unknown CA", "--ca / KEYBRIDGE_CA"]),
    ];
    for (case, leaf, needles) in cases {
        let (addr, task) = rustls_server(&leaf, None).await;
        let url = format!("https://{addr}");
        let err = keybridge_client::ServiceClient::connect(&keybridge_client::ClientOptions {
            service: url.clone(),
            ca: Some(ca_file.clone()),
            client: "alice".into(),
            password: common::password("pw"),
        })
        .await
        .expect_err("the connection must fail");
        assert_eq!(err.exit_code(), 11, "{err}");
        let err = err.to_string();
        eprintln!("{case}: {err}");
        assert!(err.starts_with(&format!("service {url}: ")), "{err}");
        has(&err, &needles);
        task.abort();
    }
}

/// `keybridge serve` with a certificate that expires in 10 days and a KMIP
/// entry whose client certificate expires in 20: `/metrics` exports
/// `keybridge_cert_expiry_seconds` for each certificate, the service logs
/// a warning, and `kms probe` lists them with warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_in_metrics_and_probe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("deployment CA");
    std::fs::write(d.join("ca.crt"), &ca.pem).unwrap();
    write(d, "service", &ca.leaf("keybridge service", &["127.0.0.1", "localhost"], &[Eku::ServerAuth], -DAY, 10 * DAY - 3600));
    write(d, "kmip-client", &ca.leaf("keybridge kmip client", &[], &[Eku::ClientAuth], -DAY, 20 * DAY - 3600));
    let port = common::free_port();
    let kmip_port = common::free_port(); // nothing listens there
    std::fs::write(
        d.join("keybridge.toml"),
        format!(
            "[catalog]\npath = \"keybridge.db\"\n\
             [[kms]]\nname = \"kms\"\nkind = \"builtin\"\nroot_key = \"root.key\"\n\
             [[kms]]\nname = \"appliance\"\nkind = \"kmip\"\nservers = [\"127.0.0.1:{kmip_port}\"]\nca = \"ca.crt\"\ncert = \"kmip-client.crt\"\nkey = \"kmip-client.key\"\nconnect_timeout_secs = 1\n\
             [service]\nlisten = \"127.0.0.1:{port}\"\ncert = \"service.crt\"\nkey = \"service.key\"\noperator_token_file = \"operator.token\"\n\
             media_agent = \"https://127.0.0.1:1\"\nmedia_agent_key_file = \"media-agent.key\"\n"
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| Command::new(BIN).current_dir(d).args(args).env("KEYBRIDGE_CONFIG", d.join("keybridge.toml")).output().unwrap();
    let init = cli(&["init"]);
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));

    // kms probe: the built-in KMS is fine; the certificates of the service
    // are listed, with a warning; JSON and text.
    let probe = cli(&["--json", "kms", "probe", "kms"]);
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let v: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let certs = v["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "only the service's: the KMIP entry was not probed: {v}");
    assert_eq!(certs[0]["cert"], "service");
    assert_eq!(certs[0]["subject"], "CN=keybridge service");
    let left = certs[0]["expires_in_seconds"].as_i64().unwrap();
    assert!((9 * DAY + 22 * 3600..=10 * DAY - 3600).contains(&left), "{left}");
    let warnings = v["certificate_warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.starts_with("service certificate ") && w.contains("(CN=keybridge service) expires in 9 days") && w.ends_with("renew it before then"), "{w}");
    assert!(String::from_utf8_lossy(&probe.stderr).contains("certificate expires soon or is not valid"), "the log line");

    // The KMIP entry: unreachable, but its certificates are still listed
    // and warned about (text output).
    let probe = cli(&["kms", "probe", "appliance"]);
    assert_eq!(probe.status.code(), Some(5), "{}", String::from_utf8_lossy(&probe.stderr));
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(text.contains("certificates:\n"), "{text}");
    assert!(text.contains("warning: KMIP client certificate ") && text.contains("of KMS 'appliance' (CN=keybridge kmip client) expires in 19 days"), "{text}");
    assert!(text.contains("  KMIP CA certificate ") && text.contains("(CN=deployment CA): expires in 3649 days"), "{text}");
    assert!(!text.contains("warning: KMIP CA"), "{text}");

    // The service.
    let log = std::fs::File::create(d.join("service.log")).unwrap();
    let mut service = Command::new(BIN)
        .current_dir(d)
        .arg("serve")
        .env("KEYBRIDGE_CONFIG", d.join("keybridge.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = keybridge_client::http_client(Some(&d.join("ca.crt"))).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let mut metrics = None;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{url}/metrics")).send().await {
            metrics = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = service.kill();
    let _ = service.wait();
    let metrics = metrics.unwrap_or_else(|| panic!("the service did not answer: {}", std::fs::read_to_string(d.join("service.log")).unwrap()));
    let gauge = |cert: &str, kms: &str, subject: &str| -> i64 {
        let prefix = format!("keybridge_cert_expiry_seconds{{cert=\"{cert}\",kms=\"{kms}\",subject=\"{subject}\",serial=\"");
        let line = metrics.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    let service_left = gauge("service", "-", "CN=keybridge service");
    assert!((9 * DAY + 22 * 3600..=10 * DAY - 3600).contains(&service_left), "{service_left}");
    let client_left = gauge("kmip_client", "appliance", "CN=keybridge kmip client");
    assert!((19 * DAY + 22 * 3600..=20 * DAY - 3600).contains(&client_left), "{client_left}");
    let ca_left = gauge("kmip_ca", "appliance", "CN=deployment CA");
    assert!((3649 * DAY..3650 * DAY).contains(&ca_left), "{ca_left}");
    assert!(metrics.contains("# TYPE keybridge_cert_expiry_seconds gauge"), "{metrics}");
    let log = std::fs::read_to_string(d.join("service.log")).unwrap();
    assert!(log.contains("certificate expires soon or is not valid") && log.contains("service certificate") && log.contains("expires in 9 days"), "{log}");
}
