//! What a session sends a device: paced to its declared download rate in a live and a bulk
//! lane, and replanned mid-transfer (a metered network, a collection unsubscribed). Timing in
//! virtual time: the session reads no clock.

use std::collections::BTreeSet;

use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DeviceId, DocId, Message, Priority, frame};
use syncline_relay::auth::claims::CollectionSet;
use syncline_relay::auth::{Grants, Identity, Verified};
use syncline_relay::hub::Lane;
use syncline_relay::session::{Action, Frame, Session};

const T0: u64 = 1_800_000_000_000;

fn col(s: &str) -> Collection {
    Collection::new(s).expect("valid")
}

fn session(profile: Profile) -> Session {
    let all = CollectionSet::Only(
        [col("photos"), col("todos")]
            .into_iter()
            .collect::<BTreeSet<_>>(),
    );
    let verified = Verified {
        identity: Identity {
            user: "alice".into(),
            device: DeviceId::from_bytes([1; 16]),
            tenant: syncline_relay::Tenant::new("acme").expect("valid"),
        },
        grants: Grants {
            read: all.clone(),
            write: all,
        },
        expires_at: T0 / 1000 + 3600,
        valid_until: T0 / 1000 + 3600,
    };
    let limits = Limits {
        max_frame_bytes: 16 << 20,
        max_frames_per_s: 1000,
        max_bytes_per_s: 1 << 30,
        max_docs_per_subscription: 1000,
        idle_timeout_ms: 3_600_000,
    };
    let mut s = Session::new("s-1".into(), verified, limits, T0);
    s.set_metered_threshold(50_000);
    let hello = Message::Hello(Hello {
        versions: vec![1],
        compression: vec![0],
        profile,
        client: "test".into(),
        features: Vec::new(),
    });
    s.handle_frame(&frame::encode(&hello), T0);
    s
}

fn phone(download: Option<u64>, metered: bool) -> Profile {
    Profile {
        download_bytes_per_s: download,
        metered,
        ..syncline_testkit::profile(DeviceClass::Phone)
    }
}

/// A catch-up `Sync` of `n` documents of `bytes` each in `collection`.
fn catch_up(collection: &str, n: usize, bytes: usize) -> Message {
    Message::Sync(Sync {
        items: (0..n)
            .map(|i| SyncItem {
                doc: format!("{collection}/d{i}")
                    .parse::<DocId>()
                    .expect("valid"),
                message: vec![u8::try_from(i % 251).expect("small"); bytes],
                priority: None,
            })
            .collect(),
        positions: None,
    })
}

/// Releases frames in virtual time until nothing waits (bounded): each with its time.
fn drain(s: &mut Session, mut now: u64) -> Vec<(u64, Frame)> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        out.extend(s.release(now).into_iter().map(|f| (now, f)));
        if s.downlink().queued_frames() == 0 {
            break;
        }
        now = s.deadline_ms().max(now + 1);
    }
    out
}

