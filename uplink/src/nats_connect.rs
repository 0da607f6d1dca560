//! Connecting to NATS from a [`NatsConnection`] table: URLs, user/password,
//! token, `.creds` file, nkey seed and TLS.
//!
//! Written to be shared: it depends only on `async-nats`, `tracing` and
//! `tributary-config`, so the agent can use the same mapping.

use async_nats::{Client, ConnectOptions};
use std::time::Duration;
use tributary_config::{NatsConnection, SecretError};

/// Why a NATS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    /// A password, token or nkey seed could not be read.
    #[error("cannot read a NATS secret: {0}")]
    Secret(#[from] SecretError),
    /// The `.creds` file could not be read or parsed.
    #[error("cannot use the NATS credentials file {path}: {source}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No server answered (wrong address, down, TLS or authentication
    /// refused). The message says which.
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// The [`ConnectOptions`] a [`NatsConnection`] describes. Reconnects are
/// unlimited (the client keeps trying while the server is away).
pub async fn options(conn: &NatsConnection) -> Result<ConnectOptions, NatsConnectError> {
    let mut opts = ConnectOptions::new();
    if let Some(path) = &conn.credentials_file {
        opts =
            opts.credentials_file(path)
                .await
                .map_err(|source| NatsConnectError::Credentials {
                    path: path.display().to_string(),
                    source,
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
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        opts = opts.require_tls(tls.required);
    }
    if let Some(name) = &conn.name {
        opts = opts.name(name);
    }
    Ok(opts
        .connection_timeout(conn.connect_timeout.get())
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        }))
}

/// Connects to the first reachable server of `conn.urls`.
pub async fn connect(conn: &NatsConnection) -> Result<Client, NatsConnectError> {
    options(conn)
        .await?
        .connect(conn.urls.as_slice())
        .await
        .map_err(|source| NatsConnectError::Connect {
            urls: conn.urls.join(","),
            source,
        })
}
