//! Issue 17 end to end: several `syncline-relay serve` processes on one PostgreSQL database
//! (a server of the test's own, on loopback), SDK devices on each. A change through one relay
//! reaches devices on the other at once; a relay killed with SIGKILL costs nothing
//! acknowledged (its devices finish through the other); PostgreSQL restarted mid-sync, or a
//! relay's notification connection cut, and service resumes on its own.

use std::time::Duration;

use syncline::{Collection, Store, SyncClient, SyncOptions, Value};
use syncline_testkit::postgres::PostgresServer;
use syncline_testkit::relay::{Relay, share_dev_key};
use syncline_testkit::temp_dir;

mod stores;

const WAIT: Duration = Duration::from_secs(60);

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

/// Relays on one database, each with its own data directory holding the same development key.
struct Cluster {
    server: PostgresServer,
    relays: Vec<Relay>,
    toml: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
        let url = server.create_database("relay").expect("createdb");
        let toml = format!("storage = {url:?}\n");
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| temp_dir()).collect();
        let mut relays: Vec<Relay> = Vec::new();
        for dir in &dirs {
            if let Some(first) = relays.first() {
                share_dev_key(&first.data_dir, dir.path()).expect("copy the key");
            }
            relays.push(Relay::start_with(dir.path(), "127.0.0.1:0", Some(&toml)).expect("relay"));
        }
        relays.iter().for_each(ready);
        Self {
            server,
            relays,
            toml,
            _dirs: dirs,
        }
    }

    /// Starts relay `i` again at its address, on its data directory.
    fn restart(&mut self, i: usize) {
        let (dir, addr) = (self.relays[i].data_dir.clone(), self.relays[i].addr.clone());
        self.relays[i] = Relay::start_with(&dir, &addr, Some(&self.toml)).expect("relay");
        ready(&self.relays[i]);
    }
}

/// Waits until `relay` serves: its storage is up and its change feed follows the others
/// (`/v1/sync` answers 503 until then, which a device waiting with `fail_fast` takes as the
/// relay being unreachable).
fn ready(relay: &Relay) {
    eventually("/readyz", || {
        relay.http_status("/readyz").is_ok_and(|s| s == 200)
    });
}

struct Device {
    store: Store,
    _dir: tempfile::TempDir,
}

impl Device {
    fn new() -> Self {
        let dir = temp_dir();
        let options = syncline::StoreOptions {
            durability: syncline::Durability::Normal,
            ..Default::default()
        };
        let store = Store::open_with(dir.path().join("store.db"), options).expect("open store");
        Self { store, _dir: dir }
    }

    /// Syncs through `relays[0]`, falling back to the others in turn.
    fn connect(&self, relays: &[&Relay]) -> SyncClient {
        let token = relays[0]
            .token(
                "alice",
                &self.store.device_id().to_string(),
                "todos",
                "todos",
                3600,
            )
            .expect("token");
        let mut options = SyncOptions::new(relays[0].url(), &[todos()]);
        options.fallback_urls = relays[1..].iter().map(|r| r.url()).collect();
        options.backoff = syncline::engine::Backoff {
            min_ms: 50,
            max_ms: 500,
        };
        SyncClient::start(&self.store, options, move || Ok(token.clone())).expect("start")
    }

    fn write(&self, title: &str) -> syncline::DocId {
        let doc = self
            .store
            .create_with(
                &todos(),
                Value::from_json(&serde_json::json!({ "title": title })),
                syncline::Priority::Normal,
            )
            .expect("create");
        doc.id().clone()
    }

