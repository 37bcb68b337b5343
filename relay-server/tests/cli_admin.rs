//! Runs the built `syncline-relay` binary's operator commands in a temporary data directory.

use std::path::Path;
use std::process::{Command, Output};

use automerge::transaction::Transactable;
use syncline_protocol::messages::{DeviceClass, Profile};
use syncline_protocol::{DeviceId, Hash, Heads};
use syncline_relay::Tenant;
use syncline_relay::auth::{Authenticator, dev_key};
use syncline_relay::storage::{
    Append, Deferred, DeferredEntry, DeviceRecord, SqliteStorage, Storage,
};

/// A tenant by name (test names are valid).
fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a valid tenant")
}

fn relay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_syncline-relay"))
        .args(args)
        .output()
        .expect("run syncline-relay")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

fn storage(dir: &Path) -> SqliteStorage {
    SqliteStorage::open(&dir.join("relay.db")).expect("open storage")
}

#[test]
fn token_is_signed_with_the_data_directory_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let device = "00112233445566778899aabbccddeeff";
    let token = ok(&relay(&[
        "token",
        "--data-dir",
        data,
        "--user",
        "alice",
        "--device",
        device,
        "--read",
        "todos,notes",
        "--write",
        "todos",
        "--tenant",
        "acme",
        "--ttl",
        "600",
    ]));
    let (secret, created) = dev_key::load_or_create(dir.path()).expect("key");
    assert!(!created, "the command created the key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let verified = Authenticator::new(Some(secret), None, None, None, 0)
        .verify(token.trim(), now)
        .expect("the relay accepts its own development token");
    assert_eq!(verified.identity.user, "alice");
    assert_eq!(verified.identity.tenant, "acme");
    assert_eq!(verified.identity.device.to_string(), device);
    assert!(verified.expires_at <= now + 600 && verified.expires_at > now + 500);

    fails_with(
        &relay(&[
            "token",
            "--data-dir",
            data,
            "--user",
            "a",
            "--device",
            "nothex",
        ]),
        "dev",
    );
    fails_with(
        &relay(&[
            "token",
            "--data-dir",
            data,
            "--user",
            "a",
            "--device",
            device,
            "--read",
            "Bad!",
        ]),
        "read",
    );
}

#[test]
fn devices_lists_the_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = DeviceRecord {
        device: DeviceId::from_bytes([9; 16]),
        user: "bob".into(),
        profile: Profile {
            class: DeviceClass::Tablet,
            storage_budget_bytes: None,
            download_bytes_per_s: Some(500_000),
            upload_bytes_per_s: None,
            metered: true,
            realtime: true,
            metered_max_doc_bytes: None,
        },
        subscriptions: vec![],
        first_seen_ms: 1,
        last_seen_ms: 2,
        last_sync_ms: Some(2),
        deferred: Deferred {
            docs: 3,
            bytes: 300_000,
            list: vec![DeferredEntry {
                doc: "todos/big".parse().expect("id"),
                priority: syncline_protocol::Priority::High,
                bytes: 100_000,
                reason: syncline_protocol::messages::DeferReason::Metered,
            }],
        },
    };
    storage(dir.path())
        .register_device(&tenant("acme"), &record)
        .expect("register");
    let data = dir.path().to_str().expect("utf-8 path");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&relay(&["devices", "--data-dir", data, "--json"])))
            .expect("json");
    assert_eq!(json[0]["tenant"], "acme");
    assert_eq!(json[0]["device"], "09".repeat(16));
    assert_eq!(json[0]["profile"]["class"], "tablet");
    assert_eq!(json[0]["profile"]["metered"], true);
    assert_eq!(json[0]["last_sync_ms"], 2);
    assert_eq!(json[0]["deferred"]["docs"], 3);
    assert_eq!(json[0]["deferred"]["bytes"], 300_000);
    assert_eq!(json[0]["deferred"]["list"][0]["doc"], "todos/big");
    assert_eq!(json[0]["deferred"]["list"][0]["reason"], "metered");
    assert_eq!(json[0]["deferred"]["list"][0]["priority"], "high");
    let text = ok(&relay(&["devices", "--data-dir", data]));
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("bob") && text.contains("metered"));
    assert_eq!(
        ok(&relay(&[
            "devices",
            "--data-dir",
            data,
            "--tenant",
            "globex"
        ])),
        ""
    );
}

