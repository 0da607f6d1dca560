//! `mqtt` sensors: one rumqttc client per agent subscribes to the topic
//! filters of every `[[sensors.mqtt]]` and turns each message into readings.
//!
//! * **Session.** The client id is stable ([`AgentConfig::mqtt_client_id`]),
//!   the session persistent (MQTT 5, `clean_start = false`, a session that
//!   never expires) and subscriptions QoS 1,
//!   so the broker queues messages while the agent is stopped and delivers
//!   them when it comes back. Subscriptions are sent again on every
//!   connection, so filters added by a config change take effect.
//! * **Acknowledgement.** rumqttc acknowledges a QoS 1 message (PUBACK) as
//!   soon as its event loop has read it, before the agent has written it to
//!   disk. A reading accepted from MQTT is therefore in the agent's memory
//!   until the next buffer flush: the same power-cut window as every other
//!   reading (`buffer.flush_interval`). While the observation channel is
//!   full, the client stops reading the socket (back-pressure to the broker)
//!   rather than buffering in memory.
//! * **Routing.** A message feeds every sensor whose filter matches its topic
//!   (`+`, `#`), so one Zigbee2MQTT topic can give temperature and humidity
//!   through two JSON pointers. An id may use topic segments: `{1}` is the
//!   second segment of the message's topic; the result must be a NATS token,
//!   and one template yields at most [`MAX_IDS_PER_SENSOR`] distinct ids.
//! * **Bad input.** Payloads over `mqtt.max_payload`, non-UTF-8, garbage,
//!   non-finite numbers and bad ids are counted as errors of the sensor and
//!   logged with rate limiting; the client keeps going. The client tells the
//!   broker its hard limit ([`hard_packet_limit`]) as MQTT 5's Maximum
//!   Packet Size: the broker discards larger messages for this client
//!   instead of sending them (under MQTT 3.1.1 such a message broke the
//!   connection on every redelivery of the persistent session, and nothing
//!   after it ever arrived). The broker must speak MQTT 5 (Mosquitto ≥ 1.6,
//!   EMQX, HiveMQ, VerneMQ do).
//! * **Connection.** The client reconnects forever, backing off from
//!   [`BACKOFF_INITIAL`] to [`BACKOFF_MAX`].

use super::deadband::Deadband;
use super::error::{PayloadError, SensorError};
use super::ratelimit::ErrorLog;
use super::{Observation, SensorMeta, deliver, parse};
use crate::stats::AgentStats;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_config::{AgentConfig, MqttSensor};

/// First reconnection delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest reconnection delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Most distinct ids one templated MQTT sensor may produce.
pub const MAX_IDS_PER_SENSOR: usize = 1000;

/// The largest packet the client reads at all: 16 × `max_payload`, at least
/// 1 MiB. Payloads between `max_payload` and this are counted and dropped.
pub fn hard_packet_limit(max_payload: usize) -> usize {
    max_payload.saturating_mul(16).max(1 << 20)
}

/// One `[[sensors.mqtt]]` entry with the state of the ids it produced.
#[derive(Debug)]
struct Route {
    filter: String,
    template: String,
    pointer: Option<String>,
    unit: Option<String>,
    tags: Vec<(String, String)>,
    deadband: Option<f64>,
    heartbeat: NonZeroU32,
    ids: HashMap<String, IdState>,
    log: ErrorLog,
}

/// State of one resolved sensor id.
#[derive(Debug)]
struct IdState {
    meta: Arc<SensorMeta>,
    deadband: Deadband,
    log: ErrorLog,
}

impl Route {
    fn new(cfg: &MqttSensor) -> Self {
        Route {
            filter: cfg.topic.clone(),
            template: cfg.id.get_ref().clone(),
            pointer: cfg.pointer.clone(),
            unit: cfg.unit.clone(),
            tags: cfg
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deadband: cfg.deadband,
            heartbeat: cfg.heartbeat,
            ids: HashMap::new(),
            log: ErrorLog::default(),
        }
    }

    /// The state of the id this route gives `topic`, created on first use.
    fn state(&mut self, topic: &str) -> Result<&mut IdState, SensorError> {
        let id = resolve(&self.template, topic).map_err(|reason| SensorError::BadId {
            template: self.template.clone(),
            topic: topic.to_owned(),
            reason,
        })?;
        if !self.ids.contains_key(id.as_ref()) {
            if self.ids.len() >= MAX_IDS_PER_SENSOR {
                return Err(SensorError::TooManyIds {
                    template: self.template.clone(),
                    id: id.into_owned(),
                    max: MAX_IDS_PER_SENSOR,
                });
            }
            tributary_wire::subject::validate_sensor(&id).map_err(|e| SensorError::BadId {
                template: self.template.clone(),
                topic: topic.to_owned(),
                reason: e.to_string(),
            })?;
            let meta = Arc::new(SensorMeta {
                id: id.clone().into_owned(),
                unit: self.unit.clone(),
                tags: self.tags.clone(),
            });
            let state = IdState {
                meta,
                deadband: Deadband::new(self.deadband, self.heartbeat),
                log: ErrorLog::default(),
            };
            self.ids.insert(id.clone().into_owned(), state);
        }
        Ok(self.ids.get_mut(id.as_ref()).expect("inserted above"))
    }
}

