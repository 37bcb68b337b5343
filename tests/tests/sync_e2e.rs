//! End to end: real `syncline-relay` processes and SDK devices, each with its own store,
//! syncing over WebSockets on loopback.

use std::time::Duration;

use syncline::{Collection, Store, SyncClient, SyncOptions, Value};
use syncline_testkit::postgres::PostgresServer;
use syncline_testkit::relay::Relay;
use syncline_testkit::{noise, temp_dir};

mod stores;

const WAIT: Duration = Duration::from_secs(30);

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

struct Device {
    store: Store,
    _dir: tempfile::TempDir,
}

impl Device {
    fn new() -> Self {
        let dir = temp_dir();
        let store = Store::open(dir.path().join("store.db")).expect("open store");
        Self { store, _dir: dir }
    }

    /// A device whose store skips the fsync per commit (for tests that write thousands).
    fn fast() -> Self {
        let dir = temp_dir();
        let options = syncline::StoreOptions {
            durability: syncline::Durability::Normal,
            ..Default::default()
        };
        let store = Store::open_with(dir.path().join("store.db"), options).expect("open store");
        Self { store, _dir: dir }
    }

    fn device(&self) -> String {
        self.store.device_id().to_string()
    }

    fn connect_with(&self, url: &str, tokens: impl syncline::TokenProvider) -> SyncClient {
        let mut options = SyncOptions::new(url, &[todos()]);
        options.backoff = syncline::engine::Backoff {
            min_ms: 50,
            max_ms: 500,
        };
        SyncClient::start(&self.store, options, tokens).expect("start")
    }

    fn connect(&self, relay: &Relay) -> SyncClient {
        let token = relay
            .token(
                "alice",
                &self.store.device_id().to_string(),
                "todos",
                "todos",
                3600,
            )
            .expect("token");
        SyncClient::start(
            &self.store,
            SyncOptions::new(relay.url(), &[todos()]),
            move || Ok(token.clone()),
        )
        .expect("start")
    }
}

#[test]
fn two_devices_edit_offline_and_converge() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let (a, b) = (Device::new(), Device::new());
    // Offline on both, including the same document.
    let shared = a.store.create(&todos()).expect("create");
    shared.put("title", "buy milk").expect("put");
    for i in 0..5 {
        a.store
            .create(&todos())
            .expect("create")
            .put("title", format!("a{i}"))
            .expect("put");
        b.store
            .create(&todos())
            .expect("create")
            .put("title", format!("b{i}"))
            .expect("put");
    }
    let client_a = a.connect(&relay);
    client_a.wait_synced(WAIT, true).expect("a synced");
    let client_b = b.connect(&relay);
    client_b.wait_synced(WAIT, true).expect("b synced");
    // Remote changes fire the same listeners as local ones, with patches.
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let _watch = b.store.watch_document(shared.id(), move |event| {
        let _ = events_tx.send((event.origin, event.patches.len()));
    });
    // b now has the shared document; both edit it offline.
    client_a.pause();
    client_b.pause();
    shared.put("title", "buy oat milk").expect("a edits");
    b.store
        .document(shared.id())
        .expect("b has it")
        .put("done", true)
        .expect("b edits");
    client_a.resume();
    client_b.resume();
    client_a.wait_synced(WAIT, true).expect("a synced again");
    client_b.wait_synced(WAIT, true).expect("b synced again");
    // Each side may need the other's last push: wait until the heads agree.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ha = a
            .store
            .document(shared.id())
            .expect("ok")
            .heads()
            .expect("ok");
        let hb = b
            .store
            .document(shared.id())
            .expect("ok")
            .heads()
            .expect("ok");
        if ha == hb {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "heads never converged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Listeners run after the change is applied (the sync thread delivers them once its step
    // is done): wait for the remote one, boundedly.
    let mut remote: Vec<(syncline::ChangeOrigin, usize)> = Vec::new();
    let is_remote = |(origin, patches): &(syncline::ChangeOrigin, usize)| {
        *origin == syncline::ChangeOrigin::Remote && *patches > 0
    };
    while !remote.iter().any(is_remote) {
        match events_rx.recv_timeout(WAIT) {
            Ok(event) => remote.push(event),
            Err(_) => break,
        }
    }
    assert!(remote.iter().any(is_remote), "{remote:?}");
    let doc_b = b.store.document(shared.id()).expect("ok");
    assert_eq!(
        doc_b.get("title").expect("ok"),
        Some(Value::from("buy oat milk"))
    );
    assert_eq!(doc_b.get("done").expect("ok"), Some(Value::from(true)));
    assert_eq!(a.store.list(&todos()).expect("ok").len(), 11);
    assert_eq!(b.store.list(&todos()).expect("ok").len(), 11);
    assert!(a.store.pending_documents().expect("ok").is_empty());
    assert!(b.store.pending_documents().expect("ok").is_empty());
}

