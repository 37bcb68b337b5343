//! Input built to cost the relay more than its bytes (issue 15): Automerge payloads (classes
//! 1–2) are refused with a typed error before Automerge inflates or walks them, and the
//! session goes on serving the device; per-session state (class 3) and ephemeral fan-out
//! (class 5) are bounded.

mod common;

use std::collections::BTreeSet;

use automerge::sync::{ChunkList, Message as SyncMessage, MessageVersion};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT};
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DeviceId, DocId, Message, Priority, frame};
use syncline_relay::auth::claims::CollectionSet;
use syncline_relay::auth::{Grants, Identity, Verified};
use syncline_relay::hub::DocGraph;
use syncline_relay::session::{Action, Output, Session};

const T0: u64 = 1_800_000_000_000;

fn session() -> Session {
    let todos: BTreeSet<Collection> = [Collection::new("todos").expect("valid")].into();
    let verified = Verified {
        identity: Identity {
            user: "mallory".into(),
            device: DeviceId::from_bytes([7; 16]),
            tenant: syncline_relay::Tenant::new("acme").expect("valid"),
        },
        grants: Grants {
            read: CollectionSet::Only(todos.clone()),
            write: CollectionSet::Only(todos),
        },
        expires_at: T0 / 1000 + 3600,
        valid_until: T0 / 1000 + 3600,
    };
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_frames_per_s: 100,
        max_bytes_per_s: 64 << 20,
        max_docs_per_subscription: 1000,
        idle_timeout_ms: 60_000,
    };
    let mut s = Session::new("s-1".into(), verified, limits, T0);
    let hello = Message::Hello(Hello {
        versions: vec![1],
        compression: vec![0],
        profile: syncline_testkit::profile(DeviceClass::Phone),
        client: "mallory".into(),
        features: Vec::new(),
    });
    let out = s.handle_frame(&frame::encode(&hello), T0);
    assert!(matches!(&out.send[..], [Message::Welcome(_)]), "{out:?}");
    s
}

/// A Sync frame for one todo whose sync message carries `chunks`.
fn sync_frame(chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let message = SyncMessage {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: ChunkList::from(chunks),
        flags: None,
        version: MessageVersion::V1,
    };
    frame::encode(&Message::Sync(Sync {
        items: vec![SyncItem {
            doc: "todos/1".parse::<DocId>().expect("valid"),
            message: message.encode(),
            priority: None,
        }],
        positions: None,
    }))
}

fn errors(out: &Output) -> Vec<(u16, String)> {
    out.send
        .iter()
        .filter_map(|m| match m {
            Message::Error(e) => Some((e.code.0, e.message.clone())),
            _ => None,
        })
        .collect()
}

fn forwarded(out: &Output) -> bool {
    out.actions.iter().any(|a| matches!(a, Action::Sync(_)))
}

/// A real, valid change whose one string value is 48 MiB of one letter: Automerge deflates it
/// to about 50 KB, far under the frame limit.
fn inflating_change() -> Vec<u8> {
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "title", "a".repeat(48 << 20)).expect("put");
    tx.commit();
    let mut change = doc.get_last_local_change().expect("a change").clone();
    change.bytes().into_owned()
}

#[test]
fn a_change_that_inflates_past_the_budget_is_refused_before_it_is_inflated() {
    let bomb = inflating_change();
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    let mut s = session();
    let out = s.handle_frame(&sync_frame(vec![bomb]), T0 + 1);
    let refused = errors(&out);
    assert_eq!(refused.len(), 1, "{out:?}");
    assert_eq!(refused[0].0, ErrorCode::LIMIT_EXCEEDED.0, "{refused:?}");
    assert!(refused[0].1.contains("inflates past"), "{refused:?}");
    assert!(!forwarded(&out));

    // The same document, written reasonably, still goes through on the same connection.
    let mut doc = Automerge::new();
    let mut tx = doc.transaction();
    tx.put(ROOT, "title", "a".repeat(1 << 20)).expect("put");
    tx.commit();
    let mut fine = doc.get_last_local_change().expect("a change").clone();
    let out = s.handle_frame(&sync_frame(vec![fine.bytes().into_owned()]), T0 + 2);
    assert!(errors(&out).is_empty(), "{out:?}");
    assert!(forwarded(&out));
}

