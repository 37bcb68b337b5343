//! The storage contract: what every `Storage` backend must do. The suite is written once, as
//! generic functions, and instantiated per backend by `contract_tests!`: SQLite, memory, and
//! PostgreSQL (each test starts a server of its own; without PostgreSQL installed those tests
//! fail and say so).

use syncline_protocol::messages::{
    CollectionSubscription, DeferReason, DeviceClass, Profile, SyncMode,
};
use syncline_protocol::{Collection, DeviceId, DocId, Hash, Heads, Priority};
use syncline_relay::Tenant;
use syncline_relay::storage::{
    Append, Deferred, DeferredEntry, DeviceRecord, MemoryStorage, PostgresStorage, SqliteStorage,
    Storage, StorageError, sqlite_backup,
};
use syncline_testkit::postgres::PostgresServer;

/// A tenant by name (test names are valid).
fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a valid tenant")
}

fn doc(s: &str) -> DocId {
    s.parse().expect("valid doc id")
}

fn col(s: &str) -> Collection {
    Collection::new(s).expect("valid collection")
}

fn heads(b: u8) -> Heads {
    Heads::new(vec![Hash([b; 32])])
}

fn append(d: &str, chunk: &[u8], h: u8) -> Append {
    Append {
        doc: doc(d),
        chunk: chunk.to_vec(),
        heads: heads(h),
        priority: None,
        at_ms: 0,
        base_seq: None,
    }
}