/// Waits until `f` holds, at most [`WAIT`].
fn eventually(what: &str, f: impl FnMut() -> bool) {
    stores::eventually(WAIT, what, f);
}

/// Both stores hold the same todos at the same heads.
fn same_documents(a: &Store, b: &Store) -> bool {
    stores::same_documents(a, b, &todos())
}

#[test]
fn a_device_offline_for_long_catches_up_both_ways() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let (a, b) = (Device::fast(), Device::fast());
    let docs: Vec<_> = (0..20)
        .map(|i| {
            let doc = a.store.create(&todos()).expect("create");
            doc.put("title", format!("todo {i}")).expect("put");
            doc
        })
        .collect();
    let client_a = a.connect(&relay);
    client_a.wait_synced(WAIT, true).expect("a synced");
    let client_b = b.connect(&relay);
    client_b.wait_synced(WAIT, true).expect("b synced");
    drop(client_a);
    // a is offline for a long time: 2,000 changes; b keeps editing meanwhile: 2,000 more.
    for round in 0..100 {
        for doc in &docs {
            doc.increment_or_init(round);
        }
    }
    for round in 0..100 {
        for doc in &docs {
            b.store
                .document(doc.id())
                .expect("b has it")
                .put("note", format!("b round {round}"))
                .expect("b edits");
        }
    }
    client_b.wait_synced(WAIT, true).expect("b pushed");
    let client_a = a.connect(&relay);
    client_a.wait_synced(WAIT, true).expect("a caught up");
    eventually("b receives a's 2,000 changes", || {
        same_documents(&a.store, &b.store)
    });
    let doc = b.store.document(docs[7].id()).expect("doc");
    assert_eq!(doc.get("count").expect("get"), Some(Value::Counter(100)));
    assert_eq!(
        doc.get("note").expect("get"),
        Some(Value::from("b round 99"))
    );
    assert!(a.store.pending_documents().expect("pending").is_empty());
    assert!(b.store.pending_documents().expect("pending").is_empty());
}

/// Issue 15, class 7, the device's way: a history of 16 changes of 1 MiB of noise, written
/// offline, goes up in parts of at most 4 MiB of changes (so at least four), one per exchange,
/// and reaches a second device through the relay.
#[test]
fn a_sixteen_megabyte_history_written_offline_goes_up_in_parts() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let (a, b) = (Device::fast(), Device::fast());
    let doc = a.store.create(&todos()).expect("create");
    for n in 0..16u64 {
        doc.put(&format!("k{n}"), noise(1 << 20, n)).expect("put");
    }
    let client_a = a.connect(&relay);
    client_a
        .wait_synced(Duration::from_secs(120), true)
        .expect("a pushed its history");
    assert!(a.store.pending_documents().expect("pending").is_empty());
    let sent = client_a.stats();
    // Frames are compressed (26 letters: about 5 bits a byte), so 16 MiB is about 10 MB.
    assert!(sent.bytes_sent > 8 << 20, "{sent:?}");
    assert!(sent.frames_sent >= 4, "{sent:?}");
    let client_b = b.connect(&relay);
    client_b
        .wait_synced(Duration::from_secs(120), true)
        .expect("b synced");
    let got = b.store.document(doc.id()).expect("b has it");
    for n in [0u64, 8, 15] {
        assert_eq!(
            got.get(&format!("k{n}")).expect("get"),
            Some(Value::from(noise(1 << 20, n))),
        );
    }
}

trait Increment {
    fn increment_or_init(&self, round: usize);
}

impl Increment for syncline::Document {
    fn increment_or_init(&self, round: usize) {
        self.transact(None, |tx| {
            if round == 0 {
                tx.put("count", Value::Counter(1))
            } else {
                tx.increment("count", 1)
            }
        })
        .expect("write");
    }
}

#[test]
fn a_relay_killed_mid_sync_loses_nothing_acknowledged() {
    killed_mid_sync_loses_nothing_acknowledged(&|data, listen| {
        Relay::start_at(data, listen).expect("relay")
    });
}

/// Issue 17: the same on PostgreSQL storage (`storage = "postgres://…"`), on a server of the
/// test's own: the relay process killed with SIGKILL, a new one on the same database finishes.
#[test]
fn a_relay_on_postgresql_killed_mid_sync_loses_nothing_acknowledged() {
    let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database("relay").expect("createdb");
    let toml = format!("storage = {url:?}\n");
    killed_mid_sync_loses_nothing_acknowledged(&|data, listen| {
        Relay::start_with(data, listen, Some(&toml)).expect("relay on PostgreSQL")
    });
    assert_eq!(
        server
            .query("relay", "SELECT count(*) FROM documents")
            .expect("psql"),
        "3000",
        "the documents are in PostgreSQL"
    );
}