/// A change chunk whose action column is one run claiming `ops` operations (in a few bytes).
fn claiming_ops(ops: u64) -> Vec<u8> {
    fn uleb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    // The run length is a signed LEB128: a positive count keeps bit 6 of its last byte clear.
    let mut run = Vec::new();
    uleb(ops, &mut run);
    if run.last().is_some_and(|b| b & 0x40 != 0) {
        *run.last_mut().expect("a byte") |= 0x80;
        run.push(0);
    }
    let mut action = run;
    action.push(1); // the repeated action: "set"
    // deps, actor, seq, start op, time, message, other actors
    let mut body = vec![0, 1, 0xaa, 1, 1, 0, 0, 0];
    body.push(1); // one column: id 4 (action), type 2 (unsigned RLE)
    uleb(4 << 4 | 2, &mut body);
    uleb(action.len() as u64, &mut body);
    body.extend(action);
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 1];
    uleb(body.len() as u64, &mut chunk);
    chunk.extend(body);
    chunk
}

#[test]
fn a_change_claiming_two_to_the_sixty_operations_is_refused_without_walking_them() {
    let mut s = session();
    let out = s.handle_frame(&sync_frame(vec![claiming_ops(1 << 60)]), T0 + 1);
    let refused = errors(&out);
    assert_eq!(refused.len(), 1, "{out:?}");
    assert_eq!(refused[0].0, ErrorCode::LIMIT_EXCEEDED.0, "{refused:?}");
    assert!(refused[0].1.contains("operations"), "{refused:?}");
    assert!(!forwarded(&out));
}

#[test]
fn many_chunks_share_one_frames_budget() {
    // Each chunk alone is under the default 2,000,000 operations; together they are not.
    let chunks = vec![claiming_ops(1_500_000), claiming_ops(1_500_000)];
    let mut s = session();
    let out = s.handle_frame(&sync_frame(chunks), T0 + 1);
    assert_eq!(
        errors(&out).first().map(|e| e.0),
        Some(ErrorCode::LIMIT_EXCEEDED.0),
        "{out:?}"
    );
}

#[test]
fn declared_operations_are_bounded_per_second_per_connection() {
    let mut s = session();
    let codes: Vec<Option<u16>> = (0..3)
        .map(|_| {
            let out = s.handle_frame(&sync_frame(vec![claiming_ops(1_500_000)]), T0 + 1);
            errors(&out).first().map(|e| e.0)
        })
        .collect();
    // Two frames' budgets are there at once; the third waits for the refill.
    assert_ne!(codes[0], Some(ErrorCode::RATE_LIMITED.0), "{codes:?}");
    assert_ne!(codes[1], Some(ErrorCode::RATE_LIMITED.0), "{codes:?}");
    assert_eq!(codes[2], Some(ErrorCode::RATE_LIMITED.0), "{codes:?}");
    let later = s.handle_frame(&sync_frame(vec![claiming_ops(10)]), T0 + 2_000);
    assert_ne!(
        errors(&later).first().map(|e| e.0),
        Some(ErrorCode::RATE_LIMITED.0)
    );
}

#[test]
fn a_stored_chunk_that_would_cost_without_bound_fails_to_load_with_an_error() {
    let refused = DocGraph::load([claiming_ops(1 << 60).as_slice()]);
    assert!(
        matches!(refused, Err(syncline_relay::hub::GraphError::OverLimit(_))),
        "{refused:?}"
    );
}

#[test]
fn real_documents_with_compressed_columns_pass_the_checks() {
    let mut doc = Automerge::new();
    for i in 0..2_000 {
        let mut tx = doc.transaction();
        tx.put(ROOT, format!("k{}", i % 50), i64::from(i))
            .expect("put");
        tx.commit();
    }
    let saved = doc.save();
    let graph = DocGraph::load([saved.as_slice()]).expect("a saved document loads");
    assert_eq!(graph.len(), 2_000);
    let mut s = session();
    let out = s.handle_frame(&sync_frame(vec![saved]), T0 + 1);
    assert!(errors(&out).is_empty(), "{out:?}");
    assert!(forwarded(&out));
}

