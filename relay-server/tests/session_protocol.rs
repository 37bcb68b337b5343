//! The relay's per-connection protocol logic, driven without sockets.

use std::collections::BTreeSet;

use automerge::sync::SyncDoc;
use automerge::transaction::Transactable;
use proptest::prelude::*;
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, Compression, DeviceId, DocId, Message, Priority, frame};
use syncline_relay::auth::claims::CollectionSet;
use syncline_relay::auth::{AuthError, Grants, Identity, Verified};
use syncline_relay::session::{Action, MAX_STRIKES, Output, Session, close_code};

const T0: u64 = 1_800_000_000_000;

fn col(s: &str) -> Collection {
    Collection::new(s).expect("valid")
}

fn only(names: &[&str]) -> CollectionSet {
    CollectionSet::Only(names.iter().map(|n| col(n)).collect::<BTreeSet<_>>())
}

fn verified(read: &[&str], write: &[&str], expires_secs: u64) -> Verified {
    Verified {
        identity: Identity {
            user: "alice".into(),
            device: DeviceId::from_bytes([1; 16]),
            tenant: syncline_relay::Tenant::new("acme").expect("valid"),
        },
        grants: Grants {
            read: only(read),
            write: only(write),
        },
        expires_at: expires_secs,
        valid_until: expires_secs,
    }
}

fn limits() -> Limits {
    Limits {
        max_frame_bytes: 4096,
        max_frames_per_s: 100,
        max_bytes_per_s: 1 << 20,
        max_docs_per_subscription: 1000,
        idle_timeout_ms: 60_000,
    }
}

/// A session for a device that may read todos and notes and write todos, past `Hello`.
fn open_session() -> Session {
    let mut s = Session::new(
        "s-1".into(),
        verified(&["todos", "notes"], &["todos"], T0 / 1000 + 3600),
        limits(),
        T0,
    );
    let out = s.handle_frame(&frame::encode(&hello(vec![1])), T0);
    assert!(matches!(&out.send[..], [Message::Welcome(_)]), "{out:?}");
    s
}

fn hello(versions: Vec<u32>) -> Message {
    Message::Hello(Hello {
        versions,
        compression: vec![0],
        profile: syncline_testkit::profile(DeviceClass::Phone),
        client: "test".into(),
        features: Vec::new(),
    })
}

fn send(s: &mut Session, m: Message) -> Output {
    s.handle_frame(&frame::encode(&m), T0 + 1)
}

fn error_codes(out: &Output) -> Vec<u16> {
    out.send
        .iter()
        .filter_map(|m| match m {
            Message::Error(e) => Some(e.code.0),
            _ => None,
        })
        .collect()
}

fn doc(s: &str) -> DocId {
    s.parse().expect("valid")
}

/// An Automerge sync message carrying one change (a write), and one carrying none (a read).
fn sync_messages() -> (Vec<u8>, Vec<u8>) {
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "x", 1).expect("put");
    let mut state = automerge::sync::State::new();
    let first = doc
        .sync()
        .generate_sync_message(&mut state)
        .expect("message");
    let mut peer = automerge::AutoCommit::new();
    let mut peer_state = automerge::sync::State::new();
    let read_only = peer
        .sync()
        .generate_sync_message(&mut peer_state)
        .expect("message");
    // The first message from a peer with changes advertises heads; the reply carries changes.
    peer.sync()
        .receive_sync_message(&mut peer_state, first)
        .expect("receive");
    let reply = peer
        .sync()
        .generate_sync_message(&mut peer_state)
        .expect("reply");
    doc.sync()
        .receive_sync_message(&mut state, reply)
        .expect("receive");
    let with_changes = doc
        .sync()
        .generate_sync_message(&mut state)
        .expect("changes");
    assert!(!with_changes.changes.is_empty());
    assert!(read_only.changes.is_empty());
    (with_changes.encode(), read_only.encode())
}

#[test]
fn hello_is_answered_with_welcome_and_registers_the_profile() {
    let mut s = Session::new(
        "s-9".into(),
        verified(&["todos"], &[], T0 / 1000 + 60),
        limits(),
        T0,
    );
    let out = s.handle_frame(&frame::encode(&hello(vec![7, 1])), T0);
    let [Message::Welcome(w)] = &out.send[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (w.version, w.compression, w.session.as_str()),
        (1, 0, "s-9")
    );
    assert_eq!(w.limits, limits());
    assert!(matches!(&out.actions[..], [Action::Register(p)] if p.class == DeviceClass::Phone));
    assert_eq!(out.close, None);
}