/// A device writes 3,000 documents; the relay (`start(data_dir, listen)`) is killed once
/// some are acknowledged and started again at the same address; every acknowledged document
/// reaches a second device, and so does the rest.
fn killed_mid_sync_loses_nothing_acknowledged(start: &dyn Fn(&std::path::Path, &str) -> Relay) {
    let data = temp_dir();
    let mut relay = start(data.path(), "127.0.0.1:0");
    let addr = relay.addr.clone();
    let (a, b) = (Device::fast(), Device::fast());
    for i in 0..3000 {
        a.store
            .create_with(
                &todos(),
                Value::from_json(&serde_json::json!({"title": format!("todo {i}")})),
                syncline::Priority::Normal,
            )
            .expect("create");
    }
    let token_a = relay
        .token("alice", &a.device(), "todos", "todos", 3600)
        .expect("token");
    let client_a = a.connect_with(&relay.url(), move || Ok(token_a.clone()));
    // Kill the relay once some but not all of the documents are acknowledged.
    eventually("some acknowledgements", || {
        a.store
            .pending_documents()
            .map(|p| p.len() < 3000)
            .unwrap_or(false)
    });
    relay.kill().expect("SIGKILL");
    let acknowledged = stores::acknowledged(&a.store, &todos());
    assert!(!acknowledged.is_empty());
    let relay = start(data.path(), &addr);
    // The kill is a failed connection: keep retrying through it.
    client_a
        .wait_synced(WAIT, false)
        .expect("a finishes after the restart");
    let client_b = b.connect(&relay);
    client_b.wait_synced(WAIT, true).expect("b synced");
    eventually("b has everything", || same_documents(&a.store, &b.store));
    for id in &acknowledged {
        b.store
            .document(id)
            .expect("an acknowledged document survived");
    }
    assert_eq!(b.store.list(&todos()).expect("list").len(), 3000);
}

/// Kills `relay` (SIGKILL), puts `backup` in place of its database in `data`, and starts a
/// relay on it at the same address, as an operator restores one.
fn restore_backup(
    mut relay: Relay,
    data: &std::path::Path,
    backup: &std::path::Path,
    addr: &str,
) -> Relay {
    relay.kill().expect("SIGKILL");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("relay.db{suffix}")));
    }
    std::fs::copy(backup, data.join("relay.db")).expect("restore the backup");
    Relay::start_at(data, addr).expect("restored relay")
}

/// Class 10 of issue 15: a relay restored from a backup of its live self lost changes it had
/// acknowledged, and numbers new ones with the sequence numbers it lost. The devices that
/// were shown the lost positions re-send what they hold, and nothing is lost.
#[test]
fn a_relay_restored_from_an_older_backup_gets_back_what_it_acknowledged() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let addr = relay.addr.clone();
    let (a, b) = (Device::fast(), Device::fast());
    let write = |d: &Device, title: String| {
        let doc = d.store.create(&todos()).expect("create");
        doc.put("title", title).expect("put");
        doc
    };
    let first = write(&a, "before the backup".into());
    for i in 0..4 {
        write(&a, format!("a before {i}"));
    }
    let client_a = a.connect(&relay);
    client_a.wait_synced(WAIT, true).expect("a synced");
    let client_b = b.connect(&relay);
    client_b.wait_synced(WAIT, true).expect("b synced");

    let backup_dir = temp_dir();
    let backup = backup_dir.path().join("relay.db");
    relay.backup(&backup).expect("backup of the live relay");

    // Acknowledged after the backup: lost with the relay.
    for i in 0..5 {
        write(&a, format!("a after {i}"));
    }
    first.put("title", "edited after the backup").expect("edit");
    for i in 0..3 {
        write(&b, format!("b after {i}"));
    }
    client_a.wait_synced(WAIT, true).expect("a acknowledged");
    client_b.wait_synced(WAIT, true).expect("b acknowledged");
    eventually("a and b agree before the loss", || {
        same_documents(&a.store, &b.store)
    });
    assert!(a.store.pending_documents().expect("pending").is_empty());
    client_a.pause();
    client_b.pause();

    let relay = restore_backup(relay, data.path(), &backup, &addr);
    // Another device writes first: the restored relay gives its changes the very sequence
    // numbers the lost ones had.
    let c = Device::fast();
    for i in 0..15 {
        write(&c, format!("c {i}"));
    }
    let client_c = c.connect(&relay);
    client_c.wait_synced(WAIT, true).expect("c synced");

    client_a.resume();
    client_b.resume();
    client_a
        .wait_synced(WAIT, true)
        .expect("a synced with the restored relay");
    client_b
        .wait_synced(WAIT, true)
        .expect("b synced with the restored relay");
    let fresh = Device::fast();
    let client_fresh = fresh.connect(&relay);
    client_fresh
        .wait_synced(WAIT, true)
        .expect("a new device synced");
    eventually("everyone has everything", || {
        fresh.store.list(&todos()).map(|l| l.len()).unwrap_or(0) == 28
            && same_documents(&a.store, &fresh.store)
            && same_documents(&b.store, &fresh.store)
            && same_documents(&c.store, &fresh.store)
    });
    assert_eq!(
        fresh
            .store
            .document(first.id())
            .expect("doc")
            .get("title")
            .expect("get"),
        Some(Value::from("edited after the backup"))
    );
    drop((client_a, client_b, client_c, client_fresh));
}

