//! `tributary-agent`: the edge agent that runs on the Pi.
//!
//! Sensors produce observations into a bounded channel; once per flush
//! interval the batcher groups them per sensor into wire envelopes, appends
//! them to the on-disk [`buffer`] and fsyncs once (group commit); the
//! forwarder publishes committed records to the hub's JetStream through the
//! local leafnode, many in flight, and acknowledges a record in the buffer
//! only when the hub acknowledged it.

pub mod buffer;
pub mod stats;
