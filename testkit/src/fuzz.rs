//! The bodies of the fuzz targets (`fuzz/`, run by `cargo xtask fuzz`), one per decoder of
//! untrusted input, and [`TARGETS`] to run any of them by name. They live here, in the
//! workspace, so that the committed corpus and every input that once crashed replay as an
//! ordinary test (`tests/tests/fuzz_corpus.rs`) without the fuzzer.
//!
//! Each takes arbitrary bytes and must neither panic nor hang, whatever they are; a target
//! also checks a property where one holds (a decoded frame re-encodes to an equal message).

use std::sync::Arc;

use syncline_protocol::messages::{
    CollectionSubscription, DeviceClass, Limits, Message, Sync, SyncItem, SyncMode,
};
use syncline_protocol::payload::{Budget, PayloadLimits};
use syncline_protocol::{Collection, DeviceId, DocId, Priority, frame};
use syncline_relay::auth::claims::CollectionSet;
use syncline_relay::auth::{Authenticator, Grants, Identity, Verified};
use syncline_relay::hub::{DocGraph, Hub};
use syncline_relay::session::{Action, Session};
use syncline_relay::storage::MemoryStorage;

thread_local! {
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a relay path, where a panic raised inside Automerge is contained by design: the
/// relay calls Automerge on client data inside `catch_unwind` (and the relay core and each
/// connection task contain any other). libFuzzer's panic hook aborts on every panic, caught
/// or not; this hook lets those raised in Automerge's code unwind to the relay's
/// `catch_unwind` instead, so that what the fuzzer reports is what would hurt the relay.
fn contained<R>(f: impl FnOnce() -> R) -> R {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_automerge = info
                .location()
                .is_some_and(|l| l.file().contains("/automerge-"));
            if !(in_automerge && CONTAINED.with(std::cell::Cell::get)) {
                previous(info);
            }
        }));
    });
    CONTAINED.with(|c| c.set(true));
    let result = f();
    CONTAINED.with(|c| c.set(false));
    result
}

/// A fuzz target: a name and what it does with one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its corpus directory under `fuzz/corpus/`.
pub const TARGETS: &[Target] = &[
    ("frame", frame),
    ("payload", payload),
    ("session", session),
    ("hub", hub),
    ("token", token),
    ("config", config),
    ("device", device),
];

/// A frame decoded with a 1 MiB limit; one that decodes re-encodes to the same message.
pub fn frame(data: &[u8]) {
    if let Ok(message) = frame::decode(data, 1 << 20) {
        let again = frame::decode(&frame::encode(&message), usize::MAX).expect("re-decodes");
        assert_eq!(again, message, "a decoded frame re-encodes to itself");
    }
}

/// Automerge chunks checked against the default budget, then (when they pass) parsed and
/// added to a document as the hub does.
pub fn payload(data: &[u8]) {
    contained(|| payload_inner(data));
}

fn payload_inner(data: &[u8]) {
    let mut budget = Budget::new(PayloadLimits::DEFAULT);
    if budget.check(data).is_ok()
        && let Ok(changes) = syncline_relay::hub::parse_checked(data)
    {
        let _ = DocGraph::new().add(changes, None);
    }
}

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

fn verified() -> Verified {
    let todos: std::collections::BTreeSet<Collection> = [todos()].into();
    Verified {
        identity: Identity {
            user: "fuzz".into(),
            device: DeviceId::from_bytes([9; 16]),
            tenant: syncline_relay::Tenant::new("acme").expect("valid"),
        },
        grants: Grants {
            read: CollectionSet::Only(todos.clone()),
            write: CollectionSet::Only(todos),
        },
        expires_at: 4_000_000_000,
        valid_until: 4_000_000_000,
    }
}

/// Frames into a relay session past `Hello`: each input is a run of frames, each prefixed with
/// its length (two bytes, little-endian), with a tick between frames.
pub fn session(data: &[u8]) {
    contained(|| session_inner(data));
}

fn session_inner(data: &[u8]) {
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_frames_per_s: 1_000,
        max_bytes_per_s: 64 << 20,
        max_docs_per_subscription: 1_000,
        idle_timeout_ms: 60_000,
    };
    let mut s = Session::new("fuzz".into(), verified(), limits, 0);
    s.handle_frame(&frame::encode(&crate::hello("fuzz", DeviceClass::Phone)), 0);
    for (i, frame) in frames(data).enumerate() {
        let now = 1 + i as u64;
        s.handle_frame(frame, now);
        s.handle_tick(now);
        s.release(now);
    }
}

/// Splits `data` into length-prefixed frames (two bytes, little-endian); a short tail is one
/// last frame.
fn frames(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() < 2 {
            let all = rest;
            rest = &[];
            return Some(all);
        }
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (frame, tail) = rest[2..].split_at(len);
        rest = tail;
        Some(frame)
    })
}

