//! Golden control-plane and downlink documents of format 1
//! (`tests/fixtures/control-v1/`, `tests/fixtures/command-v1/`):
//! each must keep decoding into its type, and encoding it again must give
//! the same JSON, so a change to `tributary_wire::control` that breaks the
//! readers of the central command or of other tools fails here.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_wire::command::{Command, Outcome, Verdict};
use tributary_wire::control::{ConfigEvent, ConfigReply, DeviceStatus, ReadReply, UplinkStatus};

fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        serde_json::to_value(&doc).unwrap(),
        original,
        "{name} changed shape"
    );
    doc
}

#[test]
fn the_golden_documents_of_format_1_decode_and_encode_unchanged() {
    let s: DeviceStatus = round_trip("control-v1/device-status.json");
    assert_eq!((s.format, s.config.revision), (1, Some(7)));
    assert_eq!(
        s.sensors[1].last.as_ref().unwrap().value.to_string(),
        "true"
    );
    let r: ReadReply = round_trip("control-v1/read-reply.json");
    assert_eq!(r.how, "now");
    let c: ConfigReply = round_trip("control-v1/config-reply.json");
    assert_eq!(c.origin.source, "file");
    let e: ConfigEvent = round_trip("control-v1/config-event.json");
    assert_eq!(e.refusal.unwrap().line, Some(4));
    let u: UplinkStatus = round_trip("control-v1/uplink-status.json");
    assert_eq!(u.owned_partitions, [0, 2]);
}

#[test]
fn the_golden_command_and_outcome_documents_of_format_1_decode_and_encode_unchanged() {
    let c: Command = round_trip("command-v1/command.json");
    assert_eq!(c.source.msg_id(), "commands:0:41");
    assert_eq!(c.value.to_string(), "40");
    let a: Outcome = round_trip("command-v1/outcome-applied.json");
    assert_eq!(
        (a.outcome, a.reason.as_deref(), a.latency_ms()),
        (Verdict::Applied, None, 15)
    );
    let r: Outcome = round_trip("command-v1/outcome-refused.json");
    assert_eq!(
        (r.outcome, r.clock.as_deref()),
        (Verdict::Refused, Some("unsynced"))
    );
}
