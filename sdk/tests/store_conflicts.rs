//! Conflicts an app can act on: listed (and kept across a restart), heard by listeners with
//! the values and who wrote each, and resolved by per-collection strategies that converge
//! when every device runs the same one.

mod common;

use std::sync::{Arc, Mutex};

use common::{Fixture, todos};
use syncline::{Conflict, ConflictStrategy, Heads, Path, Store, Value};

/// Sends everything `from` holds of `doc` to `to`.
fn send(from: &Store, to: &Store, doc: &syncline::DocId) {
    let changes = from.changes_since(doc, &Heads::default()).expect("export");
    to.apply_changes(doc, &changes).expect("apply");
}

fn title(store: &Store, doc: &syncline::DocId) -> Option<Value> {
    store.document(doc).expect("doc").get("title").expect("get")
}

#[test]
fn a_merge_that_leaves_concurrent_values_is_listed_heard_and_cleared_by_a_resolution() {
    let fx = Fixture::new();
    let laptop = fx.other_device("laptop");
    let doc = fx.store.create(&todos()).expect("create");
    doc.put("title", "milk").expect("put");
    send(&fx.store, &laptop, doc.id());
    let heard: Arc<Mutex<Vec<Conflict>>> = Arc::default();
    let _watching = {
        let heard = heard.clone();
        laptop.watch_conflicts(move |c| heard.lock().expect("lock").push(c.clone()))
    };

    doc.put("title", "oat milk").expect("phone writes");
    laptop
        .document(doc.id())
        .expect("doc")
        .put("title", "almond milk")
        .expect("laptop writes");
    // Equal concurrent values are no conflict.
    doc.put("done", true).expect("phone writes");
    laptop
        .document(doc.id())
        .expect("doc")
        .put("done", true)
        .expect("laptop writes");
    assert!(laptop.conflicted_documents().expect("list").is_empty());
    send(&fx.store, &laptop, doc.id());

    assert_eq!(
        laptop.conflicted_documents().expect("list"),
        vec![doc.id().clone()]
    );
    let conflicts = laptop
        .document(doc.id())
        .expect("doc")
        .all_conflicts()
        .expect("all");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let conflict = &conflicts[0];
    assert_eq!(conflict.path, Path::parse("title").expect("path"));
    let mut by_device: Vec<(Option<syncline::DeviceId>, Value)> = conflict
        .values
        .iter()
        .map(|v| (v.device, v.value.clone()))
        .collect();
    by_device.sort_by_key(|(d, _)| *d);
    let mut expected = vec![
        (Some(fx.store.device_id()), Value::from("oat milk")),
        (Some(laptop.device_id()), Value::from("almond milk")),
    ];
    expected.sort_by_key(|(d, _)| *d);
    assert_eq!(by_device, expected);
    assert!(conflict.values.iter().all(|v| v.time > 0 && !v.object));
    assert_eq!(
        heard.lock().expect("lock").clone(),
        conflicts,
        "the listener heard it"
    );

    // Kept across a restart; a resolution clears it.
    drop(_watching);
    drop(laptop);
    let laptop = fx.other_device("laptop");
    assert_eq!(
        laptop.conflicted_documents().expect("list"),
        vec![doc.id().clone()]
    );
    laptop
        .document(doc.id())
        .expect("doc")
        .resolve("title", "milk (any)")
        .expect("resolve");
    assert!(laptop.conflicted_documents().expect("list").is_empty());
}

/// Writes `value` at `title` on each device at once (concurrently), then lets every device
/// receive every other's changes, twice over (resolutions travel too).
fn concurrent_titles(devices: &[&Store], doc: &syncline::DocId, values: &[&str]) {
    for (device, value) in devices.iter().zip(values) {
        device
            .document(doc)
            .expect("doc")
            .put("title", *value)
            .expect("write");
    }
    for _ in 0..3 {
        for from in devices {
            for to in devices {
                if !std::ptr::eq(*from, *to) {
                    send(from, to, doc);
                }
            }
        }
    }
}

fn converged_without_conflicts(devices: &[&Store], doc: &syncline::DocId) -> Value {
    let heads: Vec<Heads> = devices
        .iter()
        .map(|d| d.document(doc).expect("doc").heads().expect("heads"))
        .collect();
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "converged: {heads:?}"
    );
    for device in devices {
        assert!(device.conflicted_documents().expect("list").is_empty());
        assert!(
            device
                .document(doc)
                .expect("doc")
                .all_conflicts()
                .expect("all")
                .is_empty()
        );
    }
    title(devices[0], doc).expect("a title")
}

#[test]
fn three_devices_running_one_strategy_converge_without_conflicts() {
    let strategies = |phone: &Store| {
        vec![
            ConflictStrategy::LastWriterWins,
            ConflictStrategy::DevicePriority(vec![phone.device_id()]),
            ConflictStrategy::Custom(Arc::new(|c: &Conflict| {
                // The longest text wins (ties: the smallest): a function of the conflict alone.
                c.values
                    .iter()
                    .map(|v| v.value.clone())
                    .max_by(|a, b| {
                        let (a, b) = (format!("{a:?}"), format!("{b:?}"));
                        a.len().cmp(&b.len()).then(b.cmp(&a))
                    })
                    .unwrap_or(Value::Null)
            })),
        ]
    };
    for round in 0..3 {
        let fx = Fixture::new();
        let (laptop, tablet) = (fx.other_device("laptop"), fx.other_device("tablet"));
        let devices = [&fx.store, &laptop, &tablet];
        for device in devices {
            let strategy = strategies(&fx.store).swap_remove(round);
            device
                .set_conflict_strategy(&todos(), Some(strategy))
                .expect("set");
        }
        let doc = fx.store.create(&todos()).expect("create");
        doc.put("title", "milk").expect("put");
        send(&fx.store, &laptop, doc.id());
        send(&fx.store, &tablet, doc.id());

        concurrent_titles(&devices, doc.id(), &["oat milk", "almond", "soy milk!"]);
        let kept = converged_without_conflicts(&devices, doc.id());
        match round {
            // The phone has priority.
            1 => assert_eq!(kept, Value::from("oat milk")),
            2 => assert_eq!(kept, Value::from("soy milk!")),
            _ => {}
        }
        // The resolution is in the history as such.
        let history = fx
            .store
            .document(doc.id())
            .expect("doc")
            .history()
            .expect("history");
        assert!(
            history.iter().any(|c| c
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("resolve conflict ("))),
            "{history:?}"
        );
        // Once resolved, exchanging again changes nothing: no new conflict arises.
        let before = fx
            .store
            .document(doc.id())
            .expect("doc")
            .heads()
            .expect("heads");
        concurrent_titles(&[], doc.id(), &[]);
        for from in devices {
            for to in devices {
                send(from, to, doc.id());
            }
        }
        assert_eq!(
            fx.store
                .document(doc.id())
                .expect("doc")
                .heads()
                .expect("heads"),
            before
        );
    }
}

#[test]
fn setting_a_strategy_resolves_what_is_already_conflicted() {
    let fx = Fixture::new();
    let laptop = fx.other_device("laptop");
    let doc = fx.store.create(&todos()).expect("create");
    send(&fx.store, &laptop, doc.id());
    concurrent_titles(&[&fx.store, &laptop], doc.id(), &["a", "b"]);
    assert_eq!(fx.store.conflicted_documents().expect("list").len(), 1);
    fx.store
        .set_conflict_strategy(&todos(), Some(ConflictStrategy::LastWriterWins))
        .expect("set");
    assert!(fx.store.conflicted_documents().expect("list").is_empty());
}