#[test]
fn ephemerals_are_bounded_in_size_and_rate_per_sender() {
    let mut s = session();
    let ephemeral = |len: usize| {
        frame::encode(&Message::Ephemeral(Ephemeral {
            doc: "todos/1".parse::<DocId>().expect("valid"),
            payload: vec![1u8; len].into(),
            from: None,
        }))
    };
    let out = s.handle_frame(&ephemeral(MAX_EPHEMERAL_BYTES + 1), T0 + 1);
    assert_eq!(
        errors(&out).first().map(|e| e.0),
        Some(ErrorCode::LIMIT_EXCEEDED.0)
    );
    let (mut forwarded, mut limited) = (0, 0);
    let mut closed = false;
    for i in 0..90 {
        let out = s.handle_frame(&ephemeral(64), T0 + 2 + i);
        if out
            .actions
            .iter()
            .any(|a| matches!(a, Action::Ephemeral(_)))
        {
            forwarded += 1;
        }
        if errors(&out)
            .iter()
            .any(|e| e.0 == ErrorCode::RATE_LIMITED.0)
        {
            limited += 1;
        }
        if out.close.is_some() {
            closed = true;
            break;
        }
    }
    // A burst of twice the rate goes; past it, each is refused with a retry delay, and a
    // sender that keeps on is closed like any other abuser.
    assert!((60..=64).contains(&forwarded), "{forwarded} forwarded");
    assert!(limited > 0 && closed, "{limited} refused, closed: {closed}");
}

#[test]
fn client_error_text_is_escaped_bounded_and_counted_as_a_strike() {
    let mut s = session();
    let forged = format!(
        "oops\n2026-12-02T10:00:00Z ERROR forged line\u{1b}[31m{}",
        "x".repeat(10_000)
    );
    let report = frame::encode(&Message::Error(Error {
        code: ErrorCode::INTERNAL,
        message: forged,
        retry_after_ms: None,
        doc: None,
        collection: None,
    }));
    let out = s.handle_frame(&report, T0 + 1);
    let logged = out
        .actions
        .iter()
        .find_map(|a| match a {
            Action::ClientError(e) => Some(e.message.clone()),
            _ => None,
        })
        .expect("reported for the log");
    assert!(
        !logged.contains('\n') && !logged.contains('\u{1b}'),
        "{logged:?}"
    );
    assert!(logged.starts_with("oops\\n2026"), "{logged:?}");
    assert!(logged.chars().count() <= syncline_relay::session::MAX_LOGGED_CHARS + 8);
    let mut closed = false;
    for i in 0..syncline_relay::session::MAX_STRIKES {
        if s.handle_frame(&report, T0 + 2 + u64::from(i))
            .close
            .is_some()
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a flood of error reports closes the connection");
}

#[test]
fn a_refused_refresh_says_only_what_kind_of_refusal() {
    let mut s = session();
    let out = s.handle_token_verified(Err(syncline_relay::auth::AuthError::AlgMismatch {
        kid: "prod-2026".into(),
        token: "HS256".into(),
        key: "RS256".into(),
    }));
    let refused = errors(&out);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1, "refresh refused: alg_mismatch");
}

#[test]
fn subscriptions_and_cursors_are_capped_and_deduplicated() {
    let mut s = session();
    let todos = || CollectionSubscription {
        collection: Collection::new("todos").expect("valid"),
        priority: Priority::Normal,
        mode: SyncMode::Eager,
    };
    let repeated = frame::encode(&Message::Subscribe(Subscribe {
        collections: vec![todos(); MAX_COLLECTIONS + 1],
    }));
    let out = s.handle_frame(&repeated, T0 + 1);
    assert_eq!(
        errors(&out).first().map(|e| e.0),
        Some(ErrorCode::LIMIT_EXCEEDED.0)
    );
    let twice = frame::encode(&Message::Subscribe(Subscribe {
        collections: vec![todos(); 1000],
    }));
    let out = s.handle_frame(&twice, T0 + 2);
    let forwarded = out.actions.iter().find_map(|a| match a {
        Action::Subscribe(c) => Some(c.len()),
        _ => None,
    });
    assert_eq!(
        forwarded,
        Some(1),
        "one collection named 1,000 times is one"
    );
}

