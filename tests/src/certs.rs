//! Throw-away test PKI: a CA, a server certificate for `localhost`/`127.0.0.1` and a client
//! certificate, written as PEM files into their own temp dir.
//!
//! ```no_run
//! # fn main() -> tributary_tests::Result<()> {
//! use tributary_tests::{NatsOptions, NatsServer, TestCerts};
//! let certs = TestCerts::generate()?;
//! let hub = NatsServer::hub_with(NatsOptions {
//!     tls: Some(certs.server_tls(true)), // clients must present a certificate
//!     ..NatsOptions::default()
//! })?;
//! # Ok(()) }
//! ```

use crate::error::{HarnessError, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// TLS files of one server listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that signed the server and client certificates (PEM).
    pub ca: PathBuf,
    /// Whether clients must present a certificate signed by `ca` (mutual TLS).
    pub verify_clients: bool,
}

/// A generated CA with one server and one client certificate, deleted on drop.
#[derive(Debug)]
pub struct TestCerts {
    dir: TempDir,
}

impl TestCerts {
    /// Generates the CA, a server certificate valid for `localhost` and `127.0.0.1`, and a
    /// client certificate (CN `tributary-test-client`), as PEM files in a new temp dir.
    pub fn generate() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tributary-certs-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;

        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tributary test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) = leaf(
            "tributary-test-client",
            vec!["tributary-test-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let certs = TestCerts { dir };
        for (path, pem) in [
            (certs.ca(), ca.pem()),
            (certs.server_cert(), server_cert),
            (certs.server_key(), server_key),
            (certs.client_cert(), client_cert),
            (certs.client_key(), client_key),
        ] {
            std::fs::write(&path, pem)
                .map_err(|e| HarnessError::io("writing certificate", path, e))?;
        }
        Ok(certs)
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (`ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (`server-cert.pem`), valid for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server-cert.pem")
    }

    /// The server's private key (`server-key.pem`).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The client certificate (`client-cert.pem`).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client-cert.pem")
    }

    /// The client's private key (`client-key.pem`).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }

    /// The server-side TLS files; `verify_clients` demands client certificates (mutual TLS).
    pub fn server_tls(&self, verify_clients: bool) -> TlsFiles {
        TlsFiles {
            cert: self.server_cert(),
            key: self.server_key(),
            ca: self.ca(),
            verify_clients,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_pem_certificates_and_keys() {
        let certs = TestCerts::generate().unwrap();
        for cert in [certs.ca(), certs.server_cert(), certs.client_cert()] {
            let text = std::fs::read_to_string(cert).unwrap();
            assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        }
        for key in [certs.server_key(), certs.client_key()] {
            let text = std::fs::read_to_string(key).unwrap();
            assert!(text.contains("PRIVATE KEY-----"), "{text}");
        }
    }
}