#[test]
fn compression_is_negotiated_and_then_used_both_ways() {
    let offer = |accepts: Option<&'static [Compression]>| {
        let mut s = Session::new(
            "s".into(),
            verified(&["todos"], &["todos"], T0 / 1000 + 60),
            limits(),
            T0,
        );
        if let Some(accepts) = accepts {
            s.accept_compressions(accepts);
        }
        let mut hello = hello(vec![1]);
        if let Message::Hello(h) = &mut hello {
            h.compression = vec![1, 0];
        }
        let out = s.handle_frame(&frame::encode(&hello), T0);
        let [Message::Welcome(w)] = &out.send[..] else {
            panic!("{out:?}")
        };
        (w.compression, s)
    };
    let (code, mut s) = offer(None);
    assert_eq!((code, s.compression()), (1, Compression::Zstd));
    // A compressed frame from the client decodes; a corrupt one is a typed refusal.
    let subscribe = Message::Subscribe(Subscribe {
        collections: (0..60)
            .map(|_| CollectionSubscription {
                collection: "todos".parse().expect("collection"),
                priority: Priority::Normal,
                mode: SyncMode::Eager,
            })
            .collect(),
    });
    let compressed = frame::encode_with(&subscribe, Compression::Zstd);
    assert_eq!(compressed[0], frame::FLAG_ZSTD);
    let out = s.handle_frame(&compressed, T0 + 1);
    assert!(error_codes(&out).is_empty(), "{out:?}");
    let out = s.handle_frame(&[frame::FLAG_ZSTD, 1, 2, 3], T0 + 2);
    assert_eq!(error_codes(&out), vec![ErrorCode::BAD_FRAME.0]);

    // A relay configured without compression answers 0, and so does one offered nothing.
    let (code, s) = offer(Some(&[Compression::None]));
    assert_eq!((code, s.compression()), (0, Compression::None));
}

/// `PlanDone` is used only with a client that offered it: the `Welcome` names the features the
/// relay implements among those offered (an unknown code is skipped), and the hub is told to
/// close this session's plans; a client that offered none (an older one) gets neither.
#[test]
fn optional_features_are_used_only_when_offered() {
    let welcome = |features: Vec<u32>| {
        let mut s = Session::new(
            "s".into(),
            verified(&["todos"], &[], T0 / 1000 + 60),
            limits(),
            T0,
        );
        let mut hello = hello(vec![1]);
        if let Message::Hello(h) = &mut hello {
            h.features = features;
        }
        let out = s.handle_frame(&frame::encode(&hello), T0);
        let [Message::Welcome(w)] = &out.send[..] else {
            panic!("{out:?}")
        };
        let closes = out.actions.iter().any(|a| matches!(a, Action::ClosePlans));
        (w.features.clone(), closes)
    };
    assert_eq!(welcome(vec![99, 1]), (vec![1], true));
    assert_eq!(welcome(vec![99]), (vec![], false));
    assert_eq!(welcome(vec![]), (vec![], false));
}

/// A text WebSocket message is refused as a malformed frame saying why (it used to read
/// "empty frame"), and the connection goes on.
#[test]
fn a_text_message_is_refused_as_not_a_frame() {
    let mut s = open_session();
    let out = s.handle_text(T0 + 1);
    let [Message::Error(e)] = &out.send[..] else {
        panic!("{out:?}")
    };
    assert_eq!(e.code, ErrorCode::BAD_FRAME);
    assert!(
        e.message.contains("text WebSocket message"),
        "{}",
        e.message
    );
    assert!(out.close.is_none());
    let out = send(&mut s, Message::Fetch(Fetch { docs: vec![] }));
    assert!(error_codes(&out).is_empty(), "{out:?}");
}