#[test]
fn positions_are_capped_in_count_and_size() {
    let mut s = session();
    let position = |epoch: usize, receipt: usize| Cursor {
        collection: Collection::new("todos").expect("valid"),
        seq: 1,
        epoch: Some("e".repeat(epoch)),
        receipt: Some("r".repeat(receipt)),
    };
    let reconcile = |cursors: Vec<Cursor>, acked: Vec<Cursor>| {
        frame::encode(&Message::Reconcile(Reconcile {
            cursors,
            changed: Vec::new(),
            fetched: None,
            acked: Some(acked),
        }))
    };
    for (at, bad) in [
        reconcile(vec![position(MAX_EPOCH_BYTES + 1, 32)], vec![]),
        reconcile(vec![], vec![position(32, MAX_EPOCH_BYTES + 1)]),
        reconcile(vec![], vec![position(32, 32); MAX_COLLECTIONS + 1]),
    ]
    .into_iter()
    .enumerate()
    {
        let out = s.handle_frame(&bad, T0 + 1 + at as u64);
        assert_eq!(
            errors(&out).first().map(|e| e.0),
            Some(ErrorCode::LIMIT_EXCEEDED.0),
            "{out:?}"
        );
        assert!(out.actions.is_empty());
    }
    // Within the limits, an acknowledged position named twice is checked once, and one in a
    // collection the device may not read is dropped rather than refused.
    let secret = Cursor {
        collection: Collection::new("secret").expect("valid"),
        ..position(32, 32)
    };
    let out = s.handle_frame(
        &reconcile(
            vec![position(32, 32)],
            vec![position(32, 32), position(32, 32), secret],
        ),
        T0 + 10,
    );
    assert!(errors(&out).is_empty(), "{out:?}");
    let forwarded = out.actions.iter().find_map(|a| match a {
        Action::Reconcile(r) => r.acked.clone(),
        _ => None,
    });
    assert_eq!(forwarded, Some(vec![position(32, 32)]));
}

mod hub {
    //! Per-session state (issue 15, class 3): what a client's sync messages may make the hub
    //! keep.

    use super::common::{World, doc, grants, tenant};
    use syncline_protocol::messages::{ErrorCode, SyncItem};
    use syncline_relay::session::Action;
    use syncline_relay::storage::Storage;

