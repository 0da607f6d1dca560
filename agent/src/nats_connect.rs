//! Connecting to NATS as the `[nats]` table says: URLs, authentication
//! (user/password, token, credentials file, nkey seed) and TLS.
//!
//! The connection retries forever, also on the first attempt, so the agent
//! starts and buffers even when the local leaf is not up yet.

use std::time::Duration;
use tributary_config::{NatsConnection, SecretError};

/// Why no connection could be set up (not: why the server is unreachable,
/// which is retried forever).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A secret (password, token, nkey seed) could not be read.
    #[error("cannot read a NATS secret")]
    Secret(#[from] SecretError),
    /// The credentials file could not be read.
    #[error("cannot read the NATS credentials file {path}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client refused the options (bad URL, TLS files…).
    #[error("cannot connect to NATS")]
    Connect(#[from] async_nats::ConnectError),
}

/// Connects as `cfg` says; `default_name` names the connection when the
/// config does not.
pub async fn connect(
    cfg: &NatsConnection,
    default_name: &str,
) -> Result<async_nats::Client, ConnectError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(cfg.name.clone().unwrap_or_else(|| default_name.to_owned()))
        .connection_timeout(cfg.connect_timeout.get())
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts.min(50) as u64).max(100))
                .min(Duration::from_secs(5))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.resolve()?);
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.resolve()?);
    }
    if let Some(seed) = &cfg.nkey_seed {
        opts = opts.nkey(seed.resolve()?);
    }
    if let Some(path) = &cfg.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::Credentials {
                path: path.display().to_string(),
                source,
            })?;
    }
    if let Some(tls) = &cfg.tls {
        opts = opts.require_tls(tls.required);
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(opts.connect(cfg.urls.clone()).await?)
}
