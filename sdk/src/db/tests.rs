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