    /// An Automerge opening message (heads, no changes) for a document nobody wrote.
    fn opening(heads: Vec<automerge::ChangeHash>) -> Vec<u8> {
        automerge::sync::Message {
            heads,
            need: Vec::new(),
            have: vec![automerge::sync::Have::default()],
            changes: automerge::sync::ChunkList::empty(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        }
        .encode()
    }

    #[test]
    fn a_reader_naming_made_up_documents_creates_no_state_and_no_row() {
        let mut w = World::new();
        w.join(1, "acme", grants(&["todos"], &[]));
        let items: Vec<SyncItem> = (0..200)
            .map(|i| SyncItem {
                doc: doc(&format!("todos/made-up-{i}")),
                message: opening(vec![automerge::ChangeHash([i as u8; 32])]),
                priority: None,
            })
            .collect();
        w.run(vec![(1, Action::Sync(items))]);
        let errors = w.clients[&1].errors();
        assert_eq!(errors.len(), 200, "{errors:?}");
        assert!(errors.iter().all(|&c| c == ErrorCode::BAD_DOCUMENT.0));
        w.hub.disconnect(1, 100).expect("disconnect");
        let device = syncline_protocol::DeviceId::from_bytes([1; 16]);
        for i in [0, 199] {
            let saved = w
                .storage
                .load_sync_state(
                    &tenant("acme"),
                    &device,
                    &doc(&format!("todos/made-up-{i}")),
                )
                .expect("load");
            assert!(saved.is_none(), "no saved state for a made-up document");
        }
        assert!(
            w.storage
                .load(&tenant("acme"), &doc("todos/made-up-0"))
                .expect("load")
                .is_none()
        );
    }

    #[test]
    fn a_writer_may_open_a_new_document_but_states_are_bounded_per_session() {
        let mut w = World::new();
        w.join(1, "acme", grants(&["todos"], &["todos"]));
        // Each opening message carries 1,024 heads (32 KiB the state would keep): a thousand
        // of them would be 32 MiB; the session's budget refuses the rest.
        let heads: Vec<automerge::ChangeHash> = (0..1024u32)
            .map(|i| {
                let mut hash = [0; 32];
                hash[..4].copy_from_slice(&i.to_be_bytes());
                automerge::ChangeHash(hash)
            })
            .collect();
        let mut refused = 0;
        for batch in 0..8 {
            let items: Vec<SyncItem> = (0..256)
                .map(|i| SyncItem {
                    doc: doc(&format!("todos/new-{batch}-{i}")),
                    message: opening(heads.clone()),
                    priority: None,
                })
                .collect();
            // A hostile client: it never answers, so its states keep what it said.
            let deliveries = w.hub.handle(1, Action::Sync(items), 10).expect("hub");
            refused += deliveries
                .iter()
                .filter(|d| {
                    matches!(&d.message, syncline_protocol::Message::Error(e) if e.code == ErrorCode::LIMIT_EXCEEDED)
                })
                .count();
        }
        assert!(refused > 900, "{refused} refused");
        assert!(
            refused < 2048 - 900,
            "{refused} refused: the first ones fit"
        );
    }
}

/// A `Reconcile` of the todos collection from the start.
fn reconcile_todos() -> Action {
    Action::Reconcile(Reconcile {
        cursors: vec![Cursor {
            collection: Collection::new("todos").expect("valid"),
            seq: 0,
            epoch: None,
            receipt: None,
        }],
        changed: Vec::new(),
        fetched: None,
        acked: None,
    })
}

mod corrupt {
    //! A stored document that does not load (issue 15, class 9) fails alone: plans and frames
    //! that include it go on without it.

    use super::common::{World, doc, grants, tenant};
    use syncline_protocol::Heads;
    use syncline_protocol::messages::ErrorCode;
    use syncline_relay::storage::{Append, Storage};

    fn corrupt(w: &World, d: &str) {
        w.storage
            .append(
                &tenant("acme"),
                &[Append {
                    doc: doc(d),
                    chunk: b"not an automerge chunk".to_vec(),
                    heads: Heads::default(),
                    priority: None,
                    at_ms: 1,
                    base_seq: None,
                }],
            )
            .expect("append");
    }

    #[test]
    fn a_plan_including_a_corrupt_document_proceeds_without_it() {
        let mut w = World::new();
        corrupt(&w, "todos/bad");
        w.join(1, "acme", grants(&["todos"], &["todos"]));
        w.clients
            .get_mut(&1)
            .expect("client")
            .put(&doc("todos/good"), "n", 1);
        w.push(1, &[doc("todos/good")]);
        w.join(2, "acme", grants(&["todos"], &[]));
        w.run(vec![(2, super::reconcile_todos())]);
        assert_eq!(w.clients[&2].get(&doc("todos/good"), "n"), Some(1));
        assert!(w.hub.corrupt_documents() >= 1);
    }

    #[test]
    fn a_document_that_does_not_load_is_not_loaded_again_for_a_minute() {
        use syncline_relay::hub::UNLOADABLE_RETRY_MS;
        let mut w = World::new();
        corrupt(&w, "todos/bad");
        w.join(1, "acme", grants(&["todos"], &[]));
        w.join(2, "acme", grants(&["todos"], &[]));
        w.run(vec![(1, super::reconcile_todos())]);
        w.run(vec![(2, super::reconcile_todos())]);
        assert_eq!(
            w.hub.failed_loads(),
            1,
            "the second plan did not read the row again"
        );
        assert!(w.hub.corrupt_documents() >= 2, "each use is still reported");
        w.hub
            .handle(1, super::reconcile_todos(), UNLOADABLE_RETRY_MS + 1_000)
            .expect("hub");
        assert_eq!(w.hub.failed_loads(), 2, "tried again after a minute");
    }

