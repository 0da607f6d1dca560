//! `tributary-agent`: the edge agent that runs on the Pi.
//!
//! Sensors ([`sensors`]) produce observations into a bounded channel; the
//! [`batcher`] cuts them per sensor into encoded wire envelopes, at once
//! while the link is idle ([`link_idle`]) and within a linger of a few
//! milliseconds while it is busy; the [`link`] publishes each at once to the hub's
//! JetStream through the local leafnode and holds it in memory until the hub
//! acknowledges it, spilling to the on-disk [`buffer`] only what is not
//! acknowledged within one flush interval (and sending the disk backlog
//! after an outage). The buffer has one owner, a thread of its own
//! ([`buffer_owner`]). [`clock`] tells whether the system clock is
//! synchronized, which every reading carries. [`control`] makes the agent
//! a NATS service (status, read, config) and takes its sensors from the
//! fleet store. [`run`] supervises it all under one shutdown signal.

pub mod batcher;
pub mod buffer;
pub mod buffer_owner;
pub mod clock;
pub mod commands;
pub mod control;
pub mod latency;
pub mod link;
pub mod link_idle;
pub mod metrics;
pub mod nats_connect;
pub mod run;
pub mod sensors;
pub mod slot_pair;
pub mod state_file;
pub mod state_lock;
pub mod stats;
pub mod systemd;

pub use tributary_config::logging::error_chain;