fn device(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

fn record(n: u8, seen: u64) -> DeviceRecord {
    DeviceRecord {
        device: device(n),
        user: format!("user{n}"),
        profile: Profile {
            class: DeviceClass::Phone,
            storage_budget_bytes: Some(1 << 30),
            download_bytes_per_s: Some(1_000_000),
            upload_bytes_per_s: None,
            metered: true,
            realtime: false,
            metered_max_doc_bytes: None,
        },
        subscriptions: vec![
            CollectionSubscription {
                collection: col("todos"),
                priority: Priority::High,
                mode: SyncMode::Eager,
            },
            CollectionSubscription {
                collection: col("photos"),
                priority: Priority::Low,
                mode: SyncMode::OnDemand,
            },
        ],
        first_seen_ms: seen,
        last_seen_ms: seen,
        last_sync_ms: None,
        deferred: Deferred::default(),
    }
}

fn sequences_and_loading<S: Storage>(s: &S) {
    assert_eq!(
        s.append(
            &tenant("t"),
            &[append("todos/a", b"a1", 1), append("todos/b", b"b1", 2)]
        )
        .expect("append"),
        vec![1, 2]
    );
    assert_eq!(
        s.append(&tenant("t"), &[append("notes/x", b"x1", 3)])
            .expect("append"),
        vec![1],
        "per-collection sequence"
    );
    assert_eq!(
        s.append(&tenant("t"), &[append("todos/a", b"a2", 4)])
            .expect("append"),
        vec![3]
    );
    let a = s
        .load(&tenant("t"), &doc("todos/a"))
        .expect("load")
        .expect("exists");
    assert_eq!(a.chunks, vec![b"a1".to_vec(), b"a2".to_vec()]);
    assert_eq!((a.heads, a.seq), (heads(4), 3));
    assert_eq!(
        s.load(&tenant("t"), &doc("todos/none")).expect("load"),
        None
    );

    let changed = s
        .changed_since(&tenant("t"), &col("todos"), 0, 100)
        .expect("changed");
    let listed: Vec<(String, u64)> = changed.iter().map(|c| (c.doc.to_string(), c.seq)).collect();
    assert_eq!(
        listed,
        vec![("todos/b".into(), 2), ("todos/a".into(), 3)],
        "each document once, by sequence"
    );
    assert_eq!(changed[1].stored_bytes, 4);
    assert_eq!(
        s.changed_since(&tenant("t"), &col("todos"), 2, 100)
            .expect("changed")
            .len(),
        1
    );
    assert_eq!(
        s.changed_since(&tenant("t"), &col("todos"), 0, 1)
            .expect("changed")
            .len(),
        1,
        "limit"
    );
    assert!(
        s.changed_since(&tenant("t"), &col("todos"), 3, 100)
            .expect("changed")
            .is_empty()
    );
}

fn tenants_are_isolated<S: Storage>(s: &S) {
    s.append(&tenant("acme"), &[append("todos/a", b"acme", 1)])
        .expect("append");
    s.append(&tenant("globex"), &[append("todos/a", b"globex", 2)])
        .expect("append");
    assert_eq!(
        s.load(&tenant("acme"), &doc("todos/a"))
            .expect("load")
            .expect("exists")
            .chunks,
        vec![b"acme".to_vec()]
    );
    assert_eq!(
        s.load(&tenant("globex"), &doc("todos/a"))
            .expect("load")
            .expect("exists")
            .chunks,
        vec![b"globex".to_vec()]
    );
    assert_eq!(
        s.load(&tenant("initech"), &doc("todos/a")).expect("load"),
        None
    );
    assert_eq!(
        s.changed_since(&tenant("acme"), &col("todos"), 0, 10)
            .expect("changed")
            .len(),
        1
    );
    s.register_device(&tenant("acme"), &record(1, 10))
        .expect("register");
    assert!(
        s.devices(Some(&tenant("globex")))
            .expect("devices")
            .is_empty()
    );
    s.set_cursor(&tenant("acme"), &device(1), &col("todos"), 5)
        .expect("cursor");
    assert!(
        s.cursors(&tenant("globex"), &device(1))
            .expect("cursors")
            .is_empty()
    );
    s.save_sync_states(
        &tenant("acme"),
        &device(1),
        &[(doc("todos/a"), b"state".to_vec())],
    )
    .expect("save");
    assert_eq!(
        s.load_sync_state(&tenant("globex"), &device(1), &doc("todos/a"))
            .expect("load"),
        None
    );
}

fn compaction_keeps_the_sequence<S: Storage>(s: &S) {
    s.append(&tenant("t"), &[append("todos/a", b"1", 1)])
        .expect("append");
    s.append(&tenant("t"), &[append("todos/a", b"2", 2)])
        .expect("append");
    s.compact(&tenant("t"), &doc("todos/a"), b"snapshot", &heads(2))
        .expect("compact");
    let a = s
        .load(&tenant("t"), &doc("todos/a"))
        .expect("load")
        .expect("exists");
    assert_eq!(
        (a.chunks, a.heads, a.seq),
        (vec![b"snapshot".to_vec()], heads(2), 2)
    );
    s.append(&tenant("t"), &[append("todos/a", b"3", 3)])
        .expect("append after compaction");
    assert_eq!(
        s.load(&tenant("t"), &doc("todos/a"))
            .expect("load")
            .expect("exists")
            .chunks
            .len(),
        2
    );
    s.compact(&tenant("t"), &doc("todos/none"), b"x", &heads(9))
        .expect("compacting a missing document");
    assert_eq!(
        s.load(&tenant("t"), &doc("todos/none")).expect("load"),
        None
    );
}

fn registry_cursors_and_sync_state<S: Storage>(s: &S) {
    s.register_device(&tenant("t"), &record(1, 100))
        .expect("register");
    s.touch_device(&tenant("t"), &device(1), 150, true)
        .expect("touch");
    let mut updated = record(1, 200);
    updated.profile.metered = false;
    updated.profile.metered_max_doc_bytes = Some(1 << 20);
    let listed = |d: &str, priority, reason| DeferredEntry {
        doc: doc(d),
        priority,
        bytes: 4500,
        reason,
    };
    updated.deferred = Deferred {
        docs: 2,
        bytes: 9000,
        list: vec![
            listed("photos/p", Priority::Low, DeferReason::OnDemand),
            listed("todos/big", Priority::High, DeferReason::Metered),
        ],
    };
    updated.subscriptions.truncate(1);
    s.register_device(&tenant("t"), &updated)
        .expect("re-register");
    s.register_device(&tenant("t"), &record(2, 300))
        .expect("second");
    let devices = s.devices(Some(&tenant("t"))).expect("devices");
    assert_eq!(devices.len(), 2);
    let one = &devices
        .iter()
        .find(|(_, d)| d.device == device(1))
        .expect("device 1")
        .1;
    assert_eq!(one.first_seen_ms, 100, "first seen is kept");
    assert_eq!(one.last_seen_ms, 200);
    assert_eq!(one.last_sync_ms, Some(150), "last sync is kept");
    assert!(!one.profile.metered);
    assert_eq!(one.profile.metered_max_doc_bytes, Some(1 << 20));
    assert_eq!((one.deferred.docs, one.deferred.bytes), (2, 9000));
    assert_eq!(
        one.deferred
            .list
            .iter()
            .map(|e| (e.doc.to_string(), e.reason))
            .collect::<Vec<_>>(),
        vec![
            ("todos/big".to_owned(), DeferReason::Metered),
            ("photos/p".to_owned(), DeferReason::OnDemand),
        ],
        "highest priority first"
    );
    assert_eq!(one.subscriptions.len(), 1);
    let two = &devices
        .iter()
        .find(|(_, d)| d.device == device(2))
        .expect("device 2")
        .1;
    assert_eq!(*two, record(2, 300));
    assert_eq!(s.devices(None).expect("all").len(), 2);

    s.set_cursor(&tenant("t"), &device(1), &col("todos"), 3)
        .expect("cursor");
    s.set_cursor(&tenant("t"), &device(1), &col("todos"), 7)
        .expect("cursor");
    s.set_cursor(&tenant("t"), &device(1), &col("notes"), 1)
        .expect("cursor");
    assert_eq!(
        s.cursors(&tenant("t"), &device(1)).expect("cursors"),
        vec![(col("notes"), 1), (col("todos"), 7)]
    );
    s.save_sync_states(
        &tenant("t"),
        &device(1),
        &[(doc("todos/a"), b"one".to_vec())],
    )
    .expect("save");
    s.save_sync_states(
        &tenant("t"),
        &device(1),
        &[(doc("todos/a"), b"two".to_vec())],
    )
    .expect("save");
    assert_eq!(
        s.load_sync_state(&tenant("t"), &device(1), &doc("todos/a"))
            .expect("load"),
        Some(b"two".to_vec())
    );
    assert_eq!(
        s.load_sync_state(&tenant("t"), &device(2), &doc("todos/a"))
            .expect("load"),
        None
    );
}

fn concurrent_appends_get_distinct_sequences<S: Storage>(s: &S) {
    let seqs: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                scope.spawn(move || {
                    (0..25)
                        .flat_map(|i| {
                            let d = format!("todos/t{t}-{i}");
                            s.append(&tenant("t"), &[append(&d, b"x", 1)])
                                .expect("append")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=100).collect::<Vec<_>>());
}

fn everything_survives_reopening<S: Storage, P>(open: &dyn Fn(&P) -> S, place: &P) {
    let first_epoch = {
        let s = open(place);
        s.append(&tenant("t"), &[append("todos/a", b"a1", 1)])
            .expect("append");
        s.register_device(&tenant("t"), &record(1, 10))
            .expect("register");
        s.set_cursor(&tenant("t"), &device(1), &col("todos"), 1)
            .expect("cursor");
        s.epoch().to_owned()
    };
    let s = open(place);
    assert!(
        s.holds_position(&tenant("t"), &col("todos"), &first_epoch, 1)
            .expect("position"),
        "what an earlier opening showed is still held"
    );
    assert_eq!(
        s.load(&tenant("t"), &doc("todos/a"))
            .expect("load")
            .expect("exists")
            .seq,
        1
    );
    assert_eq!(s.devices(Some(&tenant("t"))).expect("devices").len(), 1);
    assert_eq!(
        s.cursors(&tenant("t"), &device(1)).expect("cursors"),
        vec![(col("todos"), 1)]
    );
    assert_eq!(
        s.append(&tenant("t"), &[append("todos/b", b"b", 2)])
            .expect("append"),
        vec![2],
        "sequence continues"
    );
}

fn a_documents_priority_is_kept_until_another_is_sent<S: Storage>(s: &S) {
    let t = tenant("t");
    s.append(&t, &[append("todos/a", b"a1", 1)])
        .expect("append");
    let listed = |s: &S| s.changed_since(&t, &col("todos"), 0, 10).expect("changed")[0].priority;
    assert_eq!(listed(s), None, "never set");
    let with = |p| Append {
        priority: Some(p),
        ..append("todos/a", b"a2", 2)
    };
    s.append(&t, &[with(Priority::Critical)]).expect("append");
    assert_eq!(listed(s), Some(Priority::Critical));
    s.append(&t, &[append("todos/a", b"a3", 3)])
        .expect("append");
    assert_eq!(
        listed(s),
        Some(Priority::Critical),
        "an append without one keeps it"
    );
    s.append(&t, &[with(Priority::Low)]).expect("append");
    let loaded = s.load(&t, &doc("todos/a")).expect("load").expect("exists");
    assert_eq!(loaded.priority, Some(Priority::Low));
}

/// Sequence numbers are recorded against epochs: a copy restored from an older backup runs
/// in an epoch of its own, refuses the positions its lost original showed after the backup
/// (even once it has reused their numbers), and holds those from before.
fn a_restored_copy_refuses_the_positions_it_lost<S: Storage, P>(
    open: &dyn Fn(&P) -> S,
    backup: &dyn Fn(&S, &P) -> S,
    place: &P,
) {
    let (t, todos) = (tenant("t"), col("todos"));
    let s = open(place);
    s.append(
        &t,
        &[append("todos/a", b"a", 1), append("todos/b", b"b", 2)],
    )
    .expect("append");
    let original = s.epoch().to_owned();
    let holds =
        |s: &S, epoch: &str, seq| s.holds_position(&t, &todos, epoch, seq).expect("position");
    assert!(holds(&s, &original, 2));
    assert!(!holds(&s, &original, 3), "never reached");
    assert!(!holds(&s, "an-epoch-of-another-relay", 1), "unknown epoch");
    assert!(
        holds(&s, "an-epoch-of-another-relay", 0),
        "the start is always held"
    );
    assert!(
        !s.holds_position(&tenant("other"), &todos, &original, 1)
            .expect("position"),
        "per tenant"
    );
    assert!(
        !s.holds_position(&t, &col("notes"), &original, 1)
            .expect("position"),
        "per collection"
    );

    let restored = backup(&s, place);
    assert_ne!(
        restored.epoch(),
        original,
        "a restored copy runs in a new epoch"
    );
    assert_eq!(
        s.append(&t, &[append("todos/c", b"c", 3)]).expect("append"),
        vec![3]
    );
    assert!(holds(&s, &original, 3));

    assert!(holds(&restored, &original, 2), "from before the backup");
    assert!(!holds(&restored, &original, 3), "lost with the original");
    assert_eq!(
        restored
            .append(&t, &[append("todos/x", b"x", 9)])
            .expect("append"),
        vec![3],
        "the copy numbers from where it was"
    );
    assert!(holds(&restored, restored.epoch(), 3));
    assert!(
        !holds(&restored, &original, 3),
        "a reused number is not the lost one"
    );
}

/// An append built on a state the storage no longer has (another relay appended since)
/// stores nothing of its batch and names the documents; every collection's sequence is listed.
fn an_append_on_a_stale_state_stores_nothing<S: Storage>(s: &S) {
    let t = tenant("t");
    let based = |d, chunk: &'static [u8], h, base| Append {
        base_seq: Some(base),
        ..append(d, chunk, h)
    };
    assert_eq!(
        s.append(&t, &[based("todos/a", b"a1", 1, 0)]).expect("new"),
        vec![1]
    );
    // `todos/a` is at 1, not new any more: the batch is refused whole.
    match s.append(
        &t,
        &[based("todos/b", b"b1", 2, 0), based("todos/a", b"a2", 3, 0)],
    ) {
        Err(StorageError::Conflict { docs }) => assert_eq!(docs, vec![doc("todos/a")]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.load(&t, &doc("todos/b")).expect("load").is_none());
    assert_eq!(
        s.collection_seqs().expect("seqs"),
        vec![(t.clone(), col("todos"), 1)],
        "a refused batch takes no sequence number"
    );
    // A stored state that never was.
    assert!(matches!(
        s.append(&t, &[based("todos/c", b"c1", 4, 7)]),
        Err(StorageError::Conflict { .. })
    ));
    assert_eq!(
        s.append(
            &t,
            &[based("todos/a", b"a2", 3, 1), based("todos/b", b"b1", 2, 0)]
        )
        .expect("on the current state"),
        vec![2, 3]
    );
    let a = s.load(&t, &doc("todos/a")).expect("load").expect("stored");
    assert_eq!(a.chunks, vec![b"a1".to_vec(), b"a2".to_vec()]);
    assert_eq!((a.seq, a.heads), (2, heads(3)));
    // Without a base, whatever is stored.
    assert_eq!(
        s.append(&t, &[append("todos/a", b"a3", 5)])
            .expect("append"),
        vec![4]
    );
    s.append(&tenant("u"), &[append("notes/n", b"n1", 6)])
        .expect("append");
    s.append(&t, &[append("lists/l", b"l1", 7)])
        .expect("append");
    assert_eq!(
        s.collection_seqs().expect("seqs"),
        vec![
            (t.clone(), col("lists"), 1),
            (t.clone(), col("todos"), 4),
            (tenant("u"), col("notes"), 1),
        ]
    );
}

/// Instantiates the suite for a backend: `$place` makes where a test's data lives (kept for
/// the whole test), `$open` opens the storage there (again, for the reopening tests),
/// `$backup` makes a restored copy of a storage's data.
macro_rules! contract_tests {
    ($backend:ident, $place:expr, $open:expr, $backup:expr) => {
        mod $backend {
            use super::*;

            fn fresh() -> (impl Sized, impl Storage) {
                let place = ($place)();
                let storage = ($open)(&place);
                (place, storage)
            }

            #[test]
            fn sequences_and_loading() {
                super::sequences_and_loading(&fresh().1);
            }
            #[test]
            fn tenants_are_isolated() {
                super::tenants_are_isolated(&fresh().1);
            }
            #[test]
            fn compaction_keeps_the_sequence() {
                super::compaction_keeps_the_sequence(&fresh().1);
            }
            #[test]
            fn registry_cursors_and_sync_state() {
                super::registry_cursors_and_sync_state(&fresh().1);
            }
            #[test]
            fn a_documents_priority_is_kept_until_another_is_sent() {
                super::a_documents_priority_is_kept_until_another_is_sent(&fresh().1);
            }
            #[test]
            fn an_append_on_a_stale_state_stores_nothing() {
                super::an_append_on_a_stale_state_stores_nothing(&fresh().1);
            }
            #[test]
            fn concurrent_appends_get_distinct_sequences() {
                super::concurrent_appends_get_distinct_sequences(&fresh().1);
            }
            #[test]
            fn everything_survives_reopening() {
                super::everything_survives_reopening(&$open, &($place)());
            }
            #[test]
            fn a_restored_copy_refuses_the_positions_it_lost() {
                super::a_restored_copy_refuses_the_positions_it_lost(&$open, &$backup, &($place)());
            }
        }
    };
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

contract_tests!(
    sqlite,
    temp_dir,
    |dir: &tempfile::TempDir| SqliteStorage::open(&dir.path().join("relay.db"))
        .expect("open sqlite"),
    |_: &SqliteStorage, dir: &tempfile::TempDir| {
        let copy = dir.path().join("backup.db");
        sqlite_backup(&dir.path().join("relay.db"), &copy).expect("backup");
        SqliteStorage::open(&copy).expect("open the backup")
    }
);

/// A test's own PostgreSQL server with its database `relay`. Without PostgreSQL the test
/// fails and says what to install.
fn postgres_server() -> PostgresServer {
    let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.create_database("relay").expect("createdb");
    server
}

contract_tests!(
    postgres,
    postgres_server,
    |server: &PostgresServer| PostgresStorage::open(&server.url("relay")).expect("open postgres"),
    |_: &PostgresStorage, server: &PostgresServer| {
        // A real backup and restore: pg_dump of the live database into a new one.
        server
            .copy_database("relay", "restored")
            .expect("pg_dump and restore");
        PostgresStorage::open(&server.url("restored")).expect("open the restored copy")
    }
);

#[test]
fn sqlite_reopening_starts_a_new_epoch_and_old_data_joins_the_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("relay.db");
    let (t, todos) = (tenant("t"), col("todos"));
    {
        let s = SqliteStorage::open(&path).expect("open");
        s.append(
            &t,
            &[append("todos/a", b"a", 1), append("todos/b", b"b", 2)],
        )
        .expect("append");
    }
    // A database from before epochs (schema 3): its sequence numbers belong to the first.
    let old = rusqlite::Connection::open(&path).expect("open raw");
    old.execute_batch(
        "DROP TABLE epochs; DROP TABLE collection_epochs; DROP TABLE secrets; \
         PRAGMA user_version = 3;",
    )
    .expect("downgrade");
    drop(old);
    let a = SqliteStorage::open(&path).expect("migrate");
    let a_epoch = a.epoch().to_owned();
    assert!(
        a.holds_position(&t, &todos, &a_epoch, 2).expect("position"),
        "what was stored before epochs is held in every later epoch"
    );
    drop(a);
    let b = SqliteStorage::open(&path).expect("reopen");
    assert_ne!(b.epoch(), a_epoch);
    assert!(b.holds_position(&t, &todos, &a_epoch, 2).expect("position"));
    assert!(
        b.holds_position(&t, &todos, b.epoch(), 2)
            .expect("position")
    );
}

#[test]
fn sqlite_backup_refuses_to_overwrite_or_copy_a_foreign_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("relay.db");
    drop(SqliteStorage::open(&path).expect("open"));
    let copy = dir.path().join("copy.db");
    sqlite_backup(&path, &copy).expect("backup");
    assert!(sqlite_backup(&path, &copy).is_err(), "the copy exists");
    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
        .expect("foreign db");
    assert!(sqlite_backup(&foreign, &dir.path().join("x.db")).is_err());
}

#[test]
fn sqlite_refuses_foreign_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
        .expect("foreign db");
    assert!(SqliteStorage::open(&path).is_err());
}

/// Memory storage "reopened" at a path is the same storage: clones share their data.
fn memory_at(dir: &tempfile::TempDir) -> MemoryStorage {
    let dir = dir.path();
    static OPENED: std::sync::Mutex<Vec<(std::path::PathBuf, MemoryStorage)>> =
        std::sync::Mutex::new(Vec::new());
    let mut opened = OPENED.lock().expect("not poisoned");
    if let Some((_, storage)) = opened.iter().find(|(p, _)| p == dir) {
        return storage.clone();
    }
    let storage = MemoryStorage::new();
    opened.push((dir.to_owned(), storage.clone()));
    storage
}

contract_tests!(
    memory,
    temp_dir,
    memory_at,
    |s: &MemoryStorage, _: &tempfile::TempDir| s.backup()
);
