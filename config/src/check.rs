//! `check`: everything `run` will need from outside the file, verified
//! before anything starts (feature `client`).
//!
//! Beyond parsing and validating ([`crate::load_agent`]), [`check_agent`]
//! and [`check_uplink`] resolve every secret (`password`, `token`,
//! `nkey_seed`: inline, `{ file = … }`, `{ env = … }`) without printing it,
//! parse the nkey seed, read the `.creds` file and find its JWT and seed,
//! and read the TLS CA, certificate and key files as PEM, the way the NATS
//! client will. A problem comes back as a [`ConfigError`] that names the
//! key (with its line when the file writes it), so `check` fails on
//! everything `run` would refuse, and `run` calls the same functions to
//! fail at once, before it opens the buffer.

use crate::nats::{NatsConnection, TlsFiles};
use crate::types::{Secret, SecretError};
use crate::{AgentConfig, ConfigError, UplinkConfig, ValidationError};
use async_nats::rustls::pki_types::pem::{self, PemObject};
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Something the configuration names that `run` could not use.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A secret does not resolve (the source says where it was looked for).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The nkey seed does not decode; it is not printed.
    #[error(
        "the nkey seed is not valid ({reason}): expected a user seed of 58 characters starting \
         with \"SU\", as `nsc` or `nk -gen user` print it"
    )]
    NkeySeed {
        /// What the nkeys library found wrong.
        reason: String,
    },
    /// The `.creds` file cannot be read.
    #[error("cannot read the credentials file {}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `.creds` file lacks its JWT or seed, or the seed is invalid.
    #[error(
        "the credentials file {} {problem}: expected a .creds file as `nsc generate creds` \
         writes it (a JWT block, then a seed block)",
        path.display()
    )]
    CredentialsContent {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A TLS file cannot be read.
    #[error("cannot read the TLS file {}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds no usable PEM certificate or key.
    #[error("the TLS file {} holds no PEM {what} ({reason})", path.display())]
    TlsContent {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// What the PEM reader found.
        reason: String,
    },
}

/// `error` and its causes, as one line.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn problem(key: &str, e: ResourceError) -> ValidationError {
    ValidationError::new(key, None, with_causes(&e))
}

/// Resolves `secret` (at `key`), returning its value.
fn resolve(key: &str, secret: &Secret) -> Result<String, ValidationError> {
    secret
        .resolve()
        .map_err(|e| problem(key, ResourceError::Secret(e)))
}

/// Checks the secrets and files of a `[nats]` table written at `table`.
pub fn check_nats(table: &str, conn: &NatsConnection) -> Result<(), ValidationError> {
    let key = |k: &str| format!("{table}.{k}");
    if let Some(p) = &conn.password {
        resolve(&key("password"), p)?;
    }
    if let Some(t) = &conn.token {
        resolve(&key("token"), t)?;
    }
    if let Some(s) = &conn.nkey_seed {
        let seed = resolve(&key("nkey_seed"), s)?;
        nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
            problem(
                &key("nkey_seed"),
                ResourceError::NkeySeed {
                    reason: e.to_string(),
                },
            )
        })?;
    }
    if let Some(path) = &conn.credentials_file {
        check_creds(path).map_err(|e| problem(&key("credentials_file"), e))?;
    }
    if let Some(tls) = &conn.tls {
        check_tls(&key("tls"), tls)?;
    }
    Ok(())
}

/// The blocks of a `.creds` file: the lines between `-----BEGIN …-----`
/// and `------END …------` markers, as the NATS client reads them.
fn creds_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("---") && line.contains("BEGIN") {
            if let Some(body) = lines
                .next()
                .filter(|l| !l.is_empty() && !l.starts_with("---"))
            {
                blocks.push(body);
            }
        }
    }
    blocks
}

fn check_creds(path: &Path) -> Result<(), ResourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResourceError::CredentialsFile {
        path: path.to_owned(),
        source,
    })?;
    let content = |problem: &str| ResourceError::CredentialsContent {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let blocks = creds_blocks(&text);
    let (Some(_jwt), Some(seed)) = (blocks.first(), blocks.get(1)) else {
        return Err(content("holds no JWT and seed"));
    };
    nkeys::KeyPair::from_seed(seed)
        .map_err(|e| content(&format!("holds an invalid seed ({e})")))?;
    Ok(())
}

fn read_tls(path: &Path) -> Result<Vec<u8>, ResourceError> {
    std::fs::read(path).map_err(|source| ResourceError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

fn check_certificates(path: &Path) -> Result<(), ResourceError> {
    let bytes = read_tls(path)?;
    let content = |reason: String| ResourceError::TlsContent {
        path: path.to_owned(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| content(e.to_string()))?;
    if certs.is_empty() {
        return Err(content("no -----BEGIN CERTIFICATE----- block".to_owned()));
    }
    Ok(())
}

fn check_key(path: &Path) -> Result<(), ResourceError> {
    let bytes = read_tls(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| ResourceError::TlsContent {
        path: path.to_owned(),
        what: "private key",
        reason: e.to_string(),
    })?;
    Ok(())
}

/// Reads a TLS file and checks what it holds.
type TlsCheck = fn(&Path) -> Result<(), ResourceError>;

fn check_tls(table: &str, tls: &TlsFiles) -> Result<(), ValidationError> {
    let files: [(&str, &Option<PathBuf>, TlsCheck); 3] = [
        ("ca_file", &tls.ca_file, check_certificates),
        ("cert_file", &tls.cert_file, check_certificates),
        ("key_file", &tls.key_file, check_key),
    ];
    for (name, path, check) in files {
        if let Some(path) = path {
            check(path).map_err(|e| problem(&format!("{table}.{name}"), e))?;
        }
    }
    Ok(())
}

/// Reads and validates a configuration file, then runs `extra` on it;
/// errors of `extra` point at their key's line.
fn check_file<T>(
    path: &Path,
    load: fn(&str, &Path) -> Result<T, ConfigError>,
    extra: impl FnOnce(&T) -> Result<(), ValidationError>,
) -> Result<T, ConfigError> {
    let text = crate::read(path)?;
    let config = load(&text, path)?;
    extra(&config).map_err(|v| ConfigError::from_validation(path, &text, v))?;
    Ok(config)
}

/// [`crate::load_agent`], then every secret and file the agent will need.
pub fn check_agent(path: &Path) -> Result<AgentConfig, ConfigError> {
    check_file(path, crate::parse::<AgentConfig>, |c| {
        check_nats("nats", &c.nats)?;
        if let Some(p) = &c.mqtt.password {
            resolve("mqtt.password", p)?;
        }
        Ok(())
    })
}

/// [`crate::apply_fleet`] (the fleet document `text` over the local
/// configuration `base`), then the secrets the fleet part names.
pub fn check_fleet(
    base: &AgentConfig,
    text: &str,
    origin: &Path,
) -> Result<AgentConfig, ConfigError> {
    let config = crate::apply_fleet(base, text, origin)?;
    if let Some(p) = &config.mqtt.password {
        resolve("mqtt.password", p).map_err(|v| ConfigError::from_validation(origin, text, v))?;
    }
    Ok(config)
}

/// [`crate::load_uplink`], then every secret and file of `[nats]`, then
/// `extra` (the uplink's own checks, such as librdkafka accepting
/// `kafka.properties`).
pub fn check_uplink(
    path: &Path,
    extra: impl FnOnce(&UplinkConfig) -> Result<(), ValidationError>,
) -> Result<UplinkConfig, ConfigError> {
    check_file(path, crate::parse::<UplinkConfig>, |c| {
        check_nats("nats", &c.nats)?;
        extra(c)
    })
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
