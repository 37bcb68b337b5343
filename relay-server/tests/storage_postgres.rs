//! What PostgreSQL storage does beyond the shared contract (`storage_contract.rs`): several
//! relays on one database (issue 17), and a database that goes away and comes back. Each test
//! starts a server of its own; without PostgreSQL installed they fail and say so.

use syncline_protocol::{Collection, DocId, Hash, Heads};
use syncline_relay::Tenant;
use syncline_relay::storage::{
    Append, CHANGES_CHANNEL, POSTGRES_RETRY_PAUSE, PostgresStorage, Storage, StorageError,
    parse_notification,
};
use syncline_testkit::postgres::PostgresServer;

fn server() -> PostgresServer {
    let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
    server.create_database("relay").expect("createdb");
    server
}

fn append(d: &str, n: u8) -> Append {
    Append {
        doc: d.parse::<DocId>().expect("valid doc id"),
        chunk: vec![n],
        heads: Heads::new(vec![Hash([n; 32])]),
        priority: None,
        at_ms: 0,
        base_seq: None,
    }
}

fn tenant() -> Tenant {
    Tenant::new("t").expect("valid")
}

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

/// Relays starting together on an empty database: the migrations run once (under an
/// advisory lock), every relay opens, each in an epoch of its own.
#[test]
fn relays_starting_together_migrate_once() {
    let server = server();
    let url = server.url("relay");
    let epochs: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    PostgresStorage::open(&url)
                        .expect("open")
                        .epoch()
                        .to_owned()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut distinct = epochs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{epochs:?}");
}

