//! The frame codec: every message round-trips, and no input makes the decoder panic.

mod common;

use proptest::prelude::*;
use syncline_protocol::frame::{self, COMPRESS_FROM, Compression, FLAG_ZSTD, FrameError};
use syncline_protocol::{Message, messages};

const MAX: usize = 1 << 20;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(message in common::message()) {
        let bytes = frame::encode(&message);
        prop_assert_eq!(frame::decode(&bytes, MAX), Ok(message));
    }

    #[test]
    fn every_message_round_trips_compressed(message in common::message()) {
        let bytes = frame::encode_with(&message, Compression::Zstd);
        prop_assert!(bytes.len() <= frame::encode(&message).len(), "compression never adds bytes");
        prop_assert_eq!(frame::decode(&bytes, MAX), Ok(message));
    }

    #[test]
    fn arbitrary_compressed_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = vec![FLAG_ZSTD];
        bytes.extend(body);
        let _ = frame::decode(&bytes, MAX);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = frame::decode(&bytes, MAX);
    }

    #[test]
    fn truncated_and_corrupted_frames_are_errors(message in common::message(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let bytes = frame::encode(&message);
        let cut = cut.index(bytes.len());
        prop_assert!(frame::decode(&bytes[..cut], MAX).is_err(), "a strict prefix never decodes");
        let mut corrupted = bytes.clone();
        let at = flip.0.index(corrupted.len());
        corrupted[at] ^= flip.1 | 1;
        let _ = frame::decode(&corrupted, MAX); // error or another valid message, never a panic
    }
}

#[test]
fn oversize_frames_are_refused_before_parsing() {
    let garbage = vec![0xff; 100];
    assert_eq!(
        frame::decode(&garbage, 99),
        Err(FrameError::TooLarge { len: 100, max: 99 })
    );
    assert_eq!(frame::decode(&[], MAX), Err(FrameError::Empty));
    assert_eq!(frame::decode(&[2, 0x80], MAX), Err(FrameError::Flags(2)));
    assert!(matches!(
        frame::decode(&[FLAG_ZSTD, 0x80], MAX),
        Err(FrameError::Compression(_))
    ));
}

#[test]
fn unknown_types_are_reported_as_such() {
    // flags, [99, {}]
    assert_eq!(
        frame::decode(&[0, 0x82, 0x18, 99, 0xa0], MAX),
        Err(FrameError::UnknownType(99))
    );
}

#[test]
fn hostile_length_prefixes_and_nesting_are_errors() {
    // A Sync whose items array claims 2^32 elements but holds none.
    let claim = [0, 0x82, 0x06, 0xa1, 0x00, 0x9a, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        frame::decode(&claim, MAX),
        Err(FrameError::Malformed(_))
    ));
    // An unknown field holding 100k nested arrays.
    let mut deep = vec![0, 0x82, 0x0a, 0xa2, 0x00, 0x80, 0x05];
    deep.extend(std::iter::repeat_n(0x81, 100_000));
    deep.push(0x00);
    assert_eq!(
        frame::decode(&deep, MAX),
        Ok(Message::Fetch(messages::Fetch { docs: vec![] })),
        "unknown fields are skipped without recursion"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    // RefreshToken {0: "t", 7: [1, 2]}: key 7 is from a newer peer.
    let bytes = [
        0, 0x82, 0x09, 0xa2, 0x00, 0x61, b't', 0x07, 0x82, 0x01, 0x02,
    ];
    assert_eq!(
        frame::decode(&bytes, MAX),
        Ok(Message::RefreshToken(messages::RefreshToken {
            token: "t".into()
        }))
    );
}

#[test]
fn invalid_identifiers_are_malformed_frames() {
    // Fetch {0: ["Bad/x"]}: an invalid collection name.
    let mut bytes = vec![0, 0x82, 0x0a, 0xa1, 0x00, 0x81, 0x65];
    bytes.extend_from_slice(b"Bad/x");
    assert!(matches!(
        frame::decode(&bytes, MAX),
        Err(FrameError::Malformed(_))
    ));
}

/// A `Sync` of `items` documents with repetitive content, as real batches are.
fn big_sync(items: usize) -> Message {
    Message::Sync(messages::Sync {
        items: (0..items)
            .map(|i| messages::SyncItem {
                doc: format!("todos/{i:032x}").parse().expect("doc id"),
                message: vec![0x42; 64],
                priority: None,
            })
            .collect(),
        positions: None,
    })
}