#[test]
fn a_refreshed_token_keeps_the_connection_and_a_revoked_grant_stops_writes() {
    let data = temp_dir();
    // No leeway: an expired token would close the connection at once.
    let relay =
        Relay::start_with(data.path(), "127.0.0.1:0", Some("leeway_secs = 0\n")).expect("relay");
    let (a, b) = (Device::new(), Device::new());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (data_dir, device) = (data.path().to_owned(), a.device());
    let provider = {
        let (calls, revoked) = (calls.clone(), revoked.clone());
        move || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let write = if revoked.load(std::sync::atomic::Ordering::SeqCst) {
                "other"
            } else {
                "todos"
            };
            syncline_testkit::relay::token(&data_dir, "alice", &device, "todos", write, 3)
                .map_err(|e| syncline::TokenError::Unavailable(e.to_string()))
        }
    };
    let client_a = a.connect_with(&relay.url(), provider);
    client_a.wait_synced(WAIT, true).expect("a synced");
    let client_b = b.connect(&relay);
    client_b.wait_synced(WAIT, true).expect("b synced");
    // Outlive the first token: refreshes come at least a second apart, so five tokens fetched
    // means more than the first token's 3 s have passed. Refreshed tokens keep the connection.
    eventually("the first token is outlived", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 5
    });
    assert_eq!(client_a.stats().connections, 1, "the connection was kept");
    let doc = a.store.create(&todos()).expect("create");
    doc.put("title", "after refresh").expect("put");
    eventually("b gets a's write over the refreshed connection", || {
        b.store.document(doc.id()).is_ok()
    });
    // The grant is revoked at the next refresh: writes are refused with a clear error, and
    // nothing is lost locally.
    let fetched = calls.load(std::sync::atomic::Ordering::SeqCst);
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    // The second revoked token is fetched a refresh interval after the first was sent.
    eventually("a revoked token is in force", || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= fetched + 2
    });
    doc.put("title", "after revocation")
        .expect("the local write works");
    eventually(
        "the refusal surfaces",
        || matches!(client_a.status(), syncline::Status::Error { reason } if reason.contains("no write grant")),
    );
    assert_eq!(
        a.store.pending_documents().expect("pending"),
        vec![doc.id().clone()]
    );
    assert_eq!(
        b.store
            .document(doc.id())
            .expect("b has it")
            .get("title")
            .expect("get"),
        Some(Value::from("after refresh"))
    );
}

