//! TLS for one registry host, from its hosts.toml entry: which servers to trust (the system's roots plus
//! the host's `ca` files, or no verification with `skip_verify`) and which client certificate to present
//! (`client`, for registries that require mutual TLS).
//!
//! With several client certificates, the one presented is chosen per handshake as Go's `crypto/tls` (so
//! containerd) chooses: the first whose issuer is among the certificate authorities the server names in its
//! request and whose key can sign with a scheme the server accepts, else the first whose key can.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::RegistryError;
use super::hosts::{ClientPair, RegistryHost};

/// The TLS client configuration for `host`.
pub(super) fn client_config(host: &RegistryHost) -> Result<ClientConfig, RegistryError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let url = host.url();
    let bad = |path: &Path, detail: String| RegistryError::Certificate {
        host: url.clone(),
        path: path.display().to_string(),
        detail,
    };
    let mut roots = Vec::new();
    for path in &host.ca {
        let pem = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(path, format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad(path, "no PEM certificate in the file".into()));
        }
        roots.extend(certs);
    }
    let verifier: Arc<dyn ServerCertVerifier> = if host.skip_verify {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let v = if roots.is_empty() {
            rustls_platform_verifier::Verifier::new(provider.clone())
        } else {
            rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
        };
        Arc::new(v.map_err(|e| RegistryError::Client {
            host: url.clone(),
            detail: format!("cannot set up certificate verification: {e}"),
        })?)
    };
    let mut certs = Vec::with_capacity(host.client.len());
    for pair in &host.client {
        certs.push(load_pair(pair, &provider).map_err(|(path, detail)| bad(&path, detail))?);
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Client {
            host: url.clone(),
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = if certs.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_resolver(Arc::new(ClientCerts(certs)))
    };
    // The HTTP client speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client certificate chain with its key, and the issuer of its leaf (a DER `Name`, as servers list the
/// authorities they accept).
#[derive(Debug)]
struct ClientCert {
    key: Arc<CertifiedKey>,
    issuer: Vec<u8>,
}

/// Reads one `client` entry; errors name the file at fault.
fn load_pair(pair: &ClientPair, provider: &CryptoProvider) -> Result<ClientCert, (std::path::PathBuf, String)> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| (p.to_path_buf(), e.to_string()));
    let cert_pem = read(&pair.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| (pair.cert.clone(), format!("not PEM certificates: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err((pair.cert.clone(), "no PEM certificate in the file".into()));
    };
    let issuer = issuer_of(leaf)
        .ok_or_else(|| (pair.cert.clone(), "the certificate is not valid DER".to_string()))?
        .to_vec();
    let key_path = pair.key.as_deref().unwrap_or(&pair.cert);
    let key_pem = match &pair.key {
        Some(k) => read(k)?,
        None => cert_pem.clone(),
    };
    // The message of a failed key parse never quotes the file's contents.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        (
            key_path.to_path_buf(),
            "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".into(),
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        (
            key_path.to_path_buf(),
            format!("the private key cannot be used with {}: {e}", pair.cert.display()),
        )
    })?;
    Ok(ClientCert {
        key: Arc::new(key),
        issuer,
    })
}

/// The client certificates of a host, chosen per handshake.
#[derive(Debug)]
struct ClientCerts(Vec<ClientCert>);

impl ResolvesClientCert for ClientCerts {
    fn resolve(&self, root_hint_subjects: &[&[u8]], sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let usable = || self.0.iter().filter(|c| c.key.key.choose_scheme(sigschemes).is_some());
        usable()
            .find(|c| root_hint_subjects.contains(&c.issuer.as_slice()))
            .or_else(|| usable().next())
            .map(|c| c.key.clone())
    }

    fn has_certs(&self) -> bool {
        !self.0.is_empty()
    }
}

/// `skip_verify`: any server certificate and host name are accepted; the handshake signature is still
/// checked against the certificate the server sent.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The issuer of a DER X.509 certificate, as the whole DER `Name` (tag and length included):
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
/// issuer, ... }, ... }` (RFC 5280 4.1).
fn issuer_of(cert: &[u8]) -> Option<&[u8]> {
    let (_, certificate, _) = der_item(cert)?;
    let (_, tbs, _) = der_item(certificate)?;
    let mut rest = tbs;
    let (tag, _, after_version) = der_item(rest)?;
    if tag == 0xa0 {
        rest = after_version;
    }
    let (_, _, after_serial) = der_item(rest)?;
    let (_, _, after_signature) = der_item(after_serial)?;
    let (tag, _, after_issuer) = der_item(after_signature)?;
    (tag == 0x30).then(|| &after_signature[..after_signature.len() - after_issuer.len()])
}

/// One DER item at the start of `b`: its tag, its contents, and what follows it.
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &d| (acc << 8) | usize::from(d));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_items_and_issuer() {
        // SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 1, SEQUENCE {}, SEQUENCE { 0x31 0x00 } } }
        let tbs = [0xa0, 3, 2, 1, 2, 2, 1, 1, 0x30, 0, 0x30, 2, 0x31, 0];
        let mut cert = vec![0x30, (tbs.len() + 2) as u8, 0x30, tbs.len() as u8];
        cert.extend_from_slice(&tbs);
        assert_eq!(issuer_of(&cert), Some(&[0x30, 2, 0x31, 0][..]));
        // Long-form length.
        let mut long = vec![0x04, 0x81, 200];
        long.extend(std::iter::repeat_n(7u8, 200));
        let (tag, content, rest) = der_item(&long).unwrap();
        assert_eq!((tag, content.len(), rest.len()), (4, 200, 0));
        assert!(der_item(&[0x04, 0x82, 1]).is_none(), "truncated length");
        assert!(issuer_of(&[0x30, 5, 1]).is_none(), "truncated certificate");
    }
}