#[test]
fn compression_applies_where_it_saves_bytes() {
    let sync = big_sync(50);
    let plain = frame::encode(&sync);
    let compressed = frame::encode_with(&sync, Compression::Zstd);
    assert_eq!(compressed[0], FLAG_ZSTD);
    assert!(
        compressed.len() * 4 < plain.len(),
        "{} vs {}",
        compressed.len(),
        plain.len()
    );
    assert_eq!(frame::decode(&compressed, MAX), Ok(sync));

    // Hello and Welcome never are (the peer does not know the choice yet), nor small bodies.
    let samples = common::samples();
    let hello = &samples
        .iter()
        .find(|(n, _)| *n == "hello")
        .expect("hello")
        .1;
    assert_eq!(
        frame::encode_with(hello, Compression::Zstd),
        frame::encode(hello)
    );
    let small = big_sync(1);
    assert!(frame::encode(&small).len() - 1 < COMPRESS_FROM);
    assert_eq!(frame::encode_with(&small, Compression::Zstd)[0], 0);
}

#[test]
fn a_decompression_bomb_stops_at_the_frame_limit() {
    // 16 MiB of zeros compress to a few hundred bytes; the receiver's limit is 64 KiB.
    let body = zstd::bulk::compress(&vec![0u8; 16 << 20], 3).expect("compress");
    assert!(body.len() < 4096);
    let mut bytes = vec![FLAG_ZSTD];
    bytes.extend(body);
    assert_eq!(
        frame::decode(&bytes, 64 << 10),
        Err(FrameError::TooLarge {
            len: (64 << 10) + 1,
            max: 64 << 10
        })
    );
}

/// A frame whose zstd header asks for a window over 16 MiB is refused before the window is
/// allocated; the context it was refused on then reads good frames as before.
#[test]
fn a_zstd_window_over_sixteen_megabytes_is_refused() {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).expect("encoder");
    encoder
        .set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
        .expect("window");
    std::io::Write::write_all(&mut encoder, &vec![7u8; 1 << 20]).expect("write");
    let body = encoder.finish().expect("finish");
    let mut bytes = vec![FLAG_ZSTD];
    bytes.extend(body);
    assert!(
        matches!(
            frame::decode(&bytes, 64 << 20),
            Err(FrameError::Compression(_))
        ),
        "{:?}",
        frame::decode(&bytes, 64 << 20).map(|_| ())
    );
    let sync = big_sync(200);
    let encoded = frame::encode_with(&sync, Compression::Zstd);
    assert_eq!(encoded[0], FLAG_ZSTD);
    assert_eq!(frame::decode(&encoded, 64 << 20), Ok(sync));
}

#[test]
fn negotiation_picks_the_first_offered_compression_the_receiver_implements() {
    let all = Compression::SUPPORTED;
    assert_eq!(Compression::negotiate(&[1, 0], &all), Compression::Zstd);
    assert_eq!(Compression::negotiate(&[0, 1], &all), Compression::None);
    assert_eq!(Compression::negotiate(&[9, 1], &all), Compression::Zstd);
    assert_eq!(Compression::negotiate(&[9], &all), Compression::None);
    assert_eq!(Compression::negotiate(&[], &all), Compression::None);
    assert_eq!(
        Compression::negotiate(&[1, 0], &[Compression::None]),
        Compression::None
    );
}

/// A deferral reason this revision does not know (a newer relay's) decodes as absent instead
/// of making the whole plan malformed; null decodes as absent too.
#[test]
fn an_unknown_deferral_reason_decodes_as_absent() {
    // [5, {0: [{0: "todos/a", 1: 1, 2: 10, 3: R}], 1: [], 2: []}]
    let plan = |reason: u8| {
        let mut bytes = vec![0x00, 0x82, 0x05, 0xa3, 0x00, 0x81, 0xa4, 0x00, 0x67];
        bytes.extend_from_slice(b"todos/a");
        bytes.extend_from_slice(&[0x01, 0x01, 0x02, 0x0a, 0x03, reason, 0x01, 0x80, 0x02, 0x80]);
        bytes
    };
    let reason = |bytes: Vec<u8>| match frame::decode(&bytes, MAX) {
        Ok(Message::Plan(p)) => p.send[0].reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(plan(0x01)), Some(messages::DeferReason::LowPriority));
    assert_eq!(reason(plan(0x09)), None);
    assert_eq!(reason(plan(0xf6)), None);
}