/// A grant revoked on one collection mid-sync: that collection's document is refused with a
/// typed reason the app can list and watch, the other collection's goes on, nothing is lost,
/// and the error clears once a later sync (the grant back) succeeds.
#[test]
fn a_grant_revoked_on_one_collection_refuses_only_its_documents_with_a_typed_error() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use syncline::{SyncErrorEvent, SyncErrorKind};

    let data = temp_dir();
    let relay =
        Relay::start_with(data.path(), "127.0.0.1:0", Some("leeway_secs = 0\n")).expect("relay");
    let notes = Collection::new("notes").expect("valid");
    let (a, b) = (Device::new(), Device::new());
    let calls = Arc::new(AtomicU32::new(0));
    let revoked = Arc::new(AtomicBool::new(false));
    let provider = {
        let (calls, revoked) = (calls.clone(), revoked.clone());
        let (data_dir, device) = (data.path().to_owned(), a.device());
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let write = if revoked.load(Ordering::SeqCst) {
                "todos"
            } else {
                "todos,notes"
            };
            syncline_testkit::relay::token(&data_dir, "alice", &device, "todos,notes", write, 3)
                .map_err(|e| syncline::TokenError::Unavailable(e.to_string()))
        }
    };
    let mut options = SyncOptions::new(relay.url(), &[todos(), notes.clone()]);
    options.backoff = syncline::engine::Backoff {
        min_ms: 50,
        max_ms: 500,
    };
    let client_a = SyncClient::start(&a.store, options, provider).expect("start");
    let events = Arc::new(Mutex::new(Vec::new()));
    let _watching = {
        let events = events.clone();
        client_a.watch_sync_errors(move |e| events.lock().expect("lock").push(e.clone()))
    };
    client_a.wait_synced(WAIT, true).expect("a synced");
    let token_b = relay
        .token("bob", &b.device(), "todos,notes", "todos,notes", 3600)
        .expect("token");
    let client_b = SyncClient::start(
        &b.store,
        SyncOptions::new(relay.url(), &[todos(), notes.clone()]),
        move || Ok(token_b.clone()),
    )
    .expect("start b");

    let fetched = calls.load(Ordering::SeqCst);
    revoked.store(true, Ordering::SeqCst);
    eventually("a token without the notes grant is in force", || {
        calls.load(Ordering::SeqCst) >= fetched + 2
    });
    let todo = a.store.create(&todos()).expect("create todo");
    todo.put("title", "allowed").expect("put");
    let note = a.store.create(&notes).expect("create note");
    note.put("text", "refused").expect("put");

    eventually("the note's refusal is listed", || {
        !client_a.sync_errors().is_empty()
    });
    let errors = client_a.sync_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(&errors[0].doc, note.id());
    assert_eq!(errors[0].kind, SyncErrorKind::NotPermitted, "{errors:?}");
    assert!(errors[0].message.contains("no write grant"), "{errors:?}");
    assert_eq!(errors[0].retry_at_ms, None);
    eventually("the todo reaches b all the same", || {
        b.store.document(todo.id()).is_ok()
    });
    assert!(b.store.document(note.id()).is_err(), "the note never left");
    assert_eq!(
        a.store.pending_documents().expect("pending"),
        vec![note.id().clone()],
        "the refused note stays pending"
    );
    assert_eq!(
        events.lock().expect("lock").clone(),
        vec![SyncErrorEvent::Raised(errors[0].clone())]
    );

    // The grant comes back; the next connection sends the note and the error clears.
    revoked.store(false, Ordering::SeqCst);
    let fetched = calls.load(Ordering::SeqCst);
    eventually("a token with the notes grant is fetched", || {
        calls.load(Ordering::SeqCst) > fetched
    });
    client_a.pause();
    // The paused connection is in the history of syncs, with the note it refused.
    eventually("the paused connection is recorded", || {
        !a.store.sync_history(10).expect("history").is_empty()
    });
    let history = a.store.sync_history(10).expect("history");
    assert_eq!(history.len(), 1, "{history:?}");
    let first = &history[0];
    assert_eq!(first.end, syncline::SyncEnd::Paused);
    assert_eq!(
        (first.refused_count, &first.refused[..]),
        (1, &[note.id().clone()][..])
    );
    assert!(
        first.docs_sent >= 1 && first.bytes_sent > 0 && first.round_trips >= 1,
        "{first:?}"
    );
    assert!(
        first.session.as_ref().is_some_and(|s| !s.is_empty()),
        "{first:?}"
    );
    assert!(first.started_at_ms <= first.ended_at_ms);
    client_a.resume();
    eventually("the note reaches b", || b.store.document(note.id()).is_ok());
    eventually("the error clears", || client_a.sync_errors().is_empty());
    assert_eq!(
        events.lock().expect("lock").last(),
        Some(&SyncErrorEvent::Cleared(note.id().clone()))
    );
    assert!(a.store.pending_documents().expect("pending").is_empty());
    client_a.stop();
    let history = a.store.sync_history(10).expect("history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0].end, syncline::SyncEnd::Stopped);
    assert!(history[0].refused.is_empty() && history[0].docs_sent >= 1);
    assert_ne!(
        history[0].session, history[1].session,
        "one session per connection"
    );
    drop(client_b);
}