fn docs_in(frames: &[(u64, Frame)]) -> Vec<DocId> {
    frames
        .iter()
        .filter_map(|(_, f)| match frame::decode(&f.bytes, usize::MAX) {
            Ok(Message::Sync(s)) => Some(s.items.into_iter().map(|i| i.doc)),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_declared_download_rate_paces_the_transfer_within_fifteen_percent() {
    let rate = 100_000;
    let mut s = session(phone(Some(rate), false));
    let mut frames: Vec<(u64, Frame)> = s
        .deliver(catch_up("todos", 100, 10_000), Lane::Bulk, 0, T0)
        .frames
        .into_iter()
        .map(|f| (T0, f))
        .collect();
    frames.extend(drain(&mut s, T0));
    let bytes: u64 = frames.iter().map(|(_, f)| f.bytes.len() as u64).sum();
    let took = frames.last().expect("frames").0 - T0;
    let last = frames.last().expect("frames").1.bytes.len() as u64;
    // The first burst goes at once; the last frame once everything before it is paid for.
    let ideal = (bytes - last - syncline_protocol::Pacer::burst(rate)) * 1000 / rate;
    let error = took.abs_diff(ideal) as f64 / ideal as f64;
    assert!(
        error < 0.15,
        "{bytes} bytes took {took} ms, the rate implies {ideal} ms"
    );
    assert!(
        frames.len() > 50,
        "split into small frames: {}",
        frames.len()
    );
}

#[test]
fn a_live_change_overtakes_a_catch_up_within_one_frame() {
    let rate = 50_000;
    let mut s = session(phone(Some(rate), false));
    s.deliver(catch_up("todos", 50, 10_000), Lane::Bulk, 0, T0);
    let mut now = T0 + 2_000;
    let _ = s.release(now);
    let ack = Message::Ack(Ack {
        items: Vec::new(),
        positions: None,
    });
    let queued_at = now;
    let mut sent = s.deliver(ack, Lane::Live, 42, now).frames;
    for _ in 0..1_000 {
        if sent.iter().any(|f| f.counted == 42) {
            break;
        }
        now = s.deadline_ms().max(now + 1);
        sent = s.release(now);
    }
    assert_eq!(sent[0].counted, 42, "the live message goes first");
    // One paced frame is an eighth of a second at the rate, 4 KiB at least.
    let one_frame_ms = ((rate / 8).max(4096) + 10_000) * 1000 / rate;
    assert!(
        now - queued_at <= one_frame_ms,
        "waited {} ms",
        now - queued_at
    );
}

#[test]
fn turning_metered_mid_transfer_takes_back_what_is_too_large() {
    let mut s = session(phone(Some(20_000), false));
    // Small and large documents queued, most not sent yet.
    let mut items = Vec::new();
    for i in 0..10 {
        let bytes = if i % 2 == 0 { 1_000 } else { 80_000 };
        items.push(SyncItem {
            doc: format!("todos/d{i}").parse::<DocId>().expect("valid"),
            message: vec![7; bytes],
            priority: None,
        });
    }
    let sent_at_once = s
        .deliver(
            Message::Sync(Sync {
                items,
                positions: None,
            }),
            Lane::Bulk,
            0,
            T0,
        )
        .frames;
    let went = docs_in(
        &sent_at_once
            .into_iter()
            .map(|f| (T0, f))
            .collect::<Vec<_>>(),
    );
    let update = Message::UpdateProfile(UpdateProfile {
        profile: phone(Some(20_000), true),
    });
    let out = s.handle_frame(&frame::encode(&update), T0 + 10);
    let unsent: Vec<(DocId, u64, DeferReason)> = out
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Unsent(docs) => Some(docs.clone()),
            _ => None,
        })
        .expect("the large ones are taken back");
    assert!(!unsent.is_empty());
    assert!(
        unsent
            .iter()
            .all(|(_, bytes, why)| *bytes == 80_000 && *why == DeferReason::Metered)
    );
    let rest = docs_in(&drain(&mut s, T0 + 10));
    for (doc, _, _) in &unsent {
        assert!(
            !rest.contains(doc) && !went.contains(doc),
            "{doc} was sent anyway"
        );
    }
    // The small ones still go.
    assert!(
        rest.iter()
            .chain(&went)
            .filter(|d| d.id().ends_with(['0', '2', '4', '6', '8']))
            .count()
            == 5
    );
}

#[test]
fn unsubscribing_mid_transfer_drops_what_is_queued_for_that_collection() {
    let mut s = session(phone(Some(20_000), false));
    subscribe(&mut s, &["photos", "todos"]);
    s.deliver(catch_up("photos", 20, 5_000), Lane::Bulk, 0, T0);
    s.deliver(catch_up("todos", 5, 5_000), Lane::Bulk, 0, T0);
    let out = subscribe(&mut s, &["todos"]);
    assert!(matches!(&out.actions[..], [Action::Subscribe(_)]));
    let rest = docs_in(&drain(&mut s, T0 + 1));
    assert_eq!(
        rest.iter()
            .filter(|d| d.collection() == &col("todos"))
            .count(),
        5
    );
    // Photos already on the wire at subscribe time went; none of the rest did.
    assert_eq!(
        rest.iter()
            .filter(|d| d.collection() == &col("photos"))
            .count(),
        0
    );
}

fn subscribe(s: &mut Session, collections: &[&str]) -> syncline_relay::session::Output {
    let subscribe = Message::Subscribe(Subscribe {
        collections: collections
            .iter()
            .map(|c| CollectionSubscription {
                collection: col(c),
                priority: Priority::Normal,
                mode: SyncMode::Eager,
            })
            .collect(),
    });
    s.handle_frame(&frame::encode(&subscribe), T0 + 1)
}

#[test]
fn catch_up_planned_before_the_device_turned_metered_is_taken_back_when_it_arrives() {
    let mut s = session(phone(Some(20_000), false));
    let update = Message::UpdateProfile(UpdateProfile {
        profile: phone(Some(20_000), true),
    });
    s.handle_frame(&frame::encode(&update), T0 + 1);
    // The hub planned this before it learned of the metered network.
    let delivered = s.deliver(catch_up("todos", 3, 80_000), Lane::Bulk, 0, T0 + 2);
    let unsent = delivered
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Unsent(docs) => Some(docs.len()),
            _ => None,
        })
        .expect("taken back on arrival");
    assert_eq!(unsent, 3);
    assert!(docs_in(&drain(&mut s, T0 + 2)).is_empty());
    // What the device asked for goes, metered or not.
    let mut frames: Vec<(u64, Frame)> = s
        .deliver(catch_up("todos", 1, 80_000), Lane::Asked, 0, T0 + 3)
        .frames
        .into_iter()
        .map(|f| (T0 + 3, f))
        .collect();
    frames.extend(drain(&mut s, T0 + 3));
    assert_eq!(docs_in(&frames).len(), 1);
}