/// The id `template` gives a message on `topic`: `{N}` is segment N.
pub(crate) fn resolve<'a>(template: &'a str, topic: &str) -> Result<Cow<'a, str>, String> {
    if !template.contains('{') {
        return Ok(Cow::Borrowed(template));
    }
    let mut out = String::with_capacity(template.len() + topic.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after
            .find('}')
            .map(|end| (end, after[..end].parse::<usize>()))
        {
            Some((end, Ok(n))) => {
                let seg = topic
                    .split('/')
                    .nth(n)
                    .ok_or_else(|| format!("the topic has no segment {n}"))?;
                out.push_str(seg);
                rest = &after[end + 1..];
            }
            // Not a placeholder: kept as written.
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Whether MQTT topic `topic` matches filter `filter` (`+` one level, `#`
/// the rest, including the parent level; wildcards at the first level do
/// not match `$` topics such as `$SYS/...`).
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The value of a payload for one route.
pub(crate) fn decode(
    payload: &[u8],
    max: usize,
    pointer: Option<&str>,
) -> Result<tributary_wire::Value, SensorError> {
    if payload.len() > max {
        return Err(PayloadError::TooLarge {
            len: payload.len(),
            max,
        }
        .into());
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    parse::payload(text, pointer)
}

/// Everything the MQTT task needs, taken from the configuration.
#[derive(Debug)]
pub(crate) struct MqttTask {
    broker: tributary_config::agent::MqttBroker,
    client_id: String,
    routes: Vec<Route>,
    filters: Vec<Filter>,
    max_payload: usize,
}

impl MqttTask {
    pub(crate) fn new(cfg: &AgentConfig) -> Self {
        let mut routes = Vec::new();
        let mut filters: Vec<Filter> = Vec::new();
        for s in &cfg.sensors.mqtt {
            if !rumqttc::valid_filter(&s.topic) {
                warn!(sensor = %s.id.get_ref(), topic = %s.topic, "invalid MQTT topic filter; sensor disabled");
                continue;
            }
            if !filters.iter().any(|f| f.path == s.topic) {
                filters.push(Filter::new(s.topic.clone(), QoS::AtLeastOnce));
            }
            routes.push(Route::new(s));
        }
        MqttTask {
            broker: cfg.mqtt.clone(),
            client_id: cfg.mqtt_client_id(),
            routes,
            filters,
            max_payload: usize::try_from(cfg.mqtt.max_payload.as_u64()).unwrap_or(usize::MAX),
        }
    }

    fn options(&self) -> Result<MqttOptions, tributary_config::SecretError> {
        let b = &self.broker;
        let mut o = MqttOptions::new(self.client_id.clone(), b.host.clone(), b.port);
        let limit = u32::try_from(hard_packet_limit(self.max_payload)).unwrap_or(u32::MAX);
        // MQTT 5: a persistent session that never expires, and a maximum
        // packet size the broker must respect (it discards larger messages
        // for this client instead of sending them, so one oversized message
        // cannot break the connection on every redelivery).
        o.set_clean_start(false)
            .set_session_expiry_interval(Some(u32::MAX))
            .set_keep_alive(b.keep_alive.get())
            .set_max_packet_size(Some(limit));
        if let Some(user) = &b.user {
            let password = match &b.password {
                Some(p) => p.resolve()?,
                None => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        Ok(o)
    }

    /// Runs the client until `shutdown`.
    pub(crate) async fn run(
        mut self,
        stats: Arc<AgentStats>,
        out: mpsc::Sender<Observation>,
        shutdown: CancellationToken,
    ) {
        let mut conn_log = ErrorLog::default();
        let mut backoff = BACKOFF_INITIAL;
        let options = loop {
            match self.options() {
                Ok(o) => break o,
                Err(e) => {
                    conn_log.failed("mqtt", &e);
                    if !pause(&mut backoff, &shutdown).await {
                        return;
                    }
                }
            }
        };
        let (client, mut events) = AsyncClient::new(options, 16);
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(
                        broker = %format_args!("{}:{}", self.broker.host, self.broker.port),
                        client_id = %self.client_id,
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                    conn_log.ok("mqtt");
                    backoff = BACKOFF_INITIAL;
                    if !self.filters.is_empty() {
                        if let Err(e) = client.try_subscribe_many(self.filters.clone()) {
                            warn!(error = %e, "cannot queue MQTT subscriptions");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        .count();
                    if refused > 0 {
                        warn!(refused, "the MQTT broker refused subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // The broker checks that topic names are UTF-8.
                    let topic = String::from_utf8_lossy(&p.topic);
                    if !self
                        .handle(&topic, &p.payload, &stats, &out, &shutdown)
                        .await
                    {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    conn_log.failed("mqtt", &e);
                    if !pause(&mut backoff, &shutdown).await {
                        break;
                    }
                }
            }
        }
    }

    /// Turns one message into readings; false when the agent is stopping.
    async fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        stats: &AgentStats,
        out: &mpsc::Sender<Observation>,
        shutdown: &CancellationToken,
    ) -> bool {
        for route in self.routes.iter_mut().filter(|r| matches(&r.filter, topic)) {
            let result = decode(payload, self.max_payload, route.pointer.as_deref());
            let state = match route.state(topic) {
                Ok(s) => s,
                Err(e) => {
                    stats.error(&route.template, &e);
                    route.log.failed(&route.template, &e);
                    continue;
                }
            };
            let ok = deliver(
                &state.meta,
                &mut state.deadband,
                &mut state.log,
                result,
                stats,
                out,
                shutdown,
            )
            .await;
            if !ok {
                return false;
            }
        }
        true
    }
}

/// Waits `backoff` (doubling it up to the cap); false when stopping.
async fn pause(backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_wire::Value;

    #[test]
    fn topic_filters_match_like_a_broker() {
        assert!(matches("zigbee2mqtt/+", "zigbee2mqtt/kitchen"));
        assert!(!matches("zigbee2mqtt/+", "zigbee2mqtt/kitchen/set"));
        assert!(matches("tele/#", "tele/plug/SENSOR"));
        assert!(matches("tele/#", "tele"));
        assert!(matches("#", "a/b"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("#", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
    }

    #[test]
    fn templates_take_topic_segments() {
        assert_eq!(
            resolve("{1}_temperature", "zigbee2mqtt/kitchen").unwrap(),
            "kitchen_temperature"
        );
        assert_eq!(resolve("{0}-{2}", "a/b/c").unwrap(), "a-c");
        assert_eq!(resolve("fixed", "a/b").unwrap(), "fixed");
        assert_eq!(resolve("x{y}", "a").unwrap(), "x{y}");
        assert!(resolve("{3}", "a/b").is_err());
    }

    #[test]
    fn a_template_giving_a_bad_token_is_an_error() {
        let cfg =
            crate::sensors::test_config("[[sensors.mqtt]]\nid = \"{1}\"\ntopic = \"room/+\"\n");
        let mut route = Route::new(&cfg.sensors.mqtt[0]);
        assert!(route.state("room/kitchen").is_ok());
        // `+` matches an empty level; a NATS token cannot be empty.
        assert!(matches!(
            route.state("room/"),
            Err(SensorError::BadId { .. })
        ));
        assert!(matches!(
            route.state("room/a b"),
            Err(SensorError::BadId { .. })
        ));
    }

    #[test]
    fn a_template_is_limited_in_how_many_ids_it_makes() {
        let cfg = crate::sensors::test_config("[[sensors.mqtt]]\nid = \"{1}\"\ntopic = \"r/+\"\n");
        let mut route = Route::new(&cfg.sensors.mqtt[0]);
        for i in 0..MAX_IDS_PER_SENSOR {
            route.state(&format!("r/s{i}")).unwrap();
        }
        assert!(route.state("r/s0").is_ok());
        assert!(matches!(
            route.state("r/new"),
            Err(SensorError::TooManyIds { .. })
        ));
    }

    #[test]
    fn payloads_are_decoded_or_refused() {
        assert_eq!(decode(b"21.5", 100, None).unwrap(), Value::Float(21.5));
        assert_eq!(decode(b"ON", 100, None).unwrap(), Value::Bool(true));
        assert_eq!(
            decode(br#"{"t":1}"#, 100, Some("/t")).unwrap(),
            Value::Int(1)
        );
        let too_big = decode(&[b'1'; 101], 100, None).unwrap_err();
        assert!(matches!(
            too_big,
            SensorError::Payload(PayloadError::TooLarge { .. })
        ));
        let binary = decode(&[0xff, 0xfe, 0x31], 100, None).unwrap_err();
        assert!(matches!(
            binary,
            SensorError::Payload(PayloadError::NotUtf8)
        ));
        assert!(decode(b"hello", 100, None).is_err());
        assert!(decode(b"", 100, None).is_err());
    }
}
