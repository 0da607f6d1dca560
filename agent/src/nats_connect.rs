//! Connecting to NATS as the `[nats]` table says: URLs, authentication
//! (user/password, token, credentials file, nkey seed) and TLS.
//!
//! The connection retries forever, also on the first attempt, so the agent
//! starts and buffers even when the local leaf is not up yet. Its events
//! are logged rate-limited (`tributary_config::logging::nats`): a leaf that is away
//! for an hour costs about one line a minute, not one per attempt.

use std::time::Duration;
use tributary_config::NatsConnection;
use tributary_config::nats_client::{ClientOptionsError, client_options};

/// Why no connection could be set up (not: why the server is unreachable,
/// which is retried forever).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The `[nats]` table could not be turned into client options (a secret
    /// or the credentials file could not be read).
    #[error(transparent)]
    Options(#[from] ClientOptionsError),
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
    let opts = client_options(cfg, default_name)
        .await?
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts.min(50) as u64).max(100))
                .min(Duration::from_secs(5))
        })
        .event_callback({
            let log = tributary_config::logging::nats::EventLog::new("leaf");
            move |event| log.clone().log(event)
        });
    Ok(opts.connect(cfg.urls.clone()).await?)
}
