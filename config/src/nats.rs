//! How to reach a NATS server: URLs, authentication and TLS. Shared by the
//! agent (its local leaf) and the uplink (the hub).

use crate::ValidationError;
use crate::types::{NonZeroDuration, Secret};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

fn default_urls() -> Vec<String> {
    vec!["nats://127.0.0.1:4222".to_owned()]
}

fn default_connect_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(5)
}

/// The `[nats]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConnection {
    /// Server URLs, tried in turn: `nats://host:port` or `tls://host:port`.
    /// Default `["nats://127.0.0.1:4222"]`.
    #[serde(default = "default_urls")]
    pub urls: Vec<String>,
    /// Name the connection shows in the server's monitoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User for user/password authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password for `user`: inline, `{ file = … }` or `{ env = … }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Token authentication: inline, `{ file = … }` or `{ env = … }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A `.creds` file (JWT and nkey seed), as issued by `nsc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// An nkey seed (`SU…`): inline, `{ file = … }` or `{ env = … }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<Secret>,
    /// TLS settings; absent means plain TCP unless a URL says `tls://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// How long one connection attempt may take. Default `"5s"`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: NonZeroDuration,
}

impl Default for NatsConnection {
    fn default() -> Self {
        NatsConnection {
            urls: default_urls(),
            name: None,
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            nkey_seed: None,
            tls: None,
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// The `[nats.tls]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA that signed the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Refuse to talk without TLS. Default true when this table is present.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl NatsConnection {
    /// Checks the URLs and that at most one way of authenticating is chosen.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let err =
            |key: &str, msg: String| Err(ValidationError::new(format!("nats.{key}"), None, msg));
        if self.urls.is_empty() {
            return err("urls", "at least one server URL is required".into());
        }
        for url in &self.urls {
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|p| url.starts_with(p) && url.len() > p.len());
            if !ok {
                return err(
                    "urls",
                    format!(
                        "{url:?} is not a NATS URL; expected nats://host:port or tls://host:port"
                    ),
                );
            }
        }
        let methods = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.credentials_file.is_some(),
            self.nkey_seed.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return err(
                "user",
                "choose one way to authenticate: user/password, token, credentials_file or nkey_seed".into(),
            );
        }
        if self.user.is_some() != self.password.is_some() {
            return err("password", "`user` and `password` go together".into());
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return err(
                    "tls.cert_file",
                    "`cert_file` and `key_file` go together".into(),
                );
            }
        }
        Ok(())
    }
}
