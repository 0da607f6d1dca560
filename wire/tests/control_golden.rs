//! Golden control-plane documents of format 1 (`tests/fixtures/control-v1/`):
//! each must keep decoding into its type, and encoding it again must give
//! the same JSON, so a change to `tributary_wire::control` that breaks the
//! readers of the central command or of other tools fails here.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_wire::control::{ConfigEvent, ConfigReply, DeviceStatus, ReadReply, UplinkStatus};

fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let path = format!(
        "{}/tests/fixtures/control-v1/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
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
    let s: DeviceStatus = round_trip("device-status.json");
    assert_eq!((s.format, s.config.revision), (1, Some(7)));
    assert_eq!(
        s.sensors[1].last.as_ref().unwrap().value.to_string(),
        "true"
    );
    let r: ReadReply = round_trip("read-reply.json");
    assert_eq!(r.how, "now");
    let c: ConfigReply = round_trip("config-reply.json");
    assert_eq!(c.origin.source, "file");
    let e: ConfigEvent = round_trip("config-event.json");
    assert_eq!(e.refusal.unwrap().line, Some(4));
    let u: UplinkStatus = round_trip("uplink-status.json");
    assert_eq!(u.owned_partitions, [0, 2]);
}
