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
        assert!(out.lines().any(|l| l.starts_with("synced: ")), "{out}");
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

/// `sync` with the device's capabilities, through `relay`: its stdout, and how long it took.
fn sync_as(
    relay: &syncline_testkit::relay::Relay,
    store: &std::path::Path,
    capabilities: &[&str],
) -> (String, std::time::Duration) {
    let token = relay
        .token("alice", &device_id(store), "todos", "todos", 600)
        .expect("token");
    let started = std::time::Instant::now();
    let url = relay.url();
    let mut args = vec!["sync", "--relay", &url, "--token", &token];
    args.extend_from_slice(capabilities);
    let out = stdout(&todo(store, &args));
    (out, started.elapsed())
}

fn ids(json: &str) -> Vec<String> {
    let items: serde_json::Value = serde_json::from_str(json).expect("json");
    items
        .as_array()
        .expect("an array")
        .iter()
        .map(|i| i["id"].as_str().expect("an id").to_owned())
        .collect()
}

#[test]
fn capabilities_decide_what_a_sync_gets_and_fetch_gets_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = tempfile::tempdir().expect("temp dir");
    let relay = syncline_testkit::relay::Relay::start(data.path()).expect("relay");
    let laptop = dir.path().join("laptop");
    let note = dir.path().join("note.txt");
    std::fs::write(&note, syncline_testkit::noise(200_000, 1)).expect("note");
    let small = stdout(&todo(&laptop, &["add", "Buy milk"]))
        .trim()
        .to_owned();
    let big = stdout(&todo(
        &laptop,
        &[
            "add",
            "Read the manual",
            "--note-file",
            note.to_str().expect("utf-8"),
        ],
    ))
    .trim()
    .to_owned();
    sync_as(&relay, &laptop, &[]);

    // A phone on a metered network gets the small todo; the large one is announced.
    let phone = dir.path().join("phone");
    let (out, _) = sync_as(&relay, &phone, &["--metered", "--device-class", "phone"]);
    assert!(out.contains("1 todos deferred"), "{out}");
    assert_eq!(
        ids(&stdout(&todo(&phone, &["list", "--json"]))),
        vec![small.clone()]
    );
    let deferred: serde_json::Value =
        serde_json::from_str(&stdout(&todo(&phone, &["deferred", "--json"]))).expect("json");
    assert_eq!(deferred[0]["id"], big.as_str());
    assert_eq!(deferred[0]["reason"], "metered network");
    assert!(deferred[0]["bytes"].as_u64().expect("bytes") > 100_000);
    // Fetched on purpose, still metered.
    let token = relay
        .token("alice", &device_id(&phone), "todos", "todos", 600)
        .expect("token");
    let out = stdout(&todo(
        &phone,
        &[
            "fetch",
            &big,
            "--relay",
            &relay.url(),
            "--token",
            &token,
            "--metered",
        ],
    ));
    assert_eq!(out.trim(), format!("fetched {big}: Read the manual"));
    assert_eq!(ids(&stdout(&todo(&phone, &["list", "--json"]))).len(), 2);
    assert_eq!(stdout(&todo(&phone, &["deferred"])), "");

    // A tablet keeping todos on demand gets the list only.
    let tablet = dir.path().join("tablet");
    sync_as(&relay, &tablet, &["--on-demand"]);
    assert_eq!(stdout(&todo(&tablet, &["list"])), "");
    let deferred = ids(&stdout(&todo(&tablet, &["deferred", "--json"])));
    assert_eq!(deferred.len(), 2);
    assert!(stdout(&todo(&tablet, &["deferred"])).contains("on demand"));

    // A slow device is paced: the transfer takes at least what its bandwidth implies.
    let slow = dir.path().join("slow");
    let rate = 50_000;
    let (out, took) = sync_as(&relay, &slow, &["--download", &rate.to_string()]);
    assert!(
        out.contains("progress: "),
        "plain progress lines off a terminal: {out}"
    );
    let received: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("synced: "))
        .and_then(|l| l.split("received ").nth(1))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("bytes received in the summary");
    // The first 16 KiB may go at once.
    let floor = std::time::Duration::from_millis((received - (16 << 10)) * 1000 / rate);
    assert!(
        took >= floor,
        "{received} bytes at {rate} B/s in {took:?}, floor {floor:?}"
    );
}
