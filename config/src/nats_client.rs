//! The async-nats client options a `[nats]` table describes (feature
//! `client`): authentication (`.creds` file, user/password, token, nkey
//! seed, each secret resolved from where the config says), TLS, the
//! connection name and timeout, and unlimited reconnects. Agent and uplink
//! add their own reconnect pacing and event logging on top.

use crate::{NatsConnection, SecretError};
use async_nats::ConnectOptions;
use std::path::PathBuf;

/// Why the options could not be built (not: why a server is unreachable).
#[derive(Debug, thiserror::Error)]
pub enum ClientOptionsError {
    /// A password, token or nkey seed could not be read; the message says
    /// from where.
    #[error("cannot read a NATS secret")]
    Secret(#[from] SecretError),
    /// The `.creds` file could not be read or holds no JWT and seed; check
    /// its path, permissions and content.
    #[error("cannot use the NATS credentials file {path}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The [`ConnectOptions`] `conn` describes; `default_name` names the
/// connection when the config does not. Reconnects are unlimited.
pub async fn client_options(
    conn: &NatsConnection,
    default_name: &str,
) -> Result<ConnectOptions, ClientOptionsError> {
    let mut opts = ConnectOptions::new()
        .name(conn.name.as_deref().unwrap_or(default_name))
        .connection_timeout(conn.connect_timeout.get())
        .max_reconnects(None);
    if let Some(path) = &conn.credentials_file {
        opts = opts.credentials_file(path).await.map_err(|source| {
            ClientOptionsError::Credentials {
                path: path.clone(),
                source,
            }
        })?;
    }
    if let (Some(user), Some(password)) = (&conn.user, &conn.password) {
        opts = opts.user_and_password(user.clone(), password.resolve()?);
    }
    if let Some(token) = &conn.token {
        opts = opts.token(token.resolve()?);
    }
    if let Some(seed) = &conn.nkey_seed {
        opts = opts.nkey(seed.resolve()?);
    }
    if let Some(tls) = &conn.tls {
        opts = opts.require_tls(tls.required);
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(toml_text: &str) -> NatsConnection {
        toml::from_str(toml_text).expect("valid [nats] table")
    }

    #[tokio::test]
    async fn a_missing_credentials_file_names_the_file() {
        let err = client_options(&conn("credentials_file = \"/nonexistent/pi.creds\""), "t")
            .await
            .expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/pi.creds"), "{err}");
    }

    #[tokio::test]
    async fn a_secret_from_an_unset_variable_is_an_error_not_an_empty_password() {
        let err = client_options(
            &conn("user = \"pi\"\npassword = { env = \"TRIBUTARY_TEST_SURELY_UNSET\" }"),
            "t",
        )
        .await
        .expect_err("unset variable");
        assert!(matches!(err, ClientOptionsError::Secret(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_complete_table_maps_name_timeout_tls_and_unlimited_reconnects_into_the_options() {
        let opts = client_options(
            &conn(
                "urls = [\"tls://127.0.0.1:4222\"]\ntoken = \"t0k3n-secret\"\nname = \"pi\"\n\
                 connect_timeout = \"2s\"\n[tls]\nca_file = \"/etc/ca.pem\"\n\
                 cert_file = \"/etc/c.pem\"\nkey_file = \"/etc/c.key\"\n",
            ),
            "default-name",
        )
        .await
        .expect("options");
        let shown = format!("{opts:?}");
        for expected in [
            "\"name\": Some(\"pi\")",
            "\"connection_timeout\": 2s",
            "\"max_reconnects\": None",
            "\"tls_required\": true",
            "\"certificates\": [\"/etc/ca.pem\"]",
            "\"client_cert\": Some(\"/etc/c.pem\")",
            "\"client_key\": Some(\"/etc/c.key\")",
        ] {
            assert!(shown.contains(expected), "{expected} not in {shown}");
        }
        assert!(!shown.contains("t0k3n-secret"), "{shown}");
        let opts = client_options(&conn(""), "default-name")
            .await
            .expect("options");
        let shown = format!("{opts:?}");
        assert!(
            shown.contains("\"name\": Some(\"default-name\")"),
            "{shown}"
        );
        assert!(shown.contains("\"tls_required\": false"), "{shown}");
    }
}