/// Presence: an ephemeral payload reaches the other device on the document with its sender,
/// never its sender; the device keeps below the relay's rate and size limits with typed
/// errors (the relay never has to refuse one), and nothing is sent offline.
#[test]
fn ephemeral_messages_reach_the_other_device_with_their_sender() {
    use std::sync::{Arc, Mutex};
    use syncline::SyncError;

    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let (a, b) = (Device::new(), Device::new());
    let doc = a.store.create(&todos()).expect("create");
    doc.put("title", "shared").expect("put");
    let (client_a, client_b) = (a.connect(&relay), b.connect(&relay));
    client_a.wait_synced(WAIT, true).expect("a synced");
    client_b.wait_synced(WAIT, true).expect("b synced");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let _on_b = {
        let heard = heard.clone();
        client_b.watch_ephemeral(Some(doc.id()), move |m| {
            heard.lock().expect("lock").push(m.clone())
        })
    };
    let echoed = Arc::new(Mutex::new(Vec::new()));
    let _on_a = {
        let echoed = echoed.clone();
        client_a.watch_ephemeral(None, move |m| echoed.lock().expect("lock").push(m.clone()))
    };

    client_a
        .send_ephemeral(doc.id(), b"cursor at 3")
        .expect("send");
    eventually("b hears a's presence", || {
        !heard.lock().expect("lock").is_empty()
    });
    let first = heard.lock().expect("lock")[0].clone();
    assert_eq!(
        (&first.doc, first.from, &first.payload[..]),
        (doc.id(), a.store.device_id(), &b"cursor at 3"[..])
    );

    // A burst: the device's own limit refuses the excess before the relay has to.
    let mut sent = 1;
    let mut limited = None;
    for _ in 0..100 {
        match client_a.send_ephemeral(doc.id(), b"typing") {
            Ok(()) => sent += 1,
            Err(e) => {
                limited = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(limited, Some(SyncError::RateLimited { retry_after_ms }) if retry_after_ms > 0),
        "{limited:?} after {sent}"
    );
    assert!(sent <= 31, "{sent} sent in a burst");
    eventually("b hears the whole burst", || {
        heard.lock().expect("lock").len() == sent
    });
    let too_large = vec![0u8; syncline::MAX_EPHEMERAL_BYTES + 1];
    assert!(matches!(
        client_a.send_ephemeral(doc.id(), &too_large),
        Err(SyncError::EphemeralTooLarge { .. })
    ));
    assert!(
        echoed.lock().expect("lock").is_empty(),
        "never to its sender"
    );
    assert!(
        !matches!(client_a.status(), syncline::Status::Error { .. }),
        "the relay refused nothing: {:?}",
        client_a.status()
    );
    assert_eq!(client_a.stats().connections, 1);

    client_a.pause();
    eventually("a is offline", || {
        matches!(
            client_a.send_ephemeral(doc.id(), b"gone"),
            Err(SyncError::NotConnected)
        )
    });
}

#[test]
fn a_reconnect_with_ten_changed_out_of_ten_thousand_sends_little() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let a = Device::fast();
    let ids: Vec<_> = (0..10_000)
        .map(|i| {
            a.store
                .create_with(
                    &todos(),
                    Value::from_json(&serde_json::json!({"title": format!("todo {i}")})),
                    syncline::Priority::Normal,
                )
                .expect("create")
                .id()
                .clone()
        })
        .collect();
    let client = a.connect(&relay);
    client
        .wait_synced(Duration::from_secs(120), true)
        .expect("initial sync");
    let initial = client.stats();
    drop(client);
    for id in ids.iter().step_by(1000) {
        a.store
            .document(id)
            .expect("doc")
            .put("done", true)
            .expect("put");
    }
    let client = a.connect(&relay);
    client.wait_synced(WAIT, true).expect("reconnect");
    let stats = client.stats();
    eprintln!("initial sync: {initial:?}\nreconnect: {stats:?}");
    assert_eq!(stats.docs_sent, 10);
    // A handful of frames and a few KB: nothing proportional to the 10,000 documents.
    assert!(stats.frames_sent <= 8, "{stats:?}");
    assert!(stats.frames_received <= 8, "{stats:?}");
    assert!(
        stats.bytes_sent + stats.bytes_received < 16 * 1024,
        "{stats:?}"
    );
    assert!(stats.round_trips <= 2, "{stats:?}");
}

#[test]
fn a_provider_without_a_token_yet_is_retried_and_a_denying_one_stops() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let device = Device::new();
    device
        .store
        .create(&todos())
        .and_then(|d| d.put("title", "later"))
        .expect("create");
    // Unavailable twice (the app's auth service is down), then a token: the client retries.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (data_dir, id) = (data.path().to_owned(), device.device());
    let provider = {
        let calls = calls.clone();
        move || {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                return Err(syncline::TokenError::Unavailable(
                    "auth service down".into(),
                ));
            }
            syncline_testkit::relay::token(&data_dir, "alice", &id, "todos", "todos", 600)
                .map_err(|e| syncline::TokenError::Unavailable(e.to_string()))
        }
    };
    let client = device.connect_with(&relay.url(), provider);
    client
        .wait_synced(WAIT, false)
        .expect("synced after the retries");
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    client.stop();

    // Denied: the client reports Unauthorized at once and the write stays pending.
    let denied = device.connect_with(&relay.url(), || {
        Err(syncline::TokenError::Denied("signed out".into()))
    });
    let doc = device.store.create(&todos()).expect("create");
    doc.put("title", "offline").expect("put");
    match denied.wait_synced(WAIT, false) {
        Err(syncline::SyncError::Unauthorized(reason)) => {
            assert!(reason.contains("signed out"), "{reason}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(
        device
            .store
            .pending_documents()
            .expect("pending")
            .contains(doc.id())
    );
}

fn photos() -> Collection {
    Collection::new("photos").expect("valid")
}

/// A client syncing `photos` with `mode`, as `profile` says.
fn photos_client(
    relay: &Relay,
    device: &Device,
    mode: syncline::SyncMode,
    profile: impl FnOnce(&mut syncline::Profile),
) -> SyncClient {
    let token = relay
        .token("alice", &device.device(), "photos", "photos", 3600)
        .expect("token");
    let mut options = SyncOptions::new(relay.url(), &[photos()]);
    options.subscriptions[0].mode = mode;
    profile(&mut options.profile);
    SyncClient::start(&device.store, options, move || Ok(token.clone())).expect("start")
}

/// A camera that took `n` photos of 30 KB of noise and uploaded them (its client keeps
/// `photos` eagerly), with the bytes one photo takes in its store.
fn camera_with_photos(relay: &Relay, n: u64) -> (Device, Vec<syncline::DocId>, SyncClient, u64) {
    let camera = Device::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let photo = camera.store.create(&photos()).expect("create");
        photo.put("body", noise(30_000, i + 1)).expect("put");
        ids.push(photo.id().clone());
    }
    let uploader = photos_client(relay, &camera, syncline::SyncMode::Eager, |_| {});
    uploader.wait_synced(WAIT, true).expect("uploaded");
    let one_photo = camera.store.info(&ids[0]).expect("info").stored_bytes;
    (camera, ids, uploader, one_photo)
}

