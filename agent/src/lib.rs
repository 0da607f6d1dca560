//! `tributary-agent`: the edge agent that runs on the Pi.
//!
//! Sensors ([`sensors`]) produce observations into a bounded channel; once
//! per flush interval the [`batcher`] groups them per sensor into wire
//! envelopes, appends them to the on-disk [`buffer`] and fsyncs once (group
//! commit); the [`forwarder`] publishes committed records to the hub's
//! JetStream through the local leafnode, many in flight, and acknowledges a
//! record in the buffer only when the hub acknowledged it. [`clock`] tells
//! whether the system clock is synchronized, which every reading carries.
//! [`run`] wires it all together under one shutdown signal.

pub mod batcher;
pub mod buffer;
pub mod clock;
pub mod forwarder;
pub mod metrics;
pub mod nats_connect;
pub mod run;
pub mod sensors;
pub mod stats;
pub mod systemd;
