//! Fuzz target: the wire envelope decoder (the uplink's and the agent's
//! `Envelope::decode`). Property: whatever decodes re-encodes (as the
//! current version) and decodes back to the same envelope, with the same
//! message id; the encoded length is what `encoded_len` predicts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_wire::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::decode(data) else {
        return;
    };
    let bytes = env
        .encode()
        .expect("a decoded envelope is valid, so it encodes");
    assert_eq!(bytes.len(), env.encoded_len(), "encoded_len is exact");
    let again = Envelope::decode(&bytes).expect("an encoded envelope decodes");
    assert_eq!(again, env, "decode(encode(e)) == e");
    assert_eq!(again.msg_id(), env.msg_id());
    assert_eq!(
        again.encode().expect("encodes"),
        bytes,
        "encoding is deterministic"
    );
});