#[test]
fn on_demand_documents_are_listed_fetched_evicted_over_budget_and_fetched_again() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let (camera, ids, _uploader, one_photo) = camera_with_photos(&relay, 3);

    // The phone keeps photos on demand, within a budget of about one and a half photos.
    let phone = Device::new();
    let client = photos_client(&relay, &phone, syncline::SyncMode::OnDemand, |p| {
        p.storage_budget_bytes = Some(one_photo * 3 / 2);
    });
    client.wait_synced(WAIT, true).expect("synced");
    let listed = client.deferred().expect("deferred");
    assert_eq!(listed.len(), 3, "the list, not the content: {listed:?}");
    assert!(
        listed
            .iter()
            .all(|d| d.reason == syncline::DeferReason::OnDemand)
    );
    assert!(phone.store.list(&photos()).expect("list").is_empty());

    // Opening fetches; a second one takes the store over its budget: the first is evicted.
    let first = client.open(&ids[0], WAIT).expect("open");
    assert_eq!(
        first.get_str("body").expect("read").map(|b| b.len()),
        Some(30_000)
    );
    drop(first);
    client.open(&ids[1], WAIT).expect("open");
    let evicted = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        matches!(
            phone.store.document(&ids[0]),
            Err(syncline::Error::Evicted(_))
        )
    });
    assert!(
        evicted,
        "the least recently changed fetched photo is evicted"
    );
    let info = phone.store.info(&ids[0]).expect("metadata stays");
    assert!(info.evicted);
    assert!(
        client
            .deferred()
            .expect("deferred")
            .iter()
            .any(|d| d.doc == ids[0] && d.reason == syncline::DeferReason::StorageBudget)
    );

    // Opened again, it comes back whole from the relay.
    let again = client.open(&ids[0], WAIT).expect("fetched again");
    assert_eq!(
        again.get_str("body").expect("read").map(|b| b.len()),
        Some(30_000)
    );
    assert_eq!(
        again.heads().expect("heads"),
        camera
            .store
            .document(&ids[0])
            .expect("doc")
            .heads()
            .expect("heads")
    );
}

