//! The NATS service protocol ("micro", as `nats micro ls|info|stats` and
//! every NATS client's service module speak it), written for the agent:
//! `$SRV.PING|INFO|STATS` (also with the service name, and name and id
//! appended) answered with the `io.nats.micro.v1.*_response` documents, and
//! the endpoints' requests handed to the caller with their counts kept.
//!
//! async-nats has this as its `service` module; the agent carries its own
//! because that module (its endpoint streams, broadcast shutdown and stats
//! machinery) put the static aarch64 binary over its 4 MB goal, and the
//! protocol is a handful of subjects and three small JSON documents.
//! Replies to failed requests carry `Nats-Service-Error-Code` and
//! `Nats-Service-Error`, as the protocol says.

use async_nats::{Client, HeaderMap, Message, Subscriber};
use futures::StreamExt;
use futures::stream::SelectAll;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// The queue group every endpoint subscribes with (the protocol's default).
const QUEUE_GROUP: &str = "q";

/// A failed request's answer: a service error code and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// 400, 404, 500, 503…
    pub code: u16,
    /// What went wrong.
    pub text: String,
}

/// What a service says about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Service name (`tributary-agent`).
    pub name: &'static str,
    /// Version (semver).
    pub version: &'static str,
    /// Description.
    pub description: &'static str,
    /// Metadata (the agent's `device`).
    pub metadata: HashMap<String, String>,
}

#[derive(Debug)]
struct Endpoint {
    name: &'static str,
    subject: String,
    requests: u64,
    errors: u64,
    last_error: String,
    processing_ns: u64,
}

/// A running service: its subscriptions, what it is, its endpoints' counts.
#[derive(Debug)]
pub struct Service {
    client: Client,
    id: String,
    identity: Identity,
    started: String,
    endpoints: Vec<Endpoint>,
    subs: SelectAll<Tagged>,
}

/// Which subscription a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Ping,
    Info,
    Stats,
    Endpoint(usize),
}

type Tagged = futures::stream::Map<Subscriber, Box<dyn FnMut(Message) -> (Tag, Message) + Send>>;

fn tagged(sub: Subscriber, tag: Tag) -> Tagged {
    sub.map(Box::new(move |m| (tag, m)))
}

/// One request to an endpoint, to be answered with [`Service::respond`].
#[derive(Debug)]
pub struct Request {
    /// Index of the endpoint, in the order of [`Service::start`]'s list.
    pub endpoint: usize,
    /// The request.
    pub message: Message,
    received: Instant,
}

impl Service {
    /// Subscribes the protocol's subjects and `endpoints` (name, subject).
    pub async fn start(
        client: Client,
        identity: Identity,
        endpoints: Vec<(&'static str, String)>,
    ) -> Result<Service, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let id = inbox.rsplit('.').next().unwrap_or(&inbox).to_owned();
        let mut subs = SelectAll::new();
        for (verb, tag) in [
            ("PING", Tag::Ping),
            ("INFO", Tag::Info),
            ("STATS", Tag::Stats),
        ] {
            for subject in [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{}", identity.name),
                format!("$SRV.{verb}.{}.{id}", identity.name),
            ] {
                subs.push(tagged(client.subscribe(subject).await?, tag));
            }
        }
        let mut list = Vec::new();
        for (i, (name, subject)) in endpoints.into_iter().enumerate() {
            let sub = client
                .queue_subscribe(subject.clone(), QUEUE_GROUP.to_owned())
                .await?;
            subs.push(tagged(sub, Tag::Endpoint(i)));
            list.push(Endpoint {
                name,
                subject,
                requests: 0,
                errors: 0,
                last_error: String::new(),
                processing_ns: 0,
            });
        }
        Ok(Service {
            client,
            id,
            identity,
            started: tributary_wire::json::rfc3339(crate::sensors::now_unix_ns()),
            endpoints: list,
            subs,
        })
    }

    /// The next request to an endpoint; `$SRV` requests are answered on the
    /// way. `None` when the connection closed.
    pub async fn next(&mut self) -> Option<Request> {
        loop {
            let (tag, message) = self.subs.next().await?;
            let doc = match tag {
                Tag::Endpoint(endpoint) => {
                    return Some(Request {
                        endpoint,
                        message,
                        received: Instant::now(),
                    });
                }
                Tag::Ping => self.document("ping", None),
                Tag::Info => self.document("info", None),
                Tag::Stats => self.document("stats", Some(())),
            };
            if let Some(reply) = message.reply {
                if let Err(e) = self.client.publish(reply, doc.into()).await {
                    tracing::debug!(error = %e, "cannot answer a $SRV request");
                }
            }
        }
    }

    /// Answers `request`, counting it (and its error) for `$SRV.STATS`.
    pub async fn respond(&mut self, request: &Request, answer: Result<Vec<u8>, ServiceError>) {
        let Some(reply) = request.message.reply.clone() else {
            return;
        };
        let e = &mut self.endpoints[request.endpoint];
        e.requests += 1;
        e.processing_ns += u64::try_from(request.received.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let sent = match answer {
            Ok(body) => self.client.publish(reply, body.into()).await,
            Err(err) => {
                e.errors += 1;
                e.last_error = format!("{}:{}", err.code, err.text);
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Service-Error", err.text.as_str());
                headers.insert("Nats-Service-Error-Code", err.code.to_string().as_str());
                self.client
                    .publish_with_headers(reply, headers, bytes::Bytes::new())
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot send a control reply");
        }
    }

    /// Unsubscribes everything.
    pub fn stop(self) {
        drop(self.subs);
    }

    fn document(&self, kind: &str, stats: Option<()>) -> Vec<u8> {
        #[derive(Serialize)]
        struct EndpointDoc<'a> {
            name: &'a str,
            subject: &'a str,
            queue_group: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            num_requests: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            num_errors: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            last_error: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            processing_time: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            average_processing_time: Option<u64>,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(rename = "type")]
            kind: String,
            name: &'a str,
            id: &'a str,
            version: &'a str,
            metadata: &'a HashMap<String, String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            description: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            started: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            endpoints: Option<Vec<EndpointDoc<'a>>>,
        }
        let with = kind != "ping";
        let endpoints = with.then(|| {
            self.endpoints
                .iter()
                .map(|e| EndpointDoc {
                    name: e.name,
                    subject: &e.subject,
                    queue_group: QUEUE_GROUP,
                    num_requests: stats.map(|()| e.requests),
                    num_errors: stats.map(|()| e.errors),
                    last_error: stats.map(|()| e.last_error.as_str()),
                    processing_time: stats.map(|()| e.processing_ns),
                    average_processing_time: stats
                        .map(|()| e.processing_ns.checked_div(e.requests).unwrap_or(0)),
                })
                .collect()
        });
        let doc = Doc {
            kind: format!("io.nats.micro.v1.{kind}_response"),
            name: self.identity.name,
            id: &self.id,
            version: self.identity.version,
            metadata: &self.identity.metadata,
            description: (kind == "info").then_some(self.identity.description),
            started: stats.map(|()| self.started.as_str()),
            endpoints,
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}
