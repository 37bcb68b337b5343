//! Tests of the SQL layer: migrations from every earlier schema, and file identification.

use rusqlite::Connection;

use super::schema::{APPLICATION_ID, latest_version, migrate};
use crate::{Collection, Error, Store};

/// Builds a store file at every schema version from 0 (an empty file) to the latest, opens
/// each with the current code and checks it migrated, kept its data and accepts writes.
#[test]
fn opens_and_migrates_every_earlier_schema() {
    for version in 0..=latest_version() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        {
            let mut conn = Connection::open(&path).expect("create file");
            migrate(&mut conn, version).expect("build the old schema");
            let found: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .expect("version");
            assert_eq!(found, version);
        }
        let store = Store::open(&path).unwrap_or_else(|e| panic!("open v{version}: {e}"));
        let todos = Collection::new("todos").expect("valid");
        let doc = store.create(&todos).expect("create");
        doc.put("title", "after migration").expect("write");
        drop(store);

        let conn = Connection::open(&path).expect("reopen raw");
        let (app, ver): (i32, i64) = conn
            .query_row(
                "SELECT * FROM pragma_application_id, pragma_user_version",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("pragmas");
        assert_eq!((app, ver), (APPLICATION_ID, latest_version()));
    }
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    drop(Store::open(&path).expect("create"));
    Connection::open(&path)
        .and_then(|c| c.pragma_update(None, "user_version", latest_version() + 1))
        .expect("bump version");
    match Store::open(&path) {
        Err(Error::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (latest_version() + 1, latest_version()));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn refuses_files_that_are_not_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = dir.path().join("notes.txt");
    let shopping_list = "this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(&text, &shopping_list).expect("write");
    assert!(matches!(Store::open(&text), Err(Error::NotAStore { .. })));
    assert_eq!(
        std::fs::read_to_string(&text).expect("read back"),
        shopping_list,
        "the foreign file must be left untouched"
    );

    let other_db = dir.path().join("other.db");
    Connection::open(&other_db)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);"))
        .expect("foreign db");
    assert!(matches!(
        Store::open(&other_db),
        Err(Error::NotAStore { .. })
    ));
    let rows: i64 = Connection::open(&other_db)
        .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
        .expect("foreign db intact");
    assert_eq!(rows, 1);
}

/// The history of syncs keeps every kind of end as written, newest first, the last
/// `KEPT_SYNC_RECORDS` only; a row this version cannot read is skipped, not an error.
#[test]
fn the_history_of_syncs_round_trips_and_stays_bounded() {
    use crate::engine::SyncStore;
    use crate::{KEPT_SYNC_RECORDS, SyncEnd, SyncRecord};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let store = Store::open(&path).expect("open");
    let ends = [
        SyncEnd::Stopped,
        SyncEnd::Paused,
        SyncEnd::NetworkDown,
        SyncEnd::CaughtUp,
        SyncEnd::Stalled,
        SyncEnd::Unauthorized("expired".into()),
        SyncEnd::ConnectionLost("reset".into()),
        SyncEnd::ClosedByRelay {
            code: 4008,
            reason: "slow consumer".into(),
        },
        SyncEnd::RetryRequested("rate".into()),
        SyncEnd::ProtocolError("bad frame".into()),
    ];
    let todos = Collection::new("todos").expect("valid");
    let record = |i: usize| SyncRecord {
        relay: "ws://relay".into(),
        session: i.is_multiple_of(2).then(|| format!("s{i}")),
        started_at_ms: i as u64,
        ended_at_ms: i as u64 + 5,
        docs_sent: 1,
        docs_received: 2,
        bytes_sent: 3,
        bytes_received: 4,
        round_trips: 5,
        refused_count: 1,
        refused: vec![crate::DocId::new(todos.clone(), format!("d{i}")).expect("valid")],
        end: ends[i % ends.len()].clone(),
    };
    for i in 0..KEPT_SYNC_RECORDS + 15 {
        store.record_sync(record(i)).expect("record");
    }
    let history = store.sync_history(usize::MAX).expect("history");
    assert_eq!(history.len(), KEPT_SYNC_RECORDS);
    let newest = KEPT_SYNC_RECORDS + 14;
    let expected: Vec<SyncRecord> = (15..=newest).rev().map(record).collect();
    assert_eq!(history, expected);
    assert_eq!(store.sync_history(3).expect("three").len(), 3);

    // A row of a kind this version does not know is skipped.
    drop(store);
    let conn = Connection::open(&path).expect("raw");
    conn.execute(
        "UPDATE sync_history SET end_kind = 'from_the_future' WHERE started_ms = ?1",
        [newest as i64],
    )
    .expect("update");
    drop(conn);
    let store = Store::open(&path).expect("reopen");
    let history = store.sync_history(2).expect("history");
    assert_eq!(
        history.len(),
        1,
        "the unknown row is skipped, the limit counts it"
    );
    assert_eq!(history[0], record(newest - 1));
}