#[test]
fn a_fetch_of_a_document_already_on_its_way_is_not_queued_twice() {
    let mut s = session(phone(Some(1_000), false));
    // The first goes at once; the second waits for the budget.
    s.deliver(catch_up("todos", 2, 80_000), Lane::Asked, 0, T0);
    let fetch = Message::Fetch(Fetch {
        docs: vec![
            "todos/d1".parse().expect("valid"),
            "todos/other".parse().expect("valid"),
        ],
    });
    let out = s.handle_frame(&frame::encode(&fetch), T0 + 1);
    assert!(
        matches!(&out.actions[..], [Action::Fetch(docs)] if docs.len() == 1 && docs[0].id() == "other"),
        "{:?}",
        out.actions
    );
}

#[test]
fn queued_messages_are_filtered_by_the_grants_current_when_they_go() {
    let mut s = session(phone(Some(20_000), false));
    s.deliver(catch_up("photos", 20, 5_000), Lane::Bulk, 0, T0);
    // A refreshed token narrows the grants to todos.
    let todos = CollectionSet::Only([col("todos")].into_iter().collect::<BTreeSet<_>>());
    let narrowed = Verified {
        identity: Identity {
            user: "alice".into(),
            device: DeviceId::from_bytes([1; 16]),
            tenant: syncline_relay::Tenant::new("acme").expect("valid"),
        },
        grants: Grants {
            read: todos.clone(),
            write: todos,
        },
        expires_at: T0 / 1000 + 3600,
        valid_until: T0 / 1000 + 3600,
    };
    s.handle_token_verified(Ok(narrowed));
    let rest = docs_in(&drain(&mut s, T0 + 1));
    assert!(
        rest.is_empty(),
        "photos left after the grants narrowed: {rest:?}"
    );
}

/// A plan's `PlanDone` follows its catch-up in the bulk lane, behind every part of it (a live
/// message queued later still overtakes it), and stays when the plan changes: an
/// unsubscribed collection's documents are dropped, the end of the plan still comes, after
/// the documents that remain.
#[test]
fn a_plan_done_follows_its_catch_up_and_survives_a_change_of_plan() {
    let mut s = session(phone(Some(20_000), false));
    subscribe(&mut s, &["photos", "todos"]);
    let mut frames: Vec<Frame> = Vec::new();
    frames.extend(
        s.deliver(catch_up("todos", 10, 5_000), Lane::Bulk, 0, T0)
            .frames,
    );
    frames.extend(
        s.deliver(catch_up("photos", 10, 5_000), Lane::Bulk, 0, T0)
            .frames,
    );
    frames.extend(
        s.deliver(Message::PlanDone(PlanDone { plan: 7 }), Lane::Bulk, 0, T0)
            .frames,
    );
    frames.extend(
        s.deliver(
            Message::Error(Error {
                code: ErrorCode::INTERNAL,
                message: "live".into(),
                retry_after_ms: None,
                doc: None,
                collection: None,
            }),
            Lane::Live,
            0,
            T0,
        )
        .frames,
    );
    subscribe(&mut s, &["todos"]);
    frames.extend(drain(&mut s, T0 + 1).into_iter().map(|(_, f)| f));
    let messages: Vec<Message> = frames
        .iter()
        .filter(|f| !f.bytes.is_empty())
        .map(|f| frame::decode(&f.bytes, usize::MAX).expect("frame"))
        .collect();
    let names: Vec<&str> = messages.iter().map(Message::name).collect();
    let done = names.iter().position(|n| *n == "plan_done");
    assert_eq!(done, Some(names.len() - 1), "{names:?}");
    let error = names.iter().position(|n| *n == "error").expect("live");
    assert!(
        error < names.len() - 2,
        "the live message overtook the catch-up: {names:?}"
    );
    let todos = messages
        .iter()
        .filter_map(|m| match m {
            Message::Sync(s) => Some(s.items.len()),
            _ => None,
        })
        .sum::<usize>();
    assert!(
        todos >= 10,
        "every todo went before the plan's end: {names:?}"
    );
}