/// Sync messages into the hub from a writer (memory storage): each length-prefixed part of
/// the input is one item's Automerge sync message, for one of a few documents, followed by a
/// read-only device joining and reconciling.
pub fn hub(data: &[u8]) {
    contained(|| hub_inner(data));
}

fn hub_inner(data: &[u8]) {
    let mut hub = Hub::new(Arc::new(MemoryStorage::new()));
    let v = verified();
    hub.connect(1, v.identity.clone(), v.grants.clone(), 0);
    let subscribe = Action::Subscribe(vec![CollectionSubscription {
        collection: todos(),
        priority: Priority::Normal,
        mode: SyncMode::Eager,
    }]);
    let _ = hub.handle(1, subscribe.clone(), 0);
    for (i, message) in frames(data).enumerate() {
        let doc: DocId = format!("todos/d{}", i % 3).parse().expect("valid");
        let item = SyncItem {
            doc,
            message: message.to_vec(),
            priority: None,
        };
        let _ = hub.handle(1, Action::Sync(vec![item]), 1 + i as u64);
    }
    let mut reader = v.identity;
    reader.device = DeviceId::from_bytes([8; 16]);
    hub.connect(2, reader, v.grants, 100);
    let _ = hub.handle(2, subscribe, 100);
    let _ = hub.disconnect(1, 101);
    let _ = hub.disconnect(2, 101);
}

/// A bearer token verified with a development key.
pub fn token(data: &[u8]) {
    let auth = Authenticator::new(Some(vec![7; 32]), None, Some("syncline".into()), None, 30);
    let _ = auth.verify(&String::from_utf8_lossy(data), 1_800_000_000);
}

/// A relay configuration file, then its checks.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = toml::from_str::<syncline_relay::RelayConfig>(text)
    {
        let _ = config.check();
        let _ = config.payload_limits();
    }
}

/// Frames from a relay into a device's engine (a store in a temporary directory), after a
/// connection opens: the device must neither panic nor lose its own write.
pub fn device(data: &[u8]) {
    use syncline::engine::{Engine, Event};
    use syncline::{Store, StoreOptions};
    let dir = crate::temp_dir();
    let store = Store::open_with(
        dir.path().join("store.db"),
        StoreOptions {
            durability: syncline::Durability::Normal,
            ..StoreOptions::default()
        },
    )
    .expect("open a store");
    let mine = store.create(&todos()).expect("create");
    mine.put("title", "mine").expect("put");
    let config = crate::engine_config(
        "fuzz",
        vec![CollectionSubscription {
            collection: todos(),
            priority: Priority::Normal,
            mode: SyncMode::Eager,
        }],
    );
    let mut engine = Engine::new(store.clone(), config, 1);
    engine.handle(Event::Start, 0);
    engine.handle(Event::Connected, 1);
    for (i, frame) in frames(data).enumerate() {
        engine.handle(Event::Frame(frame.to_vec()), 2 + i as u64);
    }
    let kept = store.document(mine.id()).expect("still there");
    assert_eq!(
        kept.get("title").expect("readable"),
        Some(syncline::Value::Str("mine".into())),
        "the device's own write survives whatever the relay sends"
    );
}

/// Seeds for each target's corpus: valid inputs of every kind it decodes, so that fuzzing
/// starts from the protocol rather than from noise.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    let mut doc = automerge::Automerge::new();
    for i in 0..20 {
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, format!("k{}", i % 4), i64::from(i))
            .expect("put");
        tx.commit();
    }
    let mut change = doc.get_last_local_change().expect("a change").clone();
    let mut state = syncline_protocol::sync_state::primed(Vec::new());
    let message = doc
        .generate_sync_message(&mut state)
        .expect("a message")
        .encode();
    let sync = frame::encode(&Message::Sync(Sync {
        items: vec![SyncItem {
            doc: "todos/d0".parse().expect("valid"),
            message: message.clone(),
            priority: Some(Priority::High),
        }],
        positions: None,
    }));
    let hello = frame::encode(&crate::hello("fuzz", DeviceClass::Phone));
    let prefixed = |frames: &[&[u8]]| {
        let mut out = Vec::new();
        for f in frames {
            out.extend(u16::try_from(f.len()).unwrap_or(u16::MAX).to_le_bytes());
            out.extend(*f);
        }
        out
    };
    vec![
        ("frame", hello.clone()),
        ("frame", sync.clone()),
        ("payload", change.bytes().into_owned()),
        ("payload", change.raw_bytes().to_vec()),
        ("payload", doc.save()),
        ("session", prefixed(&[&sync])),
        ("hub", prefixed(&[&message])),
        (
            "token",
            b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl".to_vec(),
        ),
        (
            "config",
            b"listen = \"0.0.0.0:7878\"\nmax_frame_bytes = 4096\n".to_vec(),
        ),
        ("device", prefixed(&[&sync])),
    ]
}
