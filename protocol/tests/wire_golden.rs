//! Golden vectors: the encoding of one sample of every message is pinned in
//! `protocol/test_data/<name>.hex`, so any change to the wire format is a visible diff.
//! Regenerate deliberately with `UPDATE_GOLDEN=1 cargo test -p syncline-protocol --test wire_golden`.

mod common;

use std::path::PathBuf;

use syncline_protocol::frame;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}

#[test]
fn encodings_match_the_golden_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let samples = common::samples();
    assert_eq!(samples.len(), 13, "one sample per message type");
    for (name, message) in samples {
        let path = dir.join(format!("{name}.hex"));
        let encoded = frame::encode(&message);
        if update {
            std::fs::write(&path, hex(&encoded) + "\n").expect("write golden vector");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
                path.display()
            )
        });
        assert_eq!(hex(&encoded), golden.trim(), "{name}: the encoding changed");
        assert_eq!(
            frame::decode(&unhex(&golden), 1 << 20),
            Ok(message),
            "{name}: golden vector decodes"
        );
    }
}

/// A zstd-compressed frame, pinned for decoding: the compressed bytes may differ between zstd
/// versions, but every receiver must read this frame as this message.
#[test]
fn a_compressed_frame_decodes_as_pinned() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/sync_zstd.hex");
    let (_, message) = common::samples()
        .into_iter()
        .find(|(name, _)| *name == "sync")
        .expect("the sync sample");
    let message = match message {
        syncline_protocol::Message::Sync(mut sync) => {
            // Enough items for compression to apply.
            let item = sync.items[0].clone();
            sync.items = vec![item; 32];
            syncline_protocol::Message::Sync(sync)
        }
        other => panic!("not a sync: {other:?}"),
    };
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let encoded = frame::encode_with(&message, frame::Compression::Zstd);
        assert_eq!(encoded[0], frame::FLAG_ZSTD, "the sample must compress");
        std::fs::write(&path, hex(&encoded) + "\n").expect("write golden vector");
        return;
    }
    let golden = std::fs::read_to_string(&path).expect("sync_zstd.hex");
    let bytes = unhex(&golden);
    assert_eq!(bytes[0], frame::FLAG_ZSTD);
    assert_eq!(frame::decode(&bytes, 1 << 20), Ok(message));
}