    #[test]
    fn a_frame_touching_a_corrupt_document_refuses_that_item_only() {
        let mut w = World::new();
        corrupt(&w, "todos/bad");
        w.join(1, "acme", grants(&["todos"], &["todos"]));
        let client = w.clients.get_mut(&1).expect("client");
        client.put(&doc("todos/bad"), "n", 1);
        client.put(&doc("todos/good"), "n", 2);
        // Primed, as devices do: the first messages carry the changes.
        for d in ["todos/bad", "todos/good"] {
            client
                .states
                .insert(doc(d), syncline_protocol::sync_state::primed(Vec::new()));
        }
        w.push(1, &[doc("todos/bad"), doc("todos/good")]);
        assert!(w.clients[&1].errors().contains(&ErrorCode::INTERNAL.0));
        assert!(w.clients[&1].acked(&doc("todos/good")).is_some());
        // The refusal is the item's alone: no error for the whole frame (which would make the
        // device reconnect and send it again, on every connection), and no acknowledgement.
        let about_bad = |m: &syncline_protocol::Message| match m {
            syncline_protocol::Message::Error(e) => e.doc.as_ref() == Some(&doc("todos/bad")),
            _ => false,
        };
        let inbox = &w.clients[&1].inbox;
        assert!(inbox.iter().any(about_bad));
        assert!(
            inbox.iter().all(|m| match m {
                syncline_protocol::Message::Error(e) => e.doc.is_some(),
                syncline_protocol::Message::Ack(a) =>
                    a.items.iter().all(|i| i.doc != doc("todos/bad")),
                _ => true,
            }),
            "{inbox:?}"
        );
    }
}

mod large {
    //! Documents larger than a frame (issue 15, class 7): the relay sends a long history over
    //! several exchanges, each message within `MAX_MESSAGE_CHANGE_BYTES`.

    use super::common::{World, doc, grants};
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    use syncline_protocol::Message;
    use syncline_relay::hub::responder::MAX_MESSAGE_CHANGE_BYTES;

    #[test]
    fn a_forty_megabyte_document_reaches_a_new_device_in_parts() {
        let mut w = World::new();
        w.join(1, "acme", grants(&["todos"], &["todos"]));
        let big = doc("todos/big");
        // 40 changes of 1 MiB of incompressible text, pushed 8 at a time (each push within a
        // frame's inflation budget).
        for batch in 0..5u64 {
            let writer = w.clients.get_mut(&1).expect("client");
            for i in 0..8u64 {
                let n = batch * 8 + i;
                let d = writer.docs.entry(big.clone()).or_default();
                if let Some(actor) = &writer.actor {
                    d.set_actor(actor.clone());
                }
                let mut tx = d.transaction();
                tx.put(
                    automerge::ROOT,
                    format!("k{n}"),
                    syncline_testkit::noise(1 << 20, n),
                )
                .expect("put");
                tx.commit();
            }
            w.push(1, std::slice::from_ref(&big));
        }
        assert!(w.clients[&1].acked(&big).is_some());
        w.join(2, "acme", grants(&["todos"], &[]));
        w.run(vec![(2, super::reconcile_todos())]);
        let reader = &w.clients[&2];
        let got = reader.docs.get(&big).expect("the document arrived");
        for n in [0u64, 20, 39] {
            let (value, _) = got
                .get(automerge::ROOT, format!("k{n}"))
                .expect("read")
                .expect("present");
            assert_eq!(value.as_str().map(str::len), Some(1 << 20));
        }
        let messages: Vec<usize> = reader
            .inbox
            .iter()
            .filter_map(|m| match m {
                Message::Sync(s) => Some(s.items.iter().map(|i| i.message.len())),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(messages.len() >= 10, "{} messages", messages.len());
        assert!(
            messages
                .iter()
                .all(|&len| len <= MAX_MESSAGE_CHANGE_BYTES + (2 << 20)),
            "{messages:?}"
        );
    }
}
