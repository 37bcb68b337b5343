//! Proptest strategies for every wire message, and fixed sample messages for golden vectors.
#![allow(dead_code, missing_docs)]

use proptest::prelude::*;
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DeviceId, DocId, Hash, Heads, Message, Priority};

pub fn collection() -> impl Strategy<Value = Collection> {
    "[a-z][a-z0-9_-]{0,12}".prop_map(|s| Collection::new(s).expect("pattern is valid"))
}

pub fn doc_id() -> impl Strategy<Value = DocId> {
    (collection(), "[A-Za-z0-9_.:-]{1,20}").prop_map(|(c, id)| DocId::new(c, id).expect("valid"))
}

pub fn heads() -> impl Strategy<Value = Heads> {
    proptest::collection::vec(any::<[u8; 32]>().prop_map(Hash), 0..3).prop_map(Heads::new)
}

fn priority() -> impl Strategy<Value = Priority> {
    proptest::sample::select(Priority::ALL.to_vec())
}

fn profile() -> impl Strategy<Value = Profile> {
    (
        proptest::sample::select(vec![
            DeviceClass::Phone,
            DeviceClass::Tablet,
            DeviceClass::Desktop,
            DeviceClass::Server,
        ]),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<bool>(),
        any::<bool>(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(class, storage, down, up, metered, realtime, threshold)| Profile {
                class,
                storage_budget_bytes: storage,
                download_bytes_per_s: down,
                upload_bytes_per_s: up,
                metered,
                realtime,
                metered_max_doc_bytes: threshold,
            },
        )
}

fn subscription() -> impl Strategy<Value = CollectionSubscription> {
    (collection(), priority(), any::<bool>()).prop_map(|(collection, priority, eager)| {
        CollectionSubscription {
            collection,
            priority,
            mode: if eager {
                SyncMode::Eager
            } else {
                SyncMode::OnDemand
            },
        }
    })
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (
        collection(),
        any::<u64>(),
        proptest::option::of("[0-9a-f]{0,32}"),
    )
        .prop_map(|(collection, seq, epoch)| Cursor {
            collection,
            seq,
            epoch,
            receipt: None,
        })
}

fn plan_entry() -> impl Strategy<Value = PlanEntry> {
    let reason = proptest::option::of(proptest::sample::select(vec![
        DeferReason::Metered,
        DeferReason::LowPriority,
        DeferReason::OnDemand,
        DeferReason::StorageBudget,
    ]));
    (doc_id(), priority(), any::<u64>(), reason).prop_map(|(doc, priority, bytes, reason)| {
        PlanEntry {
            doc,
            priority,
            bytes,
            reason,
            changed_ms: None,
        }
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn vec<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(s, 0..4)
}

pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            vec(any::<u32>()),
            vec(any::<u32>()),
            profile(),
            ".{0,16}",
            vec(any::<u32>())
        )
            .prop_map(|(versions, compression, profile, client, features)| {
                Message::Hello(Hello {
                    versions,
                    compression,
                    profile,
                    client,
                    features,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            ".{0,16}",
            any::<u64>(),
            any::<(u64, u32, u64, u32, u64)>(),
            proptest::option::of("[0-9a-f]{0,32}"),
            vec(any::<u32>()),
        )
            .prop_map(
                |(version, compression, session, server_time_ms, l, epoch, features)| {
                    Message::Welcome(Welcome {
                        version,
                        compression,
                        session,
                        server_time_ms,
                        limits: Limits {
                            max_frame_bytes: l.0,
                            max_frames_per_s: l.1,
                            max_bytes_per_s: l.2,
                            max_docs_per_subscription: l.3,
                            idle_timeout_ms: l.4,
                        },
                        epoch,
                        features,
                    })
                }
            ),
        vec(subscription()).prop_map(|collections| Message::Subscribe(Subscribe { collections })),
        (
            vec(cursor()),
            vec((doc_id(), heads()).prop_map(|(doc, heads)| DocHeads { doc, heads })),
            proptest::option::of(vec(doc_id())),
            proptest::option::of(vec(cursor())),
        )
            .prop_map(
                |(cursors, changed, fetched, acked)| Message::Reconcile(Reconcile {
                    cursors,
                    changed,
                    fetched,
                    acked,
                })
            ),
        (
            vec(plan_entry()),
            vec(plan_entry()),
            vec(cursor()),
            any::<bool>(),
            vec(collection()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(
                |(send, deferred, cursors, update, reset, id)| Message::Plan(Plan {
                    send,
                    deferred,
                    cursors,
                    update,
                    fetch: false,
                    reset,
                    id,
                })
            ),
        any::<u64>().prop_map(|plan| Message::PlanDone(PlanDone { plan })),
        (
            vec((doc_id(), bytes()).prop_map(|(doc, message)| SyncItem {
                doc,
                message,
                priority: None
            })),
            proptest::option::of(vec(cursor()))
        )
            .prop_map(|(items, positions)| Message::Sync(Sync { items, positions })),
        vec(
            (doc_id(), heads(), any::<Option<u64>>()).prop_map(|(doc, heads, seq)| AckItem {
                doc,
                heads,
                seq
            })
        )
        .prop_map(|items| Message::Ack(Ack {
            items,
            positions: None
        })),
        profile().prop_map(|profile| Message::UpdateProfile(UpdateProfile { profile })),
        ".{0,40}".prop_map(|token| Message::RefreshToken(RefreshToken { token })),
        vec(doc_id()).prop_map(|docs| Message::Fetch(Fetch { docs })),
        (
            doc_id(),
            bytes(),
            proptest::option::of(any::<[u8; 16]>().prop_map(DeviceId::from_bytes))
        )
            .prop_map(|(doc, payload, from)| Message::Ephemeral(Ephemeral {
                doc,
                payload: payload.into(),
                from
            })),
        (
            any::<u16>(),
            ".{0,20}",
            any::<Option<u64>>(),
            proptest::option::of(doc_id()),
            proptest::option::of(collection())
        )
            .prop_map(|(code, message, retry_after_ms, doc, collection)| {
                Message::Error(Error {
                    code: ErrorCode(code),
                    message,
                    retry_after_ms,
                    doc,
                    collection,
                })
            }),
    ]
}

/// One fixed sample of every message type, for the golden vectors.
pub fn samples() -> Vec<(&'static str, Message)> {
    let todos = Collection::new("todos").expect("valid");
    let doc: DocId = "todos/milk".parse().expect("valid");
    let heads = Heads::new(vec![Hash([0xab; 32])]);
    let profile = Profile {
        class: DeviceClass::Phone,
        storage_budget_bytes: Some(1 << 30),
        download_bytes_per_s: Some(1_000_000),
        upload_bytes_per_s: None,
        metered: true,
        realtime: true,
        metered_max_doc_bytes: None,
    };
    let entry = PlanEntry {
        doc: doc.clone(),
        priority: Priority::High,
        bytes: 512,
        reason: None,
        changed_ms: None,
    };
    vec![
        (
            "hello",
            Message::Hello(Hello {
                versions: vec![1],
                compression: vec![0],
                profile: profile.clone(),
                client: "syncline/0.1.0".into(),
                features: vec![1],
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: 1,
                compression: 0,
                session: "s-1".into(),
                server_time_ms: 1_764_000_000_000,
                limits: Limits {
                    max_frame_bytes: 16 << 20,
                    max_frames_per_s: 1000,
                    max_bytes_per_s: 64 << 20,
                    max_docs_per_subscription: 100_000,
                    idle_timeout_ms: 60_000,
                },
                epoch: None,
                features: vec![1],
            }),
        ),
        (
            "subscribe",
            Message::Subscribe(Subscribe {
                collections: vec![CollectionSubscription {
                    collection: todos.clone(),
                    priority: Priority::Normal,
                    mode: SyncMode::Eager,
                }],
            }),
        ),
        (
            "reconcile",
            Message::Reconcile(Reconcile {
                cursors: vec![Cursor {
                    collection: todos.clone(),
                    seq: 42,
                    epoch: None,
                    receipt: None,
                }],
                changed: vec![DocHeads {
                    doc: doc.clone(),
                    heads: heads.clone(),
                }],
                fetched: Some(vec![doc.clone()]),
                acked: None,
            }),
        ),
        (
            "plan",
            Message::Plan(Plan {
                send: vec![entry.clone()],
                deferred: vec![PlanEntry {
                    reason: Some(DeferReason::Metered),
                    ..entry
                }],
                cursors: vec![Cursor {
                    collection: todos,
                    seq: 43,
                    epoch: None,
                    receipt: None,
                }],
                update: false,
                fetch: false,
                reset: vec![],
                id: Some(1),
            }),
        ),
        ("plan_done", Message::PlanDone(PlanDone { plan: 1 })),
        (
            "sync",
            Message::Sync(Sync {
                items: vec![SyncItem {
                    doc: doc.clone(),
                    message: vec![0x42, 0x00, 0x01],
                    priority: None,
                }],
                positions: None,
            }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                items: vec![AckItem {
                    doc: doc.clone(),
                    heads,
                    seq: Some(43),
                }],
                positions: None,
            }),
        ),
        (
            "update_profile",
            Message::UpdateProfile(UpdateProfile {
                profile: Profile {
                    metered: false,
                    ..profile
                },
            }),
        ),
        (
            "refresh_token",
            Message::RefreshToken(RefreshToken {
                token: "eyJhbGciOiJIUzI1NiJ9.e30.sig".into(),
            }),
        ),
        (
            "fetch",
            Message::Fetch(Fetch {
                docs: vec![doc.clone()],
            }),
        ),
        (
            "ephemeral",
            Message::Ephemeral(Ephemeral {
                doc,
                payload: b"cursor:3".as_slice().into(),
                from: Some(DeviceId::from_bytes([7; 16])),
            }),
        ),
        (
            "error",
            Message::Error(Error {
                code: ErrorCode::RATE_LIMITED,
                message: "slow down".into(),
                retry_after_ms: Some(250),
                doc: None,
                collection: None,
            }),
        ),
    ]
}
