//! Runs the built `syncline-todo` binary in a temp directory, as a user would.

use std::process::{Command, Output};

fn todo(store: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_syncline-todo"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run syncline-todo")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

#[test]
fn add_done_list_and_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("phone");
    let milk = stdout(&todo(&store, &["add", "Buy milk"]))
        .trim()
        .to_owned();
    let bread = stdout(&todo(&store, &["add", "Bake bread"]))
        .trim()
        .to_owned();
    assert_eq!(milk.len(), 32);
    stdout(&todo(&store, &["done", &milk]));

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&todo(&store, &["list", "--json"]))).expect("json");
    assert_eq!(
        json,
        serde_json::json!([
            {"id": milk, "title": "Buy milk", "done": true},
            {"id": bread, "title": "Bake bread", "done": false},
        ])
    );
    let text = stdout(&todo(&store, &["list"]));
    assert_eq!(text.lines().count(), 2);
    assert!(text.starts_with("[x] Buy milk"));

    let history = stdout(&todo(&store, &["history", &milk]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].ends_with("create") && lines[1].ends_with("done"),
        "{history}"
    );
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("s");
    for args in [&["done", "nope"][..], &["history", "zzz"], &["add", "  "]] {
        let out = todo(&store, args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("syncline-todo: "), "{err}");
    }
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    assert!(!todo(&file, &["list"]).status.success());
    // A directory whose store file is not a store.
    let bogus = dir.path().join("bogus");
    std::fs::create_dir_all(&bogus).expect("dir");
    std::fs::write(bogus.join("syncline.db"), "garbage ".repeat(200)).expect("write");
    let out = todo(&bogus, &["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Syncline store"));
}

#[test]
fn demo_converges_and_shows_the_merged_conflict() {
    let out = Command::new(env!("CARGO_BIN_EXE_syncline-todo"))
        .arg("demo")
        .output()
        .expect("run demo");
    let text = stdout(&out);
    assert!(
        text.contains("identical on both devices (4 todos)"),
        "{text}"
    );
    assert!(
        text.contains("concurrent value: \"Buy oat milk\""),
        "{text}"
    );
    assert!(
        text.contains("concurrent value: \"Buy almond milk\""),
        "{text}"
    );
}

#[test]
fn sync_fails_clearly_on_a_refused_token_and_an_unreachable_relay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("phone");
    stdout(&todo(&store, &["add", "Buy milk"]));
    // Nothing listens on this port (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let relay = format!("ws://127.0.0.1:{port}");
    let out = todo(
        &store,
        &["sync", "--relay", &relay, "--token", "x", "--timeout", "5"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");

    let data = tempfile::tempdir().expect("temp dir");
    let relay = syncline_testkit::relay::Relay::start(data.path()).expect("relay");
    let out = todo(
        &store,
        &[
            "sync",
            "--relay",
            &relay.url(),
            "--token",
            "not-a-jwt",
            "--timeout",
            "5",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the token"), "{err}");
}

#[test]
fn sync_reconciles_two_stores_through_a_relay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = tempfile::tempdir().expect("temp dir");
    let relay = syncline_testkit::relay::Relay::start(data.path()).expect("relay");
    let (phone, laptop) = (dir.path().join("phone"), dir.path().join("laptop"));
    let milk = stdout(&todo(&phone, &["add", "Buy milk"]))
        .trim()
        .to_owned();
    stdout(&todo(&laptop, &["add", "Bake bread"]));
    for store in [&phone, &laptop, &phone] {
        // The device id is in the store; `list` opens it so the token can name it.
        let device = device_id(store);
        let token = relay
            .token("alice", &device, "todos", "todos", 600)
            .expect("token");
        let out = stdout(&todo(
            store,
            &["sync", "--relay", &relay.url(), "--token", &token],
        ));
        assert!(out.starts_with("synced: "), "{out}");
    }
    let list = |s: &std::path::Path| stdout(&todo(s, &["list", "--json"]));
    assert_eq!(list(&phone), list(&laptop));
    assert!(list(&laptop).contains(&milk));
}

/// The device id of the store in `dir`, read with the SDK (the CLI does not print it).
fn device_id(dir: &std::path::Path) -> String {
    stdout(&todo(dir, &["list"]));
    let store = syncline::Store::open(dir.join("syncline.db")).expect("open");
    store.device_id().to_string()
}

#[test]
fn watch_prints_changes_as_they_arrive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = tempfile::tempdir().expect("temp dir");
    let relay = syncline_testkit::relay::Relay::start(data.path()).expect("relay");
    let (phone, laptop) = (dir.path().join("phone"), dir.path().join("laptop"));
    let laptop_token = relay
        .token("alice", &device_id(&laptop), "todos", "todos", 600)
        .expect("token");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_syncline-todo"));
    watch.arg("--store").arg(&laptop).args([
        "watch",
        "--relay",
        &relay.url(),
        "--token",
        &laptop_token,
    ]);
    let mut watcher = syncline_testkit::Child::spawn(watch).expect("spawn watch");
    let id = stdout(&todo(&phone, &["add", "Water the plants"]))
        .trim()
        .to_owned();
    let phone_token = relay
        .token("alice", &device_id(&phone), "todos", "todos", 600)
        .expect("token");
    stdout(&todo(
        &phone,
        &["sync", "--relay", &relay.url(), "--token", &phone_token],
    ));
    let mut seen = Vec::new();
    for _ in 0..20 {
        match watcher.next_line().expect("read") {
            Some(line) if line.contains(&id) => {
                assert!(line.contains("Water the plants"), "{line}");
                return;
            }
            Some(line) => seen.push(line),
            None => break,
        }
    }
    panic!("watch never printed the change: {seen:?}");
}
