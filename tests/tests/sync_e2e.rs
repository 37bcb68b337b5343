//! End to end: real `syncline-relay` processes and SDK devices, each with its own store,
//! syncing over WebSockets on loopback.

use std::time::Duration;

use syncline::{Collection, Store, SyncClient, SyncOptions, Value};
use syncline_testkit::relay::Relay;
use syncline_testkit::temp_dir;

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