    fn title(&self, id: &syncline::DocId) -> Option<String> {
        let value = self.store.document(id).ok()?.get("title").ok()??;
        Some(value.to_json().as_str()?.to_owned())
    }
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
fn devices_on_two_relays_get_each_others_changes_at_once_and_converge() {
    let cluster = Cluster::start(2);
    let (r0, r1) = (&cluster.relays[0], &cluster.relays[1]);
    let (a, b) = (Device::new(), Device::new());
    let (client_a, client_b) = (a.connect(&[r0]), b.connect(&[r1]));
    client_a.wait_synced(WAIT, true).expect("a synced");
    client_b.wait_synced(WAIT, true).expect("b synced");

    // Live, both ways, while both stay connected.
    let from_a = a.write("from a");
    eventually("b gets a's change through the other relay", || {
        b.title(&from_a).as_deref() == Some("from a")
    });
    let from_b = b.write("from b");
    eventually("a gets b's change", || {
        a.title(&from_b).as_deref() == Some("from b")
    });

    // The same document edited on both sides at once converges on both.
    for i in 0..20_i64 {
        a.store
            .document(&from_a)
            .expect("a has it")
            .put("a", i)
            .expect("a edits");
        b.store
            .document(&from_a)
            .expect("b has it")
            .put("b", i)
            .expect("b edits");
    }
    eventually("both converge", || same_documents(&a.store, &b.store));
    let doc = b.store.document(&from_a).expect("b has it");
    assert_eq!(
        doc.get("a")
            .expect("get")
            .and_then(|v| v.to_json().as_i64()),
        Some(19)
    );
    assert_eq!(
        doc.get("b")
            .expect("get")
            .and_then(|v| v.to_json().as_i64()),
        Some(19)
    );
}

#[test]
fn a_relay_killed_mid_sync_its_devices_finish_through_the_other() {
    let mut cluster = Cluster::start(2);
    let (a, b) = (Device::new(), Device::new());
    for i in 0..2000 {
        a.write(&format!("todo {i}"));
    }
    let client_b = b.connect(&[&cluster.relays[1]]);
    client_b.wait_synced(WAIT, true).expect("b synced");
    let client_a = a.connect(&[&cluster.relays[0], &cluster.relays[1]]);
    eventually("some acknowledgements", || {
        a.store
            .pending_documents()
            .map(|p| p.len() < 2000)
            .unwrap_or(false)
    });
    cluster.relays[0].kill().expect("SIGKILL");
    let acknowledged = stores::acknowledged(&a.store, &todos());
    assert!(!acknowledged.is_empty());
    // Relay 0 stays dead: device a moves to relay 1 and finishes there.
    client_a
        .wait_synced(WAIT, false)
        .expect("a finishes through the other relay");
    eventually("b has everything", || same_documents(&a.store, &b.store));
    for id in &acknowledged {
        b.store
            .document(id)
            .expect("an acknowledged document survived");
    }
    assert_eq!(b.store.list(&todos()).expect("list").len(), 2000);
    assert_eq!(
        cluster
            .server
            .query("relay", "SELECT count(*) FROM documents")
            .expect("psql"),
        "2000"
    );
    // Started again, relay 0 serves the same data.
    cluster.restart(0);
    let c = Device::new();
    let client_c = c.connect(&[&cluster.relays[0]]);
    client_c.wait_synced(WAIT, true).expect("c synced");
    eventually("c has everything", || same_documents(&a.store, &c.store));
}

#[test]
fn postgresql_restarted_mid_sync_and_service_resumes_on_its_own() {
    let mut cluster = Cluster::start(2);
    let (a, b) = (Device::new(), Device::new());
    for i in 0..1000 {
        a.write(&format!("todo {i}"));
    }
    let client_b = b.connect(&[&cluster.relays[1]]);
    client_b.wait_synced(WAIT, true).expect("b synced");
    let client_a = a.connect(&[&cluster.relays[0]]);
    eventually("some acknowledgements", || {
        a.store
            .pending_documents()
            .map(|p| p.len() < 1000)
            .unwrap_or(false)
    });
    cluster.server.stop().expect("stop PostgreSQL");
    for relay in &cluster.relays {
        eventually("/readyz says the storage is away", || {
            relay.http_status("/readyz").is_ok_and(|s| s == 503)
        });
    }
    let while_down = a.write("written while the database was down");
    cluster
        .server
        .start_again()
        .expect("start PostgreSQL again");
    for relay in &cluster.relays {
        eventually("/readyz is back", || {
            relay.http_status("/readyz").is_ok_and(|s| s == 200)
        });
    }
    client_a.wait_synced(WAIT, false).expect("a finishes");
    eventually("b has everything", || same_documents(&a.store, &b.store));
    assert!(b.title(&while_down).is_some());
    assert_eq!(b.store.list(&todos()).expect("list").len(), 1001);
}

#[test]
fn a_relay_whose_notification_connection_was_cut_catches_up_when_it_is_back() {
    let cluster = Cluster::start(2);
    let (r0, r1) = (&cluster.relays[0], &cluster.relays[1]);
    let (a, b) = (Device::new(), Device::new());
    let (client_a, client_b) = (a.connect(&[r0]), b.connect(&[r1]));
    client_a.wait_synced(WAIT, true).expect("a synced");
    client_b.wait_synced(WAIT, true).expect("b synced");

    // The relays' change feeds are cut and cannot connect again; their storage connections
    // stay.
    let sql = |q: &str| cluster.server.query("postgres", q).expect("psql");
    sql("ALTER DATABASE relay ALLOW_CONNECTIONS false");
    sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'syncline-relay feed'",
    );
    eventually("/readyz says the feed is away", || {
        r1.http_status("/readyz").is_ok_and(|s| s == 503)
    });
    let missed = a.write("while relay 1 heard nothing");
    client_a
        .wait_synced(WAIT, true)
        .expect("a's change is stored");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.title(&missed), None, "relay 1 had no way to know");

    sql("ALTER DATABASE relay ALLOW_CONNECTIONS true");
    eventually("b gets what relay 1 missed", || {
        b.title(&missed).as_deref() == Some("while relay 1 heard nothing")
    });
    assert_eq!(r1.http_status("/readyz").expect("readyz"), 200);
}
