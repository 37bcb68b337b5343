//! The engine without sockets: events and hand-made relay frames in, effects checked.

use syncline_protocol::messages::{
    Ack, AckItem, CollectionSubscription, DeviceClass, Error as ErrorMessage, ErrorCode, Limits,
    Plan, Profile, SyncMode,
};
use syncline_protocol::{Heads as WireHeads, Priority};

use super::*;
use crate::{StoreOptions, Value};

struct Fixture {
    engine: Engine,
    store: Store,
    _dir: tempfile::TempDir,
}

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_with(
        dir.path().join("s.db"),
        StoreOptions {
            durability: crate::Durability::Normal,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let config = EngineConfig {
        relay: "ws://relay".into(),
        profile: Profile {
            class: DeviceClass::Phone,
            storage_budget_bytes: None,
            download_bytes_per_s: None,
            upload_bytes_per_s: None,
            metered: false,
            realtime: true,
            metered_max_doc_bytes: None,
        },
        subscriptions: vec![CollectionSubscription {
            collection: todos(),
            priority: Priority::Normal,
            mode: SyncMode::Eager,
        }],
        client: "test".into(),
        backoff: Backoff {
            min_ms: 100,
            max_ms: 1_000,
        },
        stall_timeout_ms: 5_000,
        sync_interval_ms: 60_000,
    };
    Fixture {
        engine: Engine::new(store.clone(), config, 7),
        store,
        _dir: dir,
    }
}

fn sent(effects: &[Effect]) -> Vec<Message> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(bytes) => Some(frame::decode(bytes, usize::MAX).expect("decodes")),
            _ => None,
        })
        .collect()
}

fn wake_at(effects: &[Effect]) -> Option<u64> {
    effects.iter().find_map(|e| match e {
        Effect::WakeAt(at) => Some(*at),
        _ => None,
    })
}

fn welcome() -> Vec<u8> {
    frame::encode(&Message::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        compression: 0,
        session: "s".into(),
        server_time_ms: 0,
        limits: Limits {
            max_frame_bytes: 1 << 20,
            max_frames_per_s: 100,
            max_bytes_per_s: 1 << 20,
            max_docs_per_subscription: 1000,
            idle_timeout_ms: 60_000,
        },
    }))
}

fn empty_plan(seq: u64) -> Vec<u8> {
    frame::encode(&Message::Plan(Plan {
        send: Vec::new(),
        deferred: Vec::new(),
        cursors: vec![Cursor {
            collection: todos(),
            seq,
        }],
        update: false,
    }))
}

fn wire(heads: &Heads) -> WireHeads {
    WireHeads::new(heads.as_slice().iter().map(|h| Hash(h.0)).collect())
}

#[test]
fn the_first_flight_pushes_pending_changes_between_subscribe_and_reconcile() {
    let mut f = fixture();
    let doc = f.store.create(&todos()).expect("create");
    doc.put("title", "milk").expect("put");
    assert!(f.engine.handle(Event::Start, 0).contains(&Effect::Connect));
    let effects = f.engine.handle(Event::Connected, 10);
    let names: Vec<&str> = sent(&effects).iter().map(Message::name).collect();
    assert_eq!(names, ["hello", "subscribe", "sync", "reconcile"]);
    let Message::Sync(sync) = &sent(&effects)[2] else {
        unreachable!("checked above")
    };
    let message = SyncMessage::decode(&sync.items[0].message).expect("a sync message");
    assert!(
        !message.changes.is_empty(),
        "the first message already carries the changes"
    );
    assert!(matches!(f.engine.status(), Status::Syncing { .. }));
}

#[test]
fn synced_only_after_the_plan_and_every_ack_and_then_nothing_is_pending() {
    let mut f = fixture();
    let doc = f.store.create(&todos()).expect("create");
    f.engine.handle(Event::Start, 0);
    f.engine.handle(Event::Connected, 10);
    f.engine.handle(Event::Frame(welcome()), 11);
    f.engine.handle(Event::Frame(empty_plan(5)), 12);
    assert!(
        matches!(f.engine.status(), Status::Syncing { .. }),
        "an ack is due"
    );
    let heads = doc.heads().expect("heads");
    let ack = frame::encode(&Message::Ack(Ack {
        items: vec![AckItem {
            doc: doc.id().clone(),
            heads: wire(&heads),
            seq: Some(6),
        }],
    }));
    let effects = f.engine.handle(Event::Frame(ack), 13);
    assert!(effects.contains(&Effect::Status(Status::Synced { at_ms: 13 })));
    assert!(f.store.pending_documents().expect("pending").is_empty());
    assert_eq!(
        f.store.cursors("ws://relay").expect("cursors"),
        vec![(todos(), 5)]
    );
}

#[test]
fn a_local_change_while_connected_is_sent_at_once() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    f.engine.handle(Event::Connected, 10);
    f.engine.handle(Event::Frame(welcome()), 11);
    f.engine.handle(Event::Frame(empty_plan(0)), 12);
    let doc = f.store.create(&todos()).expect("create");
    doc.put("title", Value::from("x")).expect("put");
    let effects = f
        .engine
        .handle(Event::LocalChanges(vec![doc.id().clone()]), 20);
    let messages = sent(&effects);
    assert!(matches!(&messages[..], [Message::Sync(s)] if s.items[0].doc == *doc.id()));
    assert!(matches!(f.engine.status(), Status::Syncing { .. }));
}