/// Stores `todos/milk` (`{"title": "Buy milk", "done": false}`) for `tenant_name`.
fn store_milk(storage: &impl Storage, tenant_name: &str) {
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "title", "Buy milk").expect("put");
    doc.put(automerge::ROOT, "done", false).expect("put");
    let heads = Heads::new(doc.get_heads().into_iter().map(|h| Hash(h.0)).collect());
    storage
        .append(
            &tenant(tenant_name),
            &[Append {
                doc: "todos/milk".parse().expect("id"),
                chunk: doc.save(),
                heads,
                priority: None,
                at_ms: 0,
                base_seq: None,
            }],
        )
        .expect("append");
}

#[test]
fn doc_prints_a_stored_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    store_milk(&storage(dir.path()), "default");
    let data = dir.path().to_str().expect("utf-8 path");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&relay(&["doc", "--data-dir", data, "todos/milk"])))
            .expect("json");
    assert_eq!(
        json,
        serde_json::json!({"title": "Buy milk", "done": false})
    );
    fails_with(
        &relay(&["doc", "--data-dir", data, "todos/none"]),
        "not found",
    );
    fails_with(
        &relay(&["doc", "--data-dir", data, "--tenant", "other", "todos/milk"]),
        "not found",
    );
    fails_with(
        &relay(&["doc", "--data-dir", data, "no-slash"]),
        "COLLECTION/ID",
    );
}

/// `devices` and `doc` read the relays' PostgreSQL database (`--storage`, or
/// `SYNCLINE_STORAGE`) without writing to it: no migration, no epoch.
#[test]
fn devices_and_doc_read_a_postgresql_database_without_writing() {
    use syncline_relay::storage::PostgresStorage;
    let server =
        syncline_testkit::postgres::PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = server.create_database("relay").expect("createdb");
    fails_with(
        &relay(&["devices", "--storage", &url]),
        "start a relay of this version on it first",
    );
    {
        let storage = PostgresStorage::open(&url).expect("open");
        store_milk(&storage, "acme");
        storage
            .register_device(
                &tenant("acme"),
                &DeviceRecord {
                    device: DeviceId::from_bytes([7; 16]),
                    user: "carol".into(),
                    profile: syncline_testkit::profile(DeviceClass::Phone),
                    subscriptions: vec![],
                    first_seen_ms: 1,
                    last_seen_ms: 2,
                    last_sync_ms: None,
                    deferred: Deferred::default(),
                },
            )
            .expect("register");
    }
    let epochs = || {
        server
            .query("relay", "SELECT count(*) FROM epochs")
            .expect("psql")
    };
    let before = epochs();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let json: serde_json::Value = serde_json::from_str(&ok(&relay(&[
        "devices",
        "--data-dir",
        data,
        "--storage",
        &url,
        "--json",
    ])))
    .expect("json");
    assert_eq!(json[0]["user"], "carol");
    assert_eq!(json[0]["tenant"], "acme");
    let doc: serde_json::Value = serde_json::from_str(&ok(&relay(&[
        "doc",
        "--storage",
        &url,
        "--tenant",
        "acme",
        "todos/milk",
    ])))
    .expect("json");
    assert_eq!(doc, serde_json::json!({"title": "Buy milk", "done": false}));
    assert_eq!(epochs(), before, "reading opened no epoch");
    assert!(
        !dir.path().join("relay.db").exists(),
        "the data directory's SQLite was not touched"
    );
}