/// A malformed first frame is refused and the connection still waits for `Hello`: a corrected
/// one is welcomed. The refusal of a malformed message names the message and the encoding
/// rules most often missed.
#[test]
fn a_corrected_hello_after_a_malformed_one_is_welcomed() {
    let mut s = Session::new(
        "s".into(),
        verified(&["todos"], &[], T0 / 1000 + 60),
        limits(),
        T0,
    );
    // A Hello whose map has text keys: [1, {"versions": [1]}].
    let text_keys = [
        0x00, 0x82, 0x01, 0xa1, 0x68, b'v', b'e', b'r', b's', b'i', b'o', b'n', b's', 0x81, 0x01,
    ];
    let out = s.handle_frame(&text_keys, T0);
    let [Message::Error(e)] = &out.send[..] else {
        panic!("{out:?}")
    };
    assert_eq!(e.code, ErrorCode::BAD_FRAME);
    assert!(e.message.contains("hello message"), "{}", e.message);
    assert!(e.message.contains("unsigned integer keys"), "{}", e.message);
    assert!(out.close.is_none());
    let out = s.handle_frame(&frame::encode(&hello(vec![1])), T0 + 1);
    assert!(matches!(&out.send[..], [Message::Welcome(_)]), "{out:?}");
}

#[test]
fn no_common_version_closes() {
    let mut s = Session::new("s".into(), verified(&[], &[], T0 / 1000 + 60), limits(), T0);
    let out = s.handle_frame(&frame::encode(&hello(vec![2, 3])), T0);
    assert_eq!(error_codes(&out), vec![ErrorCode::UNSUPPORTED_VERSION.0]);
    assert_eq!(out.close.map(|c| c.code), Some(close_code::PROTOCOL_ERROR));
}

#[test]
fn messages_out_of_order_are_refused() {
    let mut s = Session::new(
        "s".into(),
        verified(&["todos"], &[], T0 / 1000 + 60),
        limits(),
        T0,
    );
    let out = send(&mut s, Message::Fetch(Fetch { docs: vec![] }));
    assert_eq!(error_codes(&out), vec![ErrorCode::OUT_OF_ORDER.0]);
    assert!(out.actions.is_empty());
    let mut s = open_session();
    for relay_only in [
        hello(vec![1]),
        Message::Ack(Ack {
            items: vec![],
            positions: None,
        }),
        Message::Plan(Plan {
            send: vec![],
            deferred: vec![],
            cursors: vec![],
            update: false,
            fetch: false,
            reset: vec![],
            id: None,
        }),
    ] {
        let out = send(&mut s, relay_only);
        assert_eq!(error_codes(&out), vec![ErrorCode::OUT_OF_ORDER.0]);
        assert!(out.actions.is_empty());
    }
}

