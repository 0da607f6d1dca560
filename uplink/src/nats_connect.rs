//! Connecting to NATS from a [`NatsConnection`] table: URLs, user/password,
//! token, `.creds` file, nkey seed and TLS, through the mapping the agent
//! uses too (`tributary_config::nats_client`). Connection events are
//! logged rate-limited (`tributary_config::logging::nats`).

use async_nats::{Client, ConnectOptions};
use std::time::Duration;
use tributary_config::NatsConnection;
use tributary_config::nats_client::{ClientOptionsError, client_options};

/// Why a NATS connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    /// The `[nats]` table could not be turned into client options (a
    /// password, token or nkey seed, or the `.creds` file, could not be read).
    #[error(transparent)]
    Options(#[from] ClientOptionsError),
    /// No server answered (wrong address, down, TLS or authentication
    /// refused). The message says which.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why (in the message, so not also a `source`).
        reason: async_nats::ConnectError,
    },
}

/// The [`ConnectOptions`] a [`NatsConnection`] describes (the mapping shared
/// with the agent), with the uplink's reconnect pacing. Reconnects are
/// unlimited (the client keeps trying while the server is away).
pub async fn options(conn: &NatsConnection) -> Result<ConnectOptions, NatsConnectError> {
    Ok(client_options(conn, "tributary-uplink")
        .await?
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        })
        .event_callback({
            let log = tributary_config::logging::nats::EventLog::new("hub");
            move |event| log.clone().log(event)
        }))
}

/// Connects to the first reachable server of `conn.urls`.
pub async fn connect(conn: &NatsConnection) -> Result<Client, NatsConnectError> {
    options(conn)
        .await?
        .connect(conn.urls.as_slice())
        .await
        .map_err(|reason| NatsConnectError::Connect {
            urls: conn.urls.join(","),
            reason,
        })
}