#[test]
fn a_cut_connection_is_retried_with_growing_jittered_delays_capped() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..12 {
        f.engine.handle(Event::Connected, now);
        let effects = f
            .engine
            .handle(Event::Disconnected(Disconnect::Failed("reset".into())), now);
        let at = wake_at(&effects).expect("a reconnect is scheduled");
        delays.push(at - now);
        if at > now {
            // Nothing happens before the timer.
            assert!(
                !f.engine
                    .handle(Event::Tick, at - 1)
                    .contains(&Effect::Connect)
            );
        }
        now = at;
        assert!(f.engine.handle(Event::Tick, now).contains(&Effect::Connect));
    }
    assert!(delays.iter().all(|d| *d <= 1_000), "{delays:?}");
    assert!(delays[0] <= 100, "{delays:?}");
    assert_eq!(f.engine.status(), &Status::Connecting);
}

#[test]
fn network_down_stops_retrying_and_network_up_connects_at_once() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    f.engine.handle(Event::Connected, 1);
    let effects = f.engine.handle(Event::NetworkDown, 2);
    assert!(effects.contains(&Effect::Disconnect));
    assert_eq!(f.engine.status(), &Status::Offline);
    assert!(f.engine.handle(Event::Tick, 1_000_000).is_empty());
    let effects = f.engine.handle(Event::NetworkUp, 1_000_001);
    assert!(effects.contains(&Effect::Connect));
    // Pause and resume do the same for the app's own reasons.
    f.engine.handle(Event::Connected, 1_000_002);
    assert!(
        f.engine
            .handle(Event::Pause, 1_000_003)
            .contains(&Effect::Disconnect)
    );
    assert!(f.engine.handle(Event::Tick, 2_000_000).is_empty());
    assert!(
        f.engine
            .handle(Event::Resume, 2_000_001)
            .contains(&Effect::Connect)
    );
}

#[test]
fn a_refused_token_is_an_error_with_its_reason_and_a_delayed_retry() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    let effects = f.engine.handle(
        Event::Disconnected(Disconnect::Unauthorized("expired".into())),
        5,
    );
    assert!(matches!(f.engine.status(), Status::Error { reason } if reason.contains("expired")));
    let at = wake_at(&effects).expect("retried later, not in a loop");
    assert!(at >= 5);
    assert!(!effects.contains(&Effect::Connect));
}

#[test]
fn a_refused_item_stops_the_wait_and_surfaces_the_reason() {
    let mut f = fixture();
    let doc = f.store.create(&todos()).expect("create");
    f.engine.handle(Event::Start, 0);
    f.engine.handle(Event::Connected, 1);
    f.engine.handle(Event::Frame(welcome()), 2);
    f.engine.handle(Event::Frame(empty_plan(0)), 3);
    let refusal = frame::encode(&Message::Error(ErrorMessage {
        code: ErrorCode::FORBIDDEN,
        message: "no write grant for collection todos".into(),
        retry_after_ms: None,
        doc: Some(doc.id().clone()),
    }));
    f.engine.handle(Event::Frame(refusal), 4);
    assert!(
        matches!(f.engine.status(), Status::Error { reason } if reason.contains("no write grant"))
    );
    // Still pending: nothing is lost, and it is not resent on this connection.
    assert_eq!(f.store.pending_documents().expect("pending").len(), 1);
    doc.put("more", 1).expect("put");
    let effects = f
        .engine
        .handle(Event::LocalChanges(vec![doc.id().clone()]), 5);
    assert!(sent(&effects).is_empty());
}

#[test]
fn a_silent_relay_is_replaced_after_the_stall_timeout() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    let effects = f.engine.handle(Event::Connected, 100);
    assert_eq!(wake_at(&effects), Some(5_100));
    let effects = f.engine.handle(Event::Tick, 5_100);
    assert!(effects.contains(&Effect::Disconnect));
    assert!(wake_at(&effects).is_some());
}

#[test]
fn garbage_from_the_relay_is_a_protocol_error_and_a_reconnect() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    f.engine.handle(Event::Connected, 1);
    let effects = f.engine.handle(Event::Frame(vec![0, 0xff, 0x13]), 2);
    assert!(effects.contains(&Effect::Disconnect));
    assert!(
        matches!(f.engine.status(), Status::Error { reason } if reason.contains("protocol error"))
    );
}

#[test]
fn a_burst_of_local_writes_is_paced_into_few_frames_below_the_relay_rate() {
    let mut f = fixture();
    f.engine.handle(Event::Start, 0);
    f.engine.handle(Event::Connected, 1);
    // The relay allows 4 frames/s: the engine keeps to 2 a second for local changes.
    let slow = frame::encode(&Message::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        compression: 0,
        session: "s".into(),
        server_time_ms: 0,
        limits: Limits {
            max_frame_bytes: 1 << 20,
            max_frames_per_s: 4,
            max_bytes_per_s: 1 << 20,
            max_docs_per_subscription: 1000,
            idle_timeout_ms: 60_000,
        },
    }));
    f.engine.handle(Event::Frame(slow), 2);
    f.engine.handle(Event::Frame(empty_plan(0)), 3);
    let mut frames = 0;
    let mut wake = None;
    for i in 0..50u64 {
        let doc = f.store.create(&todos()).expect("create");
        let effects = f
            .engine
            .handle(Event::LocalChanges(vec![doc.id().clone()]), 10 + i);
        frames += sent(&effects).len();
        wake = wake_at(&effects).or(wake);
    }
    assert!(frames <= 2, "{frames} frames for a burst of 50 writes");
    let at = wake.expect("the rest is scheduled");
    let effects = f.engine.handle(Event::Tick, at);
    let rest = sent(&effects);
    assert_eq!(rest.len(), 1, "the rest goes in one frame");
    let Message::Sync(sync) = &rest[0] else {
        unreachable!("a sync frame")
    };
    assert!(sync.items.len() >= 48);
}
