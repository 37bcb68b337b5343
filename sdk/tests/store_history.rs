//! History, time travel, diffs, conflicts, and remote merges between two devices.

mod common;

use common::{Fixture, todos};
use syncline::{Error, Heads, PatchAction, Value};

#[test]
fn history_names_the_device_and_message() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    doc.transact(Some("set title"), |tx| tx.put("title", "a"))
        .expect("write");
    let history = doc.history().expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].message.as_deref(), Some("create"));
    assert_eq!(history[1].message.as_deref(), Some("set title"));
    assert!(
        history
            .iter()
            .all(|c| c.device == Some(fx.store.device_id()))
    );
    assert_eq!(history[1].deps, vec![history[0].hash]);
    assert!(history[1].time > 1_700_000_000, "seconds since the epoch");
}

#[test]
fn view_at_and_diff_between_heads() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    doc.put("title", "first").expect("write");
    let v1 = doc.heads().expect("heads");
    doc.put("title", "second").expect("write");
    let v2 = doc.heads().expect("heads");

    let old = doc.view_at(&v1).expect("view");
    assert_eq!(
        old.get("title").expect("read"),
        Some(Value::Str("first".into()))
    );
    assert_eq!(
        doc.get_str("title").expect("read").as_deref(),
        Some("second")
    );

    let patches = doc.diff(&v1, &v2).expect("diff");
    assert!(matches!(
        &patches[..],
        [p] if matches!(&p.action, PatchAction::PutMap { key, value: Value::Str(s), .. } if key == "title" && s == "second")
    ));
    let bogus: Heads = "00".repeat(32).parse().expect("hash syntax");
    assert!(matches!(doc.view_at(&bogus), Err(Error::InvalidHeads(_))));
    assert!(matches!(doc.diff(&bogus, &v2), Err(Error::InvalidHeads(_))));
}

#[test]
fn concurrent_writes_show_as_conflicts_and_resolve() {
    let fx = Fixture::new();
    let phone = &fx.store;
    let laptop = fx.other_device("laptop");
    let doc = phone.create(&todos()).expect("create");
    doc.put("title", "base").expect("write");
    let id = doc.id().clone();
    laptop
        .apply_changes(
            &id,
            &phone.changes_since(&id, &Heads::default()).expect("export"),
        )
        .expect("laptop receives the document");

    // Both edit the same key offline.
    doc.put("title", "from phone").expect("phone edit");
    let laptop_doc = laptop.document(&id).expect("on laptop");
    laptop_doc.put("title", "from laptop").expect("laptop edit");

    // Exchange changes both ways.
    let phone_heads = doc.heads().expect("heads");
    let laptop_heads = laptop_doc.heads().expect("heads");
    laptop
        .apply_changes(
            &id,
            &phone.changes_since(&id, &laptop_heads).expect("export"),
        )
        .expect("merge on laptop");
    phone
        .apply_changes(
            &id,
            &laptop.changes_since(&id, &phone_heads).expect("export"),
        )
        .expect("merge on phone");
    assert_eq!(
        doc.heads().expect("heads"),
        laptop_doc.heads().expect("heads")
    );
    assert_eq!(
        doc.to_json().expect("json"),
        laptop_doc.to_json().expect("json")
    );

    let conflicts = doc.conflicts("title").expect("conflicts");
    assert_eq!(conflicts.len(), 2);
    assert_eq!(
        Some(&conflicts[0]),
        doc.get("title").expect("winner").as_ref()
    );
    assert!(conflicts.contains(&Value::Str("from phone".into())));
    assert!(conflicts.contains(&Value::Str("from laptop".into())));
    let devices: Vec<_> = doc
        .history()
        .expect("history")
        .iter()
        .filter_map(|c| c.device)
        .collect();
    assert!(devices.contains(&phone.device_id()) && devices.contains(&laptop.device_id()));

    doc.resolve("title", "agreed").expect("resolve");
    assert_eq!(
        doc.conflicts("title").expect("conflicts"),
        vec![Value::Str("agreed".into())]
    );
}

#[test]
fn deletion_travels_as_a_change() {
    let fx = Fixture::new();
    let phone = &fx.store;
    let laptop = fx.other_device("laptop");
    let doc = phone.create(&todos()).expect("create");
    let id = doc.id().clone();
    laptop
        .apply_changes(
            &id,
            &phone.changes_since(&id, &Heads::default()).expect("export"),
        )
        .expect("copy");
    phone.delete(&id).expect("delete");
    laptop
        .apply_changes(
            &id,
            &phone.changes_since(&id, &Heads::default()).expect("export"),
        )
        .expect("sync");
    assert!(matches!(laptop.document(&id), Err(Error::Deleted(_))));
    assert!(laptop.list(&todos()).expect("list").is_empty());
}

#[test]
fn invalid_remote_changes_are_refused_whole() {
    let fx = Fixture::new();
    let doc = fx.store.create(&todos()).expect("create");
    let before = doc.heads().expect("heads");
    let result = fx
        .store
        .apply_changes(doc.id(), &[b"not an automerge change".to_vec()]);
    assert!(matches!(result, Err(Error::InvalidChange(_))));
    assert_eq!(doc.heads().expect("heads"), before);
}