#[test]
fn every_message_type_is_authorized() {
    let (write, read) = sync_messages();
    let forbidden = ErrorCode::FORBIDDEN.0;
    let sub = |c: &str| CollectionSubscription {
        collection: col(c),
        priority: Priority::Normal,
        mode: SyncMode::Eager,
    };
    use syncline_protocol::Priority;

    let mut s = open_session();
    // What the token cannot read is refused alone, naming the collection; the rest is served.
    let refused_collections = |out: &Output| -> Vec<String> {
        out.send
            .iter()
            .filter_map(|m| match m {
                Message::Error(e) if e.code.0 == forbidden => Some(
                    e.collection
                        .as_ref()
                        .map_or("-".into(), ToString::to_string),
                ),
                _ => None,
            })
            .collect()
    };
    // Subscribe: the readable collections are subscribed.
    let out = send(
        &mut s,
        Message::Subscribe(Subscribe {
            collections: vec![sub("todos"), sub("secret")],
        }),
    );
    assert_eq!(refused_collections(&out), vec!["secret"]);
    assert!(
        matches!(&out.actions[..], [Action::Subscribe(c)] if c.len() == 1 && c[0].collection == col("todos")),
        "{out:?}"
    );
    assert!(out.close.is_none());
    let out = send(
        &mut s,
        Message::Subscribe(Subscribe {
            collections: vec![sub("todos"), sub("notes")],
        }),
    );
    assert!(matches!(&out.actions[..], [Action::Subscribe(c)] if c.len() == 2));
    // Reconcile: cursors and changed documents.
    let cursor = |c: &str| Cursor {
        collection: col(c),
        seq: 1,
        epoch: None,
        receipt: None,
    };
    let changed = |d: &str| DocHeads {
        doc: doc(d),
        heads: Default::default(),
    };
    for bad in [
        Reconcile {
            cursors: vec![cursor("secret")],
            changed: vec![],
            fetched: None,
            acked: None,
        },
        Reconcile {
            cursors: vec![cursor("todos")],
            changed: vec![changed("secret/x")],
            fetched: None,
            acked: None,
        },
    ] {
        let out = send(&mut s, Message::Reconcile(bad));
        assert_eq!(refused_collections(&out), vec!["secret"]);
        // Still planned (a Reconcile always gets its Plan), without what is unreadable.
        let [Action::Reconcile(r)] = &out.actions[..] else {
            panic!("{out:?}")
        };
        assert!(r.cursors.iter().all(|c| c.collection != col("secret")));
        assert!(r.changed.is_empty());
    }
    let ok = Reconcile {
        cursors: vec![cursor("todos")],
        changed: vec![changed("notes/n")],
        fetched: None,
        acked: None,
    };
    assert!(matches!(
        &send(&mut s, Message::Reconcile(ok)).actions[..],
        [Action::Reconcile(_)]
    ));
    // Sync: reading needs read, changes need write; each item on its own.
    let item = |d: &str, m: &[u8]| SyncItem {
        doc: doc(d),
        message: m.to_vec(),
        priority: None,
    };
    let out = send(
        &mut s,
        Message::Sync(Sync {
            items: vec![
                item("todos/a", &write), // read + write: accepted
                item("notes/b", &read),  // read only, no changes: accepted
                item("notes/c", &write), // changes without write grant: refused
                item("secret/d", &read), // no read grant: refused
            ],
            positions: None,
        }),
    );
    assert_eq!(error_codes(&out), vec![forbidden, forbidden]);
    let [Action::Sync(items)] = &out.actions[..] else {
        panic!("{out:?}")
    };
    let docs: Vec<String> = items.iter().map(|i| i.doc.to_string()).collect();
    assert_eq!(docs, vec!["todos/a", "notes/b"]);
    assert!(
        out.send
            .iter()
            .all(|m| !format!("{m:?}").contains("notes/c") || matches!(m, Message::Error(_)))
    );
    // Fetch.
    let out = send(
        &mut s,
        Message::Fetch(Fetch {
            docs: vec![doc("todos/a"), doc("secret/x")],
        }),
    );
    assert_eq!(refused_collections(&out), vec!["secret"]);
    assert!(
        matches!(&out.actions[..], [Action::Fetch(d)] if d == &vec![doc("todos/a")]),
        "{out:?}"
    );
    assert!(matches!(
        &send(
            &mut s,
            Message::Fetch(Fetch {
                docs: vec![doc("notes/x")]
            })
        )
        .actions[..],
        [Action::Fetch(_)]
    ));
    // Ephemeral: the relay stamps the sender.
    let eph = |d: &str| {
        Message::Ephemeral(Ephemeral {
            doc: doc(d),
            payload: b"hi".as_slice().into(),
            from: Some(DeviceId::from_bytes([9; 16])),
        })
    };
    assert_eq!(
        refused_collections(&send(&mut s, eph("secret/x"))),
        vec!["secret"]
    );
    let out = send(&mut s, eph("todos/a"));
    assert!(
        matches!(&out.actions[..], [Action::Ephemeral(e)] if e.from == Some(DeviceId::from_bytes([1; 16])))
    );
    // UpdateProfile, RefreshToken and Error need no grant.
    assert!(
        matches!(&send(&mut s, Message::RefreshToken(RefreshToken { token: "t".into() })).actions[..], [Action::VerifyToken(t)] if t == "t")
    );
}

