//! Certificates for TLS tests, made with Debian's `openssl` command in a temp dir: a CA, a server certificate
//! for `127.0.0.1` signed by it, and client certificates (one signed by that CA, one by a second CA the
//! server does not trust).
//!
//! The openssl CLI rather than a certificate crate: it is already on every Debian machine (and installed by
//! `hack/install-test-deps`), it is what an operator setting up a mutual-TLS registry uses, and it keeps a
//! test-only X.509 generator out of the dependency tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::registry::require_tool;

/// The files of a test PKI (all PEM, EC P-256 keys in PKCS#8).
pub struct TestPki {
    /// The CA the server's certificate and `client_*` are signed by.
    pub ca: PathBuf,
    /// The server's certificate (SAN `IP:127.0.0.1`) and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by [`TestPki::ca`], and its key.
    pub client_cert: PathBuf,
    /// The key of [`TestPki::client_cert`].
    pub client_key: PathBuf,
    /// The client certificate followed by its key, in one file (containerd's `client = "file.pem"`).
    pub client_pem: PathBuf,
    /// A client certificate and key from another CA, which the server does not accept.
    pub stranger_cert: PathBuf,
    /// The key of [`TestPki::stranger_cert`].
    pub stranger_key: PathBuf,
}

impl TestPki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        require_tool("openssl");
        let p = |name: &str| dir.join(name);
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        ca(dir, "ca", "imaged test CA");
        ca(dir, "other-ca", "imaged stranger CA");
        leaf(dir, "server", "127.0.0.1", "ca", "server.ext");
        leaf(dir, "client", "imaged test client", "ca", "client.ext");
        leaf(dir, "stranger", "imaged stranger client", "other-ca", "client.ext");
        let mut combined = std::fs::read(p("client.pem")).unwrap();
        combined.extend(std::fs::read(p("client.key")).unwrap());
        std::fs::write(p("client-combined.pem"), combined).unwrap();
        TestPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            client_pem: p("client-combined.pem"),
            stranger_cert: p("stranger.pem"),
            stranger_key: p("stranger.key"),
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `<name>.pem`, `<name>.key`.
fn ca(dir: &Path, name: &str, cn: &str) {
    let (pem, key, subj) = (format!("{name}.pem"), format!("{name}.key"), format!("/CN={cn}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate signed by `<ca>`: `<name>.pem`, `<name>.key`, with the extensions in `ext`.
fn leaf(dir: &Path, name: &str, cn: &str, ca: &str, ext: &str) {
    let (pem, key, csr, subj) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("/CN={cn}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            ext,
        ],
    );
}