/// Issue 15: a device that evicted documents to keep within its storage budget kept its own
/// changes to them, so a relay restored from a backup older than those changes gets them
/// back: merged into a document the relay still holds, or a document the relay holds nothing
/// of made again from them alone. Checked by a new device before any other device comes back.
#[test]
fn a_relay_restored_from_an_older_backup_gets_back_an_evicted_documents_own_changes() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let addr = relay.addr.clone();
    let (camera, ids, uploader, one_photo) = camera_with_photos(&relay, 2);
    let backup_dir = temp_dir();
    let backup = backup_dir.path().join("relay.db");
    relay.backup(&backup).expect("backup of the live relay");

    // After the backup: the phone captions a photo and starts an album, which the camera
    // fills; then opening another photo takes it over its budget and both are evicted.
    let phone = Device::new();
    let client = photos_client(&relay, &phone, syncline::SyncMode::OnDemand, |p| {
        p.storage_budget_bytes = Some(one_photo * 3 / 2);
    });
    client.wait_synced(WAIT, true).expect("synced");
    let captioned = client.open(&ids[0], WAIT).expect("open");
    captioned.put("caption", "from the phone").expect("caption");
    drop(captioned);
    let album = phone.store.create(&photos()).expect("create");
    album.put("title", "the phone's album").expect("title");
    let album = album.id().clone();
    client.wait_synced(WAIT, true).expect("acknowledged");
    eventually("the camera has the album", || {
        camera.store.document(&album).is_ok()
    });
    camera
        .store
        .document(&album)
        .expect("album")
        .put("cover", noise(30_000, 9))
        .expect("cover");
    uploader.wait_synced(WAIT, true).expect("cover uploaded");
    eventually("the phone has the cover", || {
        phone
            .store
            .document(&album)
            .and_then(|d| d.get_str("cover"))
            .is_ok_and(|c| c.is_some())
    });
    client.wait_synced(WAIT, true).expect("acknowledged");
    client.open(&ids[1], WAIT).expect("open");
    eventually("the captioned photo and the album are evicted", || {
        [&ids[0], &album]
            .iter()
            .all(|d| matches!(phone.store.document(d), Err(syncline::Error::Evicted(_))))
    });
    client.pause();
    uploader.pause();

    // The relay comes back from the backup: no caption, no album.
    let relay = restore_backup(relay, data.path(), &backup, &addr);

    // Only the phone comes back; a new device then finds both of its changes.
    client.resume();
    client
        .wait_synced(WAIT, true)
        .expect("the phone synced with the restored relay");
    eventually("the phone sent its kept changes", || {
        phone.store.pending_documents().is_ok_and(|p| p.is_empty())
    });
    let checker = Device::new();
    let check = photos_client(&relay, &checker, syncline::SyncMode::Eager, |_| {});
    check.wait_synced(WAIT, true).expect("checker synced");
    eventually("the caption and the album are back", || {
        let caption = checker
            .store
            .document(&ids[0])
            .and_then(|d| d.get_str("caption"));
        let title = checker
            .store
            .document(&album)
            .and_then(|d| d.get_str("title"));
        caption.is_ok_and(|c| c.as_deref() == Some("from the phone"))
            && title.is_ok_and(|t| t.as_deref() == Some("the phone's album"))
    });
    let photo = checker.store.document(&ids[0]).expect("photo");
    assert_eq!(
        photo.get_str("body").expect("body").map(|b| b.len()),
        Some(30_000),
        "merged into the photo the relay held"
    );

    // The camera comes back with the album's cover: everyone converges.
    uploader.resume();
    uploader.wait_synced(WAIT, true).expect("camera synced");
    eventually("the cover is back too", || {
        checker
            .store
            .document(&album)
            .and_then(|d| d.get_str("cover"))
            .is_ok_and(|c| c.is_some_and(|c| c.len() == 30_000))
    });
    drop((client, uploader, check));
}

/// The largest change the SDK lets an app make (`MAX_CHANGE_BYTES`, incompressible) goes
/// through a relay with default limits and reaches another device: the bound leaves room for
/// the message around it.
#[test]
fn the_largest_change_an_app_may_make_reaches_another_device() {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let (a, b) = (Device::fast(), Device::fast());
    let doc = a.store.create(&todos()).expect("create");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let blob: Vec<u8> = (0..syncline::MAX_CHANGE_BYTES - 256)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    doc.put("blob", Value::Bytes(blob.clone()))
        .expect("the largest change");
    let change: usize = a
        .store
        .changes_since(doc.id(), &syncline::Heads::default())
        .expect("changes")
        .iter()
        .map(Vec::len)
        .max()
        .expect("one");
    assert!(
        change > syncline::MAX_CHANGE_BYTES - 512 && change <= syncline::MAX_CHANGE_BYTES,
        "a change at the bound: {change}"
    );
    let client_a = a.connect(&relay);
    client_a.wait_synced(WAIT, true).expect("uploaded");
    assert!(a.store.pending_documents().expect("pending").is_empty());
    let client_b = b.connect(&relay);
    client_b.wait_synced(WAIT, true).expect("downloaded");
    assert_eq!(
        b.store
            .document(doc.id())
            .expect("doc")
            .get("blob")
            .expect("blob"),
        Some(Value::Bytes(blob))
    );
    drop((client_a, client_b));
}