/// Two relays appending to one collection at once: every number is given once, and each
/// relay recognises the positions the other showed devices (a device moving between relays
/// is not told the data was lost).
#[test]
fn two_relays_share_sequences_and_positions() {
    let server = server();
    let url = server.url("relay");
    let (a, b) = (
        PostgresStorage::open(&url).expect("open a"),
        PostgresStorage::open(&url).expect("open b"),
    );
    let seqs: Vec<u64> = std::thread::scope(|scope| {
        let relays = [&a, &b];
        let handles: Vec<_> = relays
            .into_iter()
            .enumerate()
            .map(|(r, relay)| {
                scope.spawn(move || {
                    (0..50u8)
                        .flat_map(|i| {
                            relay
                                .append(&tenant(), &[append(&format!("todos/r{r}d{i}"), i)])
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
    let listed = b
        .changed_since(&tenant(), &todos(), 0, 1000)
        .expect("changed");
    assert_eq!(listed.len(), 100, "each relay sees what the other stored");
    let last_by_a = seqs[..50].iter().max().copied().expect("appended");
    assert!(
        b.holds_position(&tenant(), &todos(), a.epoch(), last_by_a)
            .expect("position")
    );
    assert!(
        a.holds_position(&tenant(), &todos(), b.epoch(), 100)
            .expect("position")
    );
    // A position relay A gave for a document relay B stored (A loaded it): A's epoch counts
    // B's numbers, on both (they run at the same time, in one generation).
    let last_by_b = seqs[50..].iter().max().copied().expect("appended");
    for relay in [&a, &b] {
        assert!(
            relay
                .holds_position(&tenant(), &todos(), a.epoch(), last_by_b)
                .expect("position")
        );
    }
    assert!(
        !a.holds_position(&tenant(), &todos(), a.epoch(), 101)
            .expect("position"),
        "not a position the data never reached"
    );
    // With both relays gone, the next opens the data cold: a new generation, in which the
    // old positions still hold.
    let old_epoch = a.epoch().to_owned();
    drop((a, b));
    let c = PostgresStorage::open(&url).expect("open c");
    assert!(
        c.holds_position(&tenant(), &todos(), &old_epoch, 100)
            .expect("position")
    );
}

/// PostgreSQL stopped: calls fail with an error at once (no hang, nothing stored); started
/// again: the next call connects again and works, and what committed before is there.
#[test]
fn a_database_that_goes_away_fails_calls_and_comes_back() {
    let mut server = server();
    let storage = PostgresStorage::open(&server.url("relay")).expect("open");
    storage
        .append(&tenant(), &[append("todos/a", 1)])
        .expect("append");
    assert!(storage.health().ready());
    server.stop().expect("stop");
    let down = storage.append(&tenant(), &[append("todos/b", 2)]);
    assert!(
        down.as_ref().is_err_and(StorageError::is_unavailable),
        "{down:?}"
    );
    // Until the pause after a failed connect has passed, calls fail at once.
    let started = std::time::Instant::now();
    let load = storage.load(&tenant(), &"todos/a".parse().expect("valid"));
    assert!(load.is_err_and(|e| e.is_unavailable()));
    assert!(started.elapsed() < POSTGRES_RETRY_PAUSE);
    assert!(!storage.health().ready(), "/readyz says so");
    server.start_again().expect("start again");
    std::thread::sleep(POSTGRES_RETRY_PAUSE);
    assert_eq!(
        storage
            .append(&tenant(), &[append("todos/b", 2)])
            .expect("append after the restart"),
        vec![2],
        "the failed append stored nothing"
    );
    assert!(
        storage
            .load(&tenant(), &"todos/a".parse().expect("valid"))
            .expect("load")
            .is_some()
    );
    assert!(storage.health().ready());
}

/// A commit announces (tenant, collection, sequence) on the changes channel, once per
/// collection with its highest sequence, when it commits; a refused batch announces nothing.
#[test]
fn a_commit_announces_each_collection_it_moved() {
    let server = server();
    let storage = PostgresStorage::open(&server.url("relay")).expect("open");
    let mut listener =
        postgres::Client::connect(&server.url("relay"), postgres::NoTls).expect("connect");
    listener
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .expect("listen");
    storage
        .append(
            &tenant(),
            &[
                append("todos/a", 1),
                append("notes/n", 2),
                append("todos/b", 3),
            ],
        )
        .expect("append");
    let conflicting = Append {
        base_seq: Some(9),
        ..append("todos/a", 4)
    };
    assert!(storage.append(&tenant(), &[conflicting]).is_err());
    storage
        .append(&tenant(), &[append("todos/a", 5)])
        .expect("append");
    use postgres::fallible_iterator::FallibleIterator;
    let mut heard = Vec::new();
    let mut notifications = listener.notifications();
    let mut waiting = notifications.timeout_iter(std::time::Duration::from_secs(5));
    while heard.len() < 3 {
        let n = waiting
            .next()
            .expect("no error")
            .expect("a notification in time");
        heard.push(parse_notification(n.payload()).expect("a payload the relay reads"));
    }
    let notes = Collection::new("notes").expect("valid");
    assert_eq!(
        heard,
        vec![
            (tenant(), notes, 1),
            (tenant(), todos(), 2),
            (tenant(), todos(), 3),
        ]
    );
    assert!(waiting.next().expect("no error").is_none(), "nothing more");
}

/// A database written by a newer relay, or with a schema version that means nothing, is
/// refused with a typed error when the relay opens it (never a panic).
#[test]
fn a_schema_this_relay_does_not_know_is_refused() {
    let server = server();
    let url = server.url("relay");
    drop(PostgresStorage::open(&url).expect("open"));
    server
        .query("relay", "UPDATE schema_version SET version = 99")
        .expect("psql");
    assert!(matches!(
        PostgresStorage::open(&url),
        Err(StorageError::SchemaTooNew { found: 99, .. })
    ));
    server
        .query("relay", "UPDATE schema_version SET version = -1")
        .expect("psql");
    assert!(matches!(
        PostgresStorage::open(&url),
        Err(StorageError::Corrupt {
            table: "schema_version",
            ..
        })
    ));
}