/// Class 4 of the hostile-input issue: a fetch of many documents reaches the hub in parts of
/// at most `FETCH_TURN_DOCS` (one hub turn each), in order, and only the last part answers.
#[test]
fn a_long_fetch_goes_to_the_hub_in_parts() {
    use syncline_relay::session::FETCH_TURN_DOCS;
    let mut s = open_session();
    let rest = FETCH_TURN_DOCS / 2 + 1;
    let docs: Vec<DocId> = (0..2 * FETCH_TURN_DOCS + rest)
        .map(|i| doc(&format!("todos/d{i}")))
        .collect();
    let out = send(&mut s, Message::Fetch(Fetch { docs: docs.clone() }));
    let mut parts = Vec::new();
    let mut answers = 0;
    for action in &out.actions {
        match action {
            Action::FetchPart(part) => {
                assert_eq!(answers, 0, "the answer comes last");
                parts.push(part.len());
            }
            Action::Fetch(part) => {
                answers += 1;
                parts.push(part.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answers, 1);
    assert_eq!(parts, vec![FETCH_TURN_DOCS, FETCH_TURN_DOCS, rest]);
    let sent: Vec<DocId> = out
        .actions
        .iter()
        .flat_map(|a| match a {
            Action::FetchPart(d) | Action::Fetch(d) => d.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(sent, docs, "every document, in the order asked");

    // A short or empty fetch is one answered action, as before.
    let out = send(&mut s, Message::Fetch(Fetch { docs: Vec::new() }));
    assert!(matches!(&out.actions[..], [Action::Fetch(d)] if d.is_empty()));
}

#[test]
fn a_malformed_automerge_message_is_refused_alone() {
    let (write, _) = sync_messages();
    let mut s = open_session();
    let out = send(
        &mut s,
        Message::Sync(Sync {
            items: vec![
                SyncItem {
                    doc: doc("todos/bad"),
                    message: b"not automerge".to_vec(),
                    priority: None,
                },
                SyncItem {
                    doc: doc("todos/good"),
                    message: write,
                    priority: None,
                },
            ],
            positions: None,
        }),
    );
    assert_eq!(error_codes(&out), vec![ErrorCode::BAD_DOCUMENT.0]);
    assert!(
        matches!(&out.actions[..], [Action::Sync(items)] if items.len() == 1 && items[0].doc == doc("todos/good"))
    );

    // A well-formed sync message whose change bytes are garbage (Automerge would skip them
    // silently) is refused too.
    let bogus = automerge::sync::Message {
        heads: vec![],
        need: vec![],
        have: vec![],
        changes: automerge::sync::ChunkList::from(vec![b"not a change".to_vec()]),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    };
    let item = SyncItem {
        doc: doc("todos/bad"),
        message: bogus.encode(),
        priority: None,
    };
    let out = send(
        &mut s,
        Message::Sync(Sync {
            items: vec![item],
            positions: None,
        }),
    );
    assert_eq!(error_codes(&out), vec![ErrorCode::BAD_DOCUMENT.0]);
    assert!(out.actions.is_empty());
}

#[test]
fn bad_frames_get_errors_then_a_close() {
    let mut s = open_session();
    let out = s.handle_frame(&[0, 0x82, 0x18, 99, 0xa0], T0 + 1);
    assert_eq!(
        error_codes(&out),
        vec![ErrorCode::UNKNOWN_MESSAGE.0],
        "unknown types are no violation"
    );
    let out = s.handle_frame(&vec![0u8; 5000], T0 + 1);
    assert_eq!(error_codes(&out), vec![ErrorCode::FRAME_TOO_LARGE.0]);
    for i in 1..MAX_STRIKES {
        let out = s.handle_frame(b"\x00garbage", T0 + 1);
        assert_eq!(error_codes(&out), vec![ErrorCode::BAD_FRAME.0]);
        assert_eq!(
            out.close.is_some(),
            i + 1 >= MAX_STRIKES,
            "strike {}",
            i + 1
        );
    }
    assert_eq!(
        s.handle_frame(b"\x00garbage", T0 + 2),
        Output::default(),
        "closed sessions ignore input"
    );
}

#[test]
fn rate_limits_answer_with_retry_after_then_close() {
    let tight = Limits {
        max_frames_per_s: 5,
        ..limits()
    };
    let mut s = Session::new(
        "s".into(),
        verified(&["todos"], &[], T0 / 1000 + 60),
        tight,
        T0,
    );
    let ping = frame::encode(&Message::UpdateProfile(UpdateProfile {
        profile: match hello(vec![1]) {
            Message::Hello(h) => h.profile,
            _ => unreachable!(),
        },
    }));
    s.handle_frame(&frame::encode(&hello(vec![1])), T0);
    for _ in 0..4 {
        assert!(error_codes(&s.handle_frame(&ping, T0)).is_empty());
    }
    let out = s.handle_frame(&ping, T0);
    let [Message::Error(e)] = &out.send[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (e.code, e.retry_after_ms),
        (ErrorCode::RATE_LIMITED, Some(200))
    );
    assert!(
        error_codes(&s.handle_frame(&ping, T0 + 200)).is_empty(),
        "refilled after retry_after"
    );
    let closed = (0..MAX_STRIKES)
        .map(|_| s.handle_frame(&ping, T0 + 200))
        .find(|o| o.close.is_some());
    assert_eq!(
        closed.and_then(|o| o.close).map(|c| c.code),
        Some(close_code::LIMITS)
    );
}

#[test]
fn idle_sessions_and_expired_tokens_close() {
    let mut s = open_session();
    assert_eq!(
        s.deadline_ms(),
        T0 + 60_000,
        "idle deadline from the last frame (hello at T0)"
    );
    assert_eq!(s.handle_tick(T0 + 30_000), Output::default());
    assert_eq!(
        s.handle_tick(T0 + 60_001).close.map(|c| c.code),
        Some(close_code::IDLE)
    );

    // A frame (an empty Sync: the SDK's keepalive) keeps a session alive.
    let mut s = open_session();
    let keepalive = frame::encode(&Message::Sync(Sync {
        items: Vec::new(),
        positions: None,
    }));
    assert_eq!(s.handle_frame(&keepalive, T0 + 50_000), Output::default());
    assert_eq!(s.handle_tick(T0 + 60_001), Output::default());
    assert_eq!(
        s.handle_tick(T0 + 110_000).close.map(|c| c.code),
        Some(close_code::IDLE)
    );

    // A connection that never says Hello is closed after HELLO_TIMEOUT_MS.
    let mut s = Session::new(
        "s".into(),
        verified(&["todos"], &[], T0 / 1000 + 3600),
        limits(),
        T0,
    );
    assert_eq!(
        s.deadline_ms(),
        T0 + syncline_relay::session::HELLO_TIMEOUT_MS
    );
    // Frames other than Hello (refused) do not stretch it.
    s.handle_frame(&keepalive, T0 + 5_000);
    assert_eq!(
        s.deadline_ms(),
        T0 + syncline_relay::session::HELLO_TIMEOUT_MS
    );
    assert!(s.handle_tick(T0 + 9_999).close.is_none());
    assert_eq!(
        s.handle_tick(T0 + 10_000).close.map(|c| c.code),
        Some(close_code::IDLE)
    );

    let mut s = Session::new(
        "s".into(),
        verified(&["todos"], &[], T0 / 1000 + 10),
        limits(),
        T0,
    );
    assert_eq!(s.deadline_ms(), T0 + 10_000);
    let out = s.handle_tick(T0 + 10_000);
    assert_eq!(error_codes(&out), vec![ErrorCode::UNAUTHORIZED.0]);
    assert_eq!(out.close.map(|c| c.code), Some(close_code::TOKEN_EXPIRED));
}

#[test]
fn refreshed_tokens_extend_revoke_or_close() {
    // A long idle timeout, so that only the token's expiry matters here.
    let patient = Limits {
        idle_timeout_ms: 10 * 3_600_000,
        ..limits()
    };
    let mut s = Session::new(
        "s".into(),
        verified(&["todos", "notes"], &["todos"], T0 / 1000 + 3600),
        patient,
        T0,
    );
    s.handle_frame(&frame::encode(&hello(vec![1])), T0);
    // Extended, with the write grant on todos revoked.
    let out = s.handle_token_verified(Ok(verified(&["todos", "notes"], &[], T0 / 1000 + 7200)));
    assert!(matches!(&out.actions[..], [Action::GrantsChanged(g)] if !g.can_write(&col("todos"))));
    assert_eq!(
        s.handle_tick(T0 + 3_600_000 + 1).close,
        None,
        "the old expiry no longer applies"
    );
    let (write, _) = sync_messages();
    let out = s.handle_frame(
        &frame::encode(&Message::Sync(Sync {
            items: vec![SyncItem {
                doc: doc("todos/a"),
                message: write,
                priority: None,
            }],
            positions: None,
        })),
        T0 + 3_600_000 + 2,
    );
    assert_eq!(
        error_codes(&out),
        vec![ErrorCode::FORBIDDEN.0],
        "a revoked grant stops writes at once"
    );
    // A refused refresh leaves the session as it was; another identity closes it.
    let out = s.handle_token_verified(Err(AuthError::BadSignature));
    assert_eq!(
        (error_codes(&out), out.close),
        (vec![ErrorCode::UNAUTHORIZED.0], None)
    );
    let mut other = verified(&["todos"], &[], T0 / 1000 + 7200);
    other.identity.user = "mallory".into();
    let out = s.handle_token_verified(Ok(other));
    assert_eq!(
        out.close.map(|c| c.code),
        Some(close_code::IDENTITY_CHANGED)
    );
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut s = open_session();
        for (i, f) in frames.iter().enumerate() {
            let _ = s.handle_frame(f, T0 + i as u64);
        }
    }
}

/// Regression: the strict decode check once refused every change that had dependencies
/// (Automerge reports them as missing when a chunk is loaded alone), so only a document's
/// first change was ever accepted.
#[test]
fn changes_with_dependencies_are_accepted() {
    let mut doc = automerge::AutoCommit::new();
    let mut state = automerge::sync::State::new();
    let mut relay = automerge::AutoCommit::new();
    let mut relay_state = automerge::sync::State::new();
    let mut s = open_session();
    for i in 0..3 {
        doc.put(automerge::ROOT, "n", i).expect("put");
        // Run the sync protocol to quiescence, every client message through the session.
        for _ in 0..10 {
            let Some(m) = doc.sync().generate_sync_message(&mut state) else {
                break;
            };
            let item = SyncItem {
                doc: doc_id("todos/a"),
                message: m.clone().encode(),
                priority: None,
            };
            let out = send(
                &mut s,
                Message::Sync(Sync {
                    items: vec![item],
                    positions: None,
                }),
            );
            assert!(error_codes(&out).is_empty(), "change {i}: {out:?}");
            relay
                .sync()
                .receive_sync_message(&mut relay_state, m)
                .expect("relay applies");
            if let Some(reply) = relay.sync().generate_sync_message(&mut relay_state) {
                doc.sync()
                    .receive_sync_message(&mut state, reply)
                    .expect("client applies");
            }
        }
    }
    assert_eq!(relay.get_heads(), doc.get_heads());
}

fn doc_id(s: &str) -> DocId {
    s.parse().expect("valid")
}

#[test]
fn a_fetch_over_the_document_limit_is_refused() {
    let few = Limits {
        max_docs_per_subscription: 10,
        ..limits()
    };
    let mut s = Session::new(
        "s".into(),
        verified(&["todos"], &[], T0 / 1000 + 60),
        few,
        T0,
    );
    s.handle_frame(&frame::encode(&hello(vec![1])), T0);
    let ten: Vec<DocId> = (0..10).map(|i| doc_id(&format!("todos/d{i}"))).collect();
    assert!(matches!(
        &send(&mut s, Message::Fetch(Fetch { docs: ten })).actions[..],
        [Action::Fetch(_)]
    ));
    let docs: Vec<DocId> = (0..11).map(|i| doc_id(&format!("todos/d{i}"))).collect();
    let out = send(&mut s, Message::Fetch(Fetch { docs }));
    assert_eq!(error_codes(&out), vec![ErrorCode::LIMIT_EXCEEDED.0]);
    assert!(out.actions.is_empty());
}

/// Per-collection refusals are bounded: a request naming many unreadable collections gets at
/// most `MAX_REFUSED_COLLECTIONS` errors and a strike, not one frame per collection.
#[test]
fn refusals_per_collection_are_bounded_per_request() {
    use syncline_relay::session::MAX_REFUSED_COLLECTIONS;
    let mut s = open_session();
    let docs: Vec<DocId> = (0..100)
        .map(|i| doc(&format!("secret{i}/x")))
        .chain([doc("todos/a")])
        .collect();
    let out = send(&mut s, Message::Fetch(Fetch { docs }));
    assert_eq!(error_codes(&out).len(), MAX_REFUSED_COLLECTIONS);
    assert!(
        matches!(&out.actions[..], [Action::Fetch(d)] if d == &vec![doc("todos/a")]),
        "the readable rest is still fetched: {out:?}"
    );
    // Seven more such requests close the connection (eight strikes).
    let mut closed = None;
    for _ in 0..MAX_STRIKES {
        let docs: Vec<DocId> = (0..100).map(|i| doc(&format!("secret{i}/x"))).collect();
        let out = send(&mut s, Message::Fetch(Fetch { docs }));
        if out.close.is_some() {
            closed = out.close;
            break;
        }
    }
    assert!(closed.is_some());
}
