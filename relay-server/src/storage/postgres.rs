//! [`Storage`] on PostgreSQL: several relays share one database (issue 17).
//!
//! One connection per relay (`postgres`, the synchronous client over `tokio-postgres`), behind
//! a mutex like SQLite's: the hub calls the storage from its one thread. A connection that
//! closed (the server restarted, the network broke) is opened again on the next call; the call
//! that found it closed fails, and nothing it did is acknowledged. Every write is one
//! transaction. Sequence numbers come from a counter row per collection, bumped inside the
//! appending transaction: its row lock orders concurrent appends of every relay, so numbers
//! grow in commit order. Migrations are versioned like SQLite's (`schema_version`) and run
//! under a transaction-scoped advisory lock, so relays starting together apply them once.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Statement};
use syncline_protocol::messages::{CollectionSubscription, DeferReason, Profile, SyncMode};
use syncline_protocol::{Collection, DeviceId, DocId, Heads};

use crate::tenant::Tenant;

use super::codec::{
    class_code, class_from, collection_row, corrupt, heads_from_bytes, heads_to_bytes,
    new_epoch_id, now_ms, priority_from, random_key, to_i64, to_u64,
};
use super::{
    Append, DEFERRED_LISTED, Deferred, DeferredEntry, DeviceRecord, DocumentSummary, Storage,
    StorageError, StoredDocument,
};

/// How long connecting may take when the URL sets no `connect_timeout`: an unreachable
/// database fails the call (and the frame's devices retry) instead of holding the hub.
pub const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The notification channel of committed changes: each payload is `TENANT COLLECTION SEQ`
/// (the names and the number separated by spaces, which neither name may contain; written by
/// the append's `announce` statement), read back by [`parse_notification`].
pub const CHANGES_CHANNEL: &str = "syncline_changes";

/// What a [`CHANGES_CHANNEL`] payload announces; `None` for one this relay did not write.
pub fn parse_notification(payload: &str) -> Option<(Tenant, Collection, u64)> {
    let mut parts = payload.split(' ');
    let tenant = Tenant::new(parts.next()?).ok()?;
    let collection = Collection::new(parts.next()?).ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((tenant, collection, seq))
}

/// The key of the advisory lock migrations run under ("SYNR" as a number).
const MIGRATION_LOCK: i64 = 0x5359_4E52;

/// The epoch ordinal and generation of a read-only handle ([`PostgresStorage::open_read_only`]).
const READ_ONLY: i64 = -1;

/// The key of the advisory lock a relay opens its epoch under (so two relays starting at once
/// see each other: the second joins the first's generation).
const EPOCH_LOCK: i64 = 0x5359_4E52_0001;

/// The schema, one entry per version (1-based), each applied in one transaction.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE collections (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, seq BIGINT NOT NULL,
        PRIMARY KEY (tenant, collection)
    );
    CREATE TABLE documents (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc_id TEXT NOT NULL,
        seq BIGINT NOT NULL, heads BYTEA NOT NULL,
        stored_bytes BIGINT NOT NULL, chunk_count BIGINT NOT NULL,
        priority SMALLINT, changed_ms BIGINT,
        PRIMARY KEY (tenant, collection, doc_id)
    );
    CREATE INDEX documents_by_seq ON documents (tenant, collection, seq);
    CREATE TABLE chunks (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, doc_id TEXT NOT NULL,
        n BIGINT NOT NULL, data BYTEA NOT NULL,
        PRIMARY KEY (tenant, collection, doc_id, n)
    );
    CREATE TABLE device_owners (
        tenant TEXT NOT NULL, device_id BYTEA NOT NULL, owner TEXT NOT NULL,
        PRIMARY KEY (tenant, device_id)
    );
    CREATE TABLE devices (
        tenant TEXT NOT NULL, device_id BYTEA NOT NULL, owner TEXT NOT NULL,
        class SMALLINT NOT NULL, storage_budget BIGINT, download BIGINT, upload BIGINT,
        metered BOOLEAN NOT NULL, realtime BOOLEAN NOT NULL, metered_max_doc_bytes BIGINT,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL, last_sync BIGINT,
        deferred_docs BIGINT NOT NULL, deferred_bytes BIGINT NOT NULL,
        PRIMARY KEY (tenant, device_id)
    );
    CREATE TABLE device_subscriptions (
        tenant TEXT NOT NULL, device_id BYTEA NOT NULL, position INTEGER NOT NULL,
        collection TEXT NOT NULL, priority SMALLINT NOT NULL, mode SMALLINT NOT NULL,
        PRIMARY KEY (tenant, device_id, position)
    );
    CREATE TABLE device_deferred (
        tenant TEXT NOT NULL, device_id BYTEA NOT NULL, doc_id TEXT NOT NULL,
        priority SMALLINT NOT NULL, bytes BIGINT NOT NULL, reason SMALLINT NOT NULL,
        PRIMARY KEY (tenant, device_id, doc_id)
    );
    CREATE TABLE cursors (
        tenant TEXT NOT NULL, device_id BYTEA NOT NULL, collection TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (tenant, device_id, collection)
    );
    CREATE TABLE sync_states (
        tenant TEXT NOT NULL, device_id BYTEA NOT NULL, collection TEXT NOT NULL,
        doc_id TEXT NOT NULL, state BYTEA NOT NULL,
        PRIMARY KEY (tenant, device_id, collection, doc_id)
    );
    CREATE TABLE epochs (
        ordinal BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, started_ms BIGINT NOT NULL
    );
    CREATE TABLE collection_epochs (
        tenant TEXT NOT NULL, collection TEXT NOT NULL, epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (tenant, collection, epoch)
    );
    CREATE TABLE secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);
",
    r"
    ALTER TABLE epochs ADD COLUMN generation BIGINT;
    UPDATE epochs SET generation = ordinal;
    ALTER TABLE epochs ALTER COLUMN generation SET NOT NULL;
    ALTER TABLE epochs ADD COLUMN pid INTEGER, ADD COLUMN backend_start TIMESTAMPTZ;
    ALTER TABLE collection_epochs RENAME COLUMN epoch TO generation;
    ALTER TABLE collection_epochs RENAME TO collection_generations;
",
];

/// The relay's PostgreSQL storage.
pub struct PostgresStorage {
    /// What to connect to (kept to connect again).
    config: postgres::Config,
    connection: Mutex<Connection>,
    /// Whether the storage connection works and the change feed (if one follows this storage)
    /// is connected: `/readyz`.
    health: Arc<Health>,
    /// The epoch this handle opened (its id, and its ordinal in `epochs`).
    epoch: String,
    epoch_ordinal: i64,
    /// The epoch's generation: what positions are recorded under (see [`open_epoch`]).
    generation: i64,
    position_key: [u8; 32],
}

/// The storage connection, or when to try connecting again.
struct Connection {
    client: Option<Client>,
    /// The write path's statements, prepared on this connection (`None` until first used, and
    /// again after a reconnect).
    statements: Option<Statements>,
    /// After a failed connect, calls fail at once (with [`StorageError::Unavailable`]) until
    /// this instant: a database that is away costs the hub no wait per call.
    retry_at: Option<Instant>,
}

/// How long after a failed connect the storage tries again (calls meanwhile fail at once).
pub const POSTGRES_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What `/readyz` reads of a PostgreSQL storage, shared with its change feed.
#[derive(Debug)]
pub struct Health {
    storage_up: AtomicBool,
    /// Whether the change feed is connected (true while no feed follows the storage).
    feed_up: AtomicBool,
    /// The storage connection's server process id: notifications it caused are this relay's
    /// own commits, which the feed skips.
    storage_pid: AtomicI32,
}

impl Health {
    /// Records whether the change feed is connected.
    pub fn set_feed_up(&self, up: bool) {
        self.feed_up.store(up, Ordering::SeqCst);
    }

    /// Whether the storage connection worked at its last use and the change feed (if any)
    /// is connected.
    pub fn ready(&self) -> bool {
        self.storage_up.load(Ordering::SeqCst) && self.feed_up.load(Ordering::SeqCst)
    }

    /// The storage connection's server process id (0 while it has none).
    pub fn storage_pid(&self) -> i32 {
        self.storage_pid.load(Ordering::SeqCst)
    }
}

impl PostgresStorage {
    /// Connects to the database at `url` (`postgres://USER@HOST:PORT/DB`, or libpq's
    /// `key=value` form; connecting gives up after [`POSTGRES_CONNECT_TIMEOUT`] unless the URL sets
    /// `connect_timeout`), migrates it and starts this handle's epoch.
    ///
    /// # Errors
    /// [`StorageError::SchemaTooNew`], or the connection's or a statement's error.
    pub fn open(url: &str) -> Result<Self, StorageError> {
        let config = connect_config(url)?;
        let mut client = config.connect(NoTls).map_err(backend)?;
        migrate(&mut client)?;
        client
            .execute(
                "INSERT INTO secrets (name, value) VALUES ('positions', $1) \
                 ON CONFLICT (name) DO NOTHING",
                &[&random_key().as_slice()],
            )
            .map_err(backend)?;
        let position_key = read_position_key(&mut client)?;
        let epoch = new_epoch_id();
        let (epoch_ordinal, generation) = open_epoch(&mut client, &epoch)?;
        Self::over(
            config,
            client,
            (epoch, epoch_ordinal, generation),
            position_key,
        )
    }

    /// A handle for reading only (the operator's `devices` and `doc` commands): it neither
    /// migrates the schema nor opens an epoch, so looking at a database changes nothing in it;
    /// its appends and compactions fail.
    ///
    /// # Errors
    /// [`StorageError::SchemaTooNew`] or [`StorageError::Backend`] for a database a relay of
    /// this version has not migrated, or the connection's error.
    pub fn open_read_only(url: &str) -> Result<Self, StorageError> {
        let config = connect_config(url)?;
        let mut client = config.connect(NoTls).map_err(backend)?;
        let latest = i64::try_from(MIGRATIONS.len()).expect("few migrations");
        let version: i64 = match client.query_opt("SELECT version FROM schema_version", &[]) {
            Ok(row) => row.map_or(0, |r| r.get(0)),
            // No relay ever ran on it.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
            Err(e) => return Err(backend(e)),
        };
        if version > latest {
            return Err(StorageError::SchemaTooNew {
                found: version,
                supported: latest,
            });
        }
        if version < latest {
            return Err(StorageError::Backend {
                backend: "postgres",
                source: format!(
                    "schema {version}: start a relay of this version on it first (it migrates)"
                )
                .into(),
            });
        }
        let position_key = read_position_key(&mut client)?;
        let none = (String::new(), READ_ONLY, READ_ONLY);
        Self::over(config, client, none, position_key)
    }

    /// The handle over a connected `client`, in `epoch` (its id, ordinal and generation).
    fn over(
        config: postgres::Config,
        mut client: Client,
        (epoch, epoch_ordinal, generation): (String, i64, i64),
        position_key: [u8; 32],
    ) -> Result<Self, StorageError> {
        let pid = backend_pid(&mut client)?;
        Ok(Self {
            config,
            connection: Mutex::new(Connection {
                client: Some(client),
                statements: None,
                retry_at: None,
            }),
            health: Arc::new(Health {
                storage_up: AtomicBool::new(true),
                feed_up: AtomicBool::new(true),
                storage_pid: AtomicI32::new(pid),
            }),
            epoch,
            epoch_ordinal,
            generation,
            position_key,
        })
    }

    /// What `/readyz` reads, for the change feed to report into.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// The connection, opened again first if it closed. While the database is away, a call
    /// fails at once with [`StorageError::Unavailable`] and a connect is tried again every
    /// [`POSTGRES_RETRY_PAUSE`].
    fn client(&self) -> Result<MappedMutexGuard<'_, Client>, StorageError> {
        Ok(MutexGuard::map(self.connection()?, |c| {
            c.client.as_mut().expect("connected")
        }))
    }

    /// Fails for a read-only handle.
    fn writable(&self) -> Result<(), StorageError> {
        if self.epoch_ordinal == READ_ONLY {
            return Err(StorageError::Backend {
                backend: "postgres",
                source: "this handle is read-only".into(),
            });
        }
        Ok(())
    }

    /// The connection state, connected (see [`PostgresStorage::client`]).
    fn connection(&self) -> Result<MutexGuard<'_, Connection>, StorageError> {
        let mut connection = self.connection.lock();
        if connection.client.as_ref().is_none_or(Client::is_closed) {
            connection.client = None;
            connection.statements = None;
            self.health.storage_pid.store(0, Ordering::SeqCst);
            if connection.retry_at.is_some_and(|at| Instant::now() < at) {
                self.health.storage_up.store(false, Ordering::SeqCst);
                return Err(StorageError::Unavailable {
                    backend: "postgres",
                    reason: "the database was unreachable a moment ago".into(),
                });
            }
            let connected = self
                .config
                .connect(NoTls)
                .map_err(backend)
                .and_then(|mut client| {
                    // The epoch is live through this connection now (see `open_epoch`).
                    let found = if self.epoch_ordinal == READ_ONLY {
                        1
                    } else {
                        client
                            .execute(LIVE_EPOCH, &[&self.epoch_ordinal])
                            .map_err(backend)?
                    };
                    if found == 0 {
                        // Failed over to a replica that lost commits, or restored under the
                        // running relay: its positions would mislead devices.
                        tracing::error!(epoch = %self.epoch, "the database no longer holds this relay's epoch (restored or failed over while it ran): restart the relay");
                        return Err(StorageError::Unavailable {
                            backend: "postgres",
                            reason: "the database lost this relay's epoch; restart the relay"
                                .into(),
                        });
                    }
                    backend_pid(&mut client).map(|pid| (client, pid))
                });
            match connected {
                Ok((client, pid)) => {
                    connection.client = Some(client);
                    connection.retry_at = None;
                    self.health.storage_pid.store(pid, Ordering::SeqCst);
                }
                Err(e) => {
                    connection.retry_at = Some(Instant::now() + POSTGRES_RETRY_PAUSE);
                    self.health.storage_up.store(false, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        self.health.storage_up.store(true, Ordering::SeqCst);
        Ok(connection)
    }
}

/// The connection settings of `url`, with [`POSTGRES_CONNECT_TIMEOUT`] unless it sets one.
///
/// # Errors
/// [`StorageError::Backend`] for a URL that does not parse.
fn connect_config(url: &str) -> Result<postgres::Config, StorageError> {
    let mut config = postgres::Config::from_str(url).map_err(backend)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POSTGRES_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        // What an operator sees in pg_stat_activity.
        config.application_name("syncline-relay");
    }
    with_dead_peer_limits(&mut config);
    Ok(config)
}

/// Records that an epoch is live through the calling connection: its server process and
/// when that started (together they name one connection, however pids are reused).
const LIVE_EPOCH: &str = "UPDATE epochs SET pid = pg_backend_pid(), \
     backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()) \
     WHERE ordinal = $1";

/// Starts epoch `id` and returns its ordinal and its generation.
///
/// Relays sharing the database at the same time share a **generation**: a relay that opens
/// while another relay's epoch is live (its connection is in `pg_stat_activity` of this
/// database) joins that generation; one that opens the data cold (the first start, all
/// relays down, a restored copy, whose recorded connections are not this database's) starts a
/// new one. Positions are recorded per generation, so a position one live relay gave is held
/// on the others, and a restored copy still refuses the positions it lost, as with SQLite.
fn open_epoch(client: &mut Client, id: &str) -> Result<(i64, i64), StorageError> {
    let mut tx = client.transaction().map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EPOCH_LOCK])
        .map_err(backend)?;
    let live: Option<i64> = tx
        .query_one(
            "SELECT max(e.generation) FROM epochs e JOIN pg_stat_activity a \
             ON a.pid = e.pid AND a.backend_start = e.backend_start \
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .map_err(backend)?
        .get(0);
    let generation = match live {
        Some(generation) => generation,
        None => tx
            .query_one("SELECT coalesce(max(generation), 0) + 1 FROM epochs", &[])
            .map_err(backend)?
            .get(0),
    };
    let ordinal: i64 = tx
        .query_one(
            "INSERT INTO epochs (id, started_ms, generation) VALUES ($1, $2, $3) \
             RETURNING ordinal",
            &[&id, &to_i64(now_ms()), &generation],
        )
        .map_err(backend)?
        .get(0);
    tx.execute(LIVE_EPOCH, &[&ordinal]).map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok((ordinal, generation))
}

/// The statements of the write path, prepared once per connection: each is one round trip
/// for a whole group commit, whatever its size.
struct Statements {
    /// Reserves a block of sequence numbers per collection (row locks in the order given,
    /// sorted, so two relays' batches never deadlock).
    reserve: Statement,
    /// The stored sequence numbers of the batch's documents (for `base_seq`).
    current: Statement,
    /// Upserts the documents.
    documents: Statement,
    /// Inserts the chunks.
    chunks: Statement,
    /// Records each collection's reach in the generation and announces it.
    announce: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Self, StorageError> {
        let mut prepare = |sql: &str| client.prepare(sql).map_err(backend);
        Ok(Self {
            reserve: prepare(
                "INSERT INTO collections (tenant, collection, seq) \
                 SELECT $1, c, n FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS u(c, n, o) \
                 ORDER BY o \
                 ON CONFLICT (tenant, collection) DO UPDATE SET seq = collections.seq + excluded.seq \
                 RETURNING collection, seq",
            )?,
            current: prepare(
                "SELECT d.collection, d.doc_id, d.seq FROM documents d \
                 JOIN unnest($2::text[], $3::text[]) AS u(c, i) \
                 ON d.collection = u.c AND d.doc_id = u.i WHERE d.tenant = $1",
            )?,
            documents: prepare(
                "INSERT INTO documents (tenant, collection, doc_id, seq, heads, stored_bytes, \
                 chunk_count, priority, changed_ms) \
                 SELECT $1, c, i, s, h, b, 1, p, m FROM unnest($2::text[], $3::text[], \
                 $4::bigint[], $5::bytea[], $6::bigint[], $7::smallint[], $8::bigint[]) \
                 AS u(c, i, s, h, b, p, m) \
                 ON CONFLICT (tenant, collection, doc_id) DO UPDATE SET seq = excluded.seq, \
                 heads = excluded.heads, \
                 stored_bytes = documents.stored_bytes + excluded.stored_bytes, \
                 chunk_count = documents.chunk_count + 1, \
                 priority = coalesce(excluded.priority, documents.priority), \
                 changed_ms = excluded.changed_ms \
                 RETURNING collection, doc_id, chunk_count",
            )?,
            chunks: prepare(
                "INSERT INTO chunks (tenant, collection, doc_id, n, data) \
                 SELECT $1, c, i, n, x FROM unnest($2::text[], $3::text[], $4::bigint[], \
                 $5::bytea[]) AS u(c, i, n, x)",
            )?,
            announce: prepare(
                "WITH reached AS (INSERT INTO collection_generations \
                 (tenant, collection, generation, seq) \
                 SELECT $1, c, $2, s FROM unnest($3::text[], $4::bigint[]) AS u(c, s) \
                 ON CONFLICT (tenant, collection, generation) \
                 DO UPDATE SET seq = greatest(collection_generations.seq, excluded.seq)) \
                 SELECT pg_notify($5, $1 || ' ' || c || ' ' || s::text) \
                 FROM unnest($3::text[], $4::bigint[]) WITH ORDINALITY AS u(c, s, o) ORDER BY o",
            )?,
        })
    }
}

/// Appends `round` (indexes into `batch`, each document once) within `tx`: five statements
/// whatever its size. Sequence numbers are given per collection in batch order, into `seqs`.
/// Other relays learn that each collection moved when the transaction commits, never what
/// changed: they read that from the tables.
///
/// # Errors
/// [`StorageError::Conflict`] when a document's stored sequence is not its `base_seq` (the
/// caller's transaction then rolls back: nothing of the batch is stored).
fn append_round(
    tx: &mut postgres::Transaction<'_>,
    statements: &Statements,
    tenant: &str,
    batch: &[Append],
    round: &[usize],
    generation: i64,
    seqs: &mut [u64],
) -> Result<(), StorageError> {
    // Per collection (sorted: the lock order), how many numbers the round takes.
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for &i in round {
        *counts
            .entry(batch[i].doc.collection().as_str())
            .or_insert(0) += 1;
    }
    let (names, ns): (Vec<&str>, Vec<i64>) = counts.iter().map(|(c, n)| (*c, *n)).unzip();
    let mut last: HashMap<String, i64> = HashMap::new();
    for row in tx
        .query(&statements.reserve, &[&tenant, &names, &ns])
        .map_err(backend)?
    {
        last.insert(row.get(0), row.get(1));
    }
    // The documents' stored sequences, for those appended on a known state. The counters'
    // row locks are held: no other relay appends to these collections until commit.
    let checked: Vec<usize> = round
        .iter()
        .copied()
        .filter(|&i| batch[i].base_seq.is_some())
        .collect();
    if !checked.is_empty() {
        let collections: Vec<&str> = checked
            .iter()
            .map(|&i| batch[i].doc.collection().as_str())
            .collect();
        let ids: Vec<&str> = checked.iter().map(|&i| batch[i].doc.id()).collect();
        let stored: HashMap<(String, String), i64> = tx
            .query(&statements.current, &[&tenant, &collections, &ids])
            .map_err(backend)?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        let conflicts: Vec<DocId> = checked
            .iter()
            .map(|&i| &batch[i])
            .filter(|a| {
                let key = (
                    a.doc.collection().as_str().to_owned(),
                    a.doc.id().to_owned(),
                );
                let now = stored.get(&key).copied().map_or(0, to_u64);
                a.base_seq != Some(now)
            })
            .map(|a| a.doc.clone())
            .collect();
        if !conflicts.is_empty() {
            return Err(StorageError::Conflict { docs: conflicts });
        }
    }
    // Numbers in batch order within each collection: the block reserved ends at `last`.
    let mut next: HashMap<&str, i64> = counts
        .iter()
        .map(|(c, n)| (*c, last.get(*c).copied().unwrap_or(0) - n + 1))
        .collect();
    let mut collections = Vec::with_capacity(round.len());
    let mut ids = Vec::with_capacity(round.len());
    let mut numbers = Vec::with_capacity(round.len());
    let mut heads = Vec::with_capacity(round.len());
    let mut sizes = Vec::with_capacity(round.len());
    let mut priorities: Vec<Option<i16>> = Vec::with_capacity(round.len());
    let mut times = Vec::with_capacity(round.len());
    for &i in round {
        let a = &batch[i];
        let collection = a.doc.collection().as_str();
        let seq = next.get_mut(collection).expect("counted");
        seqs[i] = to_u64(*seq);
        numbers.push(*seq);
        *seq += 1;
        collections.push(collection);
        ids.push(a.doc.id());
        heads.push(heads_to_bytes(&a.heads));
        sizes.push(to_i64(a.chunk.len() as u64));
        priorities.push(a.priority.map(|p| i16::from(p.code())));
        times.push(to_i64(a.at_ms));
    }
    let counts_after: HashMap<(String, String), i64> = tx
        .query(
            &statements.documents,
            &[
                &tenant,
                &collections,
                &ids,
                &numbers,
                &heads,
                &sizes,
                &priorities,
                &times,
            ],
        )
        .map_err(backend)?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let positions: Vec<i64> = round
        .iter()
        .map(|&i| {
            let key = (
                batch[i].doc.collection().as_str().to_owned(),
                batch[i].doc.id().to_owned(),
            );
            counts_after
                .get(&key)
                .map(|count| count - 1)
                .ok_or_else(|| corrupt("documents", format!("{} was not written", batch[i].doc)))
        })
        .collect::<Result<_, _>>()?;
    let data: Vec<&[u8]> = round.iter().map(|&i| batch[i].chunk.as_slice()).collect();
    tx.execute(
        &statements.chunks,
        &[&tenant, &collections, &ids, &positions, &data],
    )
    .map_err(backend)?;
    let reached: Vec<i64> = names
        .iter()
        .map(|c| last.get(*c).copied().unwrap_or(0))
        .collect();
    tx.query(
        &statements.announce,
        &[&tenant, &generation, &names, &reached, &CHANGES_CHANNEL],
    )
    .map_err(backend)?;
    Ok(())
}

/// How long a database that stopped answering (a partition, a lost host: no error, no
/// closed connection) may hold a call before it fails: the hub serves everyone from one
/// thread.
pub const POSTGRES_DEAD_PEER: Duration = Duration::from_secs(15);

/// Bounds what a silent database costs, unless the URL sets its own: TCP keepalives and a
/// TCP user timeout of [`POSTGRES_DEAD_PEER`], and a statement timeout of twice that.
fn with_dead_peer_limits(config: &mut postgres::Config) {
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(POSTGRES_DEAD_PEER);
    }
    if config.get_keepalives_idle() == Duration::from_secs(2 * 3600) {
        // libpq's default: two hours before the first probe.
        config.keepalives_idle(POSTGRES_DEAD_PEER / 3);
        config.keepalives_interval(POSTGRES_DEAD_PEER / 6);
        config.keepalives_retries(3);
    }
    if config.get_options().is_none() {
        let ms = 2 * POSTGRES_DEAD_PEER.as_millis();
        config.options(&format!("-c statement_timeout={ms}"));
    }
}

/// The key of position receipts, stored with the data.
fn read_position_key(client: &mut Client) -> Result<[u8; 32], StorageError> {
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM secrets WHERE name = 'positions'", &[])
        .map_err(backend)?
        .get(0);
    stored
        .try_into()
        .map_err(|_| corrupt("secrets", "the position key is not 32 bytes".into()))
}

/// The server process id of `client`'s connection.
fn backend_pid(client: &mut Client) -> Result<i32, StorageError> {
    Ok(client
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(backend)?
        .get(0))
}

/// Applies the migrations the database lacks, each in its own transaction, under an advisory
/// lock: relays starting at once apply each migration once, the others wait and find it done.
fn migrate(client: &mut Client) -> Result<(), StorageError> {
    let latest = i64::try_from(MIGRATIONS.len()).expect("few migrations");
    loop {
        let mut tx = client.transaction().map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(backend)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .map_err(backend)?;
        let version: i64 = tx
            .query_opt("SELECT version FROM schema_version", &[])
            .map_err(backend)?
            .map_or(0, |r| r.get(0));
        if version > latest {
            return Err(StorageError::SchemaTooNew {
                found: version,
                supported: latest,
            });
        }
        if version == latest {
            return tx.commit().map_err(backend);
        }
        let index = usize::try_from(version)
            .map_err(|_| corrupt("schema_version", format!("version {version}")))?;
        tx.batch_execute(MIGRATIONS[index]).map_err(backend)?;
        tx.execute("DELETE FROM schema_version", &[])
            .map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(version + 1)],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
}

/// Every PostgreSQL failure becomes the backend-neutral [`StorageError`]: a full disk is
/// [`StorageError::Full`], a database that is away (a lost or refused connection, a server
/// shutting down or starting) [`StorageError::Unavailable`], the rest [`StorageError::Backend`].
pub(super) fn backend(e: postgres::Error) -> StorageError {
    let full = [SqlState::DISK_FULL, SqlState::OUT_OF_MEMORY];
    if e.code().is_some_and(|c| full.contains(c)) {
        return StorageError::Full {
            backend: "postgres",
        };
    }
    let away = [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ];
    let connection_class = e.code().is_some_and(|c| c.code().starts_with("08"));
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io || connection_class || e.code().is_some_and(|c| away.contains(c)) {
        return StorageError::Unavailable {
            backend: "postgres",
            reason: e.to_string(),
        };
    }
    // The server's own words (`db error` alone says nothing to an operator).
    let source: Box<dyn std::error::Error + Send + Sync> = match e.as_db_error() {
        Some(db) => Box::new(db.clone()),
        None => Box::new(e),
    };
    StorageError::Backend {
        backend: "postgres",
        source,
    }
}

impl Storage for PostgresStorage {
    fn append(&self, tenant: &Tenant, batch: &[Append]) -> Result<Vec<u64>, StorageError> {
        self.writable()?;
        let mut connection = self.connection()?;
        let Connection {
            client, statements, ..
        } = &mut *connection;
        let client = client.as_mut().expect("connected");
        let statements = match statements {
            Some(prepared) => &*prepared,
            None => &*statements.insert(Statements::prepare(client)?),
        };
        let mut tx = client.transaction().map_err(backend)?;
        let mut seqs = vec![0; batch.len()];
        // A document twice in one batch (the hub never sends that, other callers may): each
        // round holds each document once, in batch order.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<&DocId, usize> = HashMap::new();
        for (i, a) in batch.iter().enumerate() {
            let round = seen.entry(&a.doc).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(i);
            *round += 1;
        }
        for round in rounds {
            append_round(
                &mut tx,
                statements,
                tenant.as_str(),
                batch,
                &round,
                self.generation,
                &mut seqs,
            )?;
        }
        tx.commit().map_err(backend)?;
        Ok(seqs)
    }

    fn compact(
        &self,
        tenant: &Tenant,
        doc: &DocId,
        snapshot: &[u8],
        heads: &Heads,
    ) -> Result<(), StorageError> {
        self.writable()?;
        let tenant = tenant.as_str();
        let (collection, id) = (doc.collection().as_str(), doc.id());
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        let updated = tx
            .execute(
                "UPDATE documents SET heads = $4, stored_bytes = $5, chunk_count = 1 \
                 WHERE tenant = $1 AND collection = $2 AND doc_id = $3",
                &[
                    &tenant,
                    &collection,
                    &id,
                    &heads_to_bytes(heads),
                    &to_i64(snapshot.len() as u64),
                ],
            )
            .map_err(backend)?;
        if updated == 1 {
            tx.execute(
                "DELETE FROM chunks WHERE tenant = $1 AND collection = $2 AND doc_id = $3",
                &[&tenant, &collection, &id],
            )
            .map_err(backend)?;
            tx.execute(
                "INSERT INTO chunks (tenant, collection, doc_id, n, data) \
                 VALUES ($1, $2, $3, 0, $4)",
                &[&tenant, &collection, &id, &snapshot],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn position_key(&self) -> &[u8; 32] {
        &self.position_key
    }

    fn holds_position(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        epoch: &str,
        seq: u64,
    ) -> Result<bool, StorageError> {
        if seq == 0 {
            return Ok(true);
        }
        // One query: the epoch's generation, and what the collection reached in it and before.
        let reached: Option<i64> = self
            .client()?
            .query_opt(
                "SELECT (SELECT coalesce(max(c.seq), 0) FROM collection_generations c \
                 WHERE c.tenant = $1 AND c.collection = $2 AND c.generation <= e.generation) \
                 FROM (SELECT max(generation) AS generation FROM epochs WHERE id = $3) e \
                 WHERE e.generation IS NOT NULL",
                &[&tenant.as_str(), &collection.as_str(), &epoch],
            )
            .map_err(backend)?
            .map(|r| r.get(0));
        // An epoch this data never had: a copy restored from before it, or a made-up one.
        let Some(reached) = reached else {
            return Ok(false);
        };
        Ok(seq <= to_u64(reached))
    }

    fn load(&self, tenant: &Tenant, doc: &DocId) -> Result<Option<StoredDocument>, StorageError> {
        let tenant = tenant.as_str();
        let (collection, id) = (doc.collection().as_str(), doc.id());
        let mut client = self.client()?;
        // One snapshot: another relay's compaction may replace the chunks in between.
        let mut tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(backend)?;
        let Some(row) = tx
            .query_opt(
                "SELECT seq, heads, priority FROM documents \
                 WHERE tenant = $1 AND collection = $2 AND doc_id = $3",
                &[&tenant, &collection, &id],
            )
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let chunks: Vec<Vec<u8>> = tx
            .query(
                "SELECT data FROM chunks WHERE tenant = $1 AND collection = $2 AND doc_id = $3 \
                 ORDER BY n",
                &[&tenant, &collection, &id],
            )
            .map_err(backend)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().map_err(backend)?;
        Ok(Some(StoredDocument {
            chunks,
            heads: heads_from_bytes(row.get(1))?,
            seq: to_u64(row.get(0)),
            priority: priority_from("documents", row.get::<_, Option<i16>>(2).map(i64::from))?,
        }))
    }

    fn collection_seqs(&self) -> Result<Vec<(Tenant, Collection, u64)>, StorageError> {
        let rows = self
            .client()?
            .query(
                "SELECT tenant, collection, seq FROM collections \
                 ORDER BY tenant COLLATE \"C\", collection COLLATE \"C\"",
                &[],
            )
            .map_err(backend)?;
        rows.into_iter()
            .map(|r| collection_row(r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    fn changed_since(
        &self,
        tenant: &Tenant,
        collection: &Collection,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DocumentSummary>, StorageError> {
        let rows = self
            .client()?
            .query(
                "SELECT doc_id, seq, heads, stored_bytes, priority, changed_ms FROM documents \
                 WHERE tenant = $1 AND collection = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                &[
                    &tenant.as_str(),
                    &collection.as_str(),
                    &to_i64(after),
                    &to_i64(limit as u64),
                ],
            )
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(DocumentSummary {
                    doc: DocId::new(collection.clone(), r.get::<_, String>(0))
                        .map_err(|e| corrupt("documents", e.to_string()))?,
                    seq: to_u64(r.get(1)),
                    heads: heads_from_bytes(r.get(2))?,
                    stored_bytes: to_u64(r.get(3)),
                    priority: priority_from(
                        "documents",
                        r.get::<_, Option<i16>>(4).map(i64::from),
                    )?,
                    changed_ms: r.get::<_, Option<i64>>(5).map(to_u64),
                })
            })
            .collect()
    }

    fn bind_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        user: &str,
    ) -> Result<String, StorageError> {
        let (tenant, device) = (tenant.as_str(), device.as_bytes().as_slice());
        let mut client = self.client()?;
        // The first binding wins, also when two relays bind the device at once.
        client
            .execute(
                "INSERT INTO device_owners (tenant, device_id, owner) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant, device_id) DO NOTHING",
                &[&tenant, &device, &user],
            )
            .map_err(backend)?;
        client
            .query_opt(
                "SELECT owner FROM device_owners WHERE tenant = $1 AND device_id = $2",
                &[&tenant, &device],
            )
            .map_err(backend)?
            .map(|r| r.get(0))
            .ok_or_else(|| {
                corrupt(
                    "device_owners",
                    "the binding just written is missing".into(),
                )
            })
    }

    fn register_device(&self, tenant: &Tenant, record: &DeviceRecord) -> Result<(), StorageError> {
        let tenant = tenant.as_str();
        let device = record.device.as_bytes().as_slice();
        let p = &record.profile;
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        tx.execute(
            "INSERT INTO devices (tenant, device_id, owner, class, storage_budget, download, \
             upload, metered, realtime, first_seen, last_seen, last_sync, metered_max_doc_bytes, \
             deferred_docs, deferred_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (tenant, device_id) DO UPDATE SET class = excluded.class, \
             storage_budget = excluded.storage_budget, download = excluded.download, \
             upload = excluded.upload, metered = excluded.metered, \
             realtime = excluded.realtime, last_seen = excluded.last_seen, \
             metered_max_doc_bytes = excluded.metered_max_doc_bytes, \
             deferred_docs = excluded.deferred_docs, deferred_bytes = excluded.deferred_bytes",
            &[
                &tenant,
                &device,
                &record.user,
                &class_code(p.class),
                &p.storage_budget_bytes.map(to_i64),
                &p.download_bytes_per_s.map(to_i64),
                &p.upload_bytes_per_s.map(to_i64),
                &p.metered,
                &p.realtime,
                &to_i64(record.first_seen_ms),
                &to_i64(record.last_seen_ms),
                &record.last_sync_ms.map(to_i64),
                &p.metered_max_doc_bytes.map(to_i64),
                &to_i64(record.deferred.docs),
                &to_i64(record.deferred.bytes),
            ],
        )
        .map_err(backend)?;
        tx.execute(
            "DELETE FROM device_subscriptions WHERE tenant = $1 AND device_id = $2",
            &[&tenant, &device],
        )
        .map_err(backend)?;
        for (position, sub) in record.subscriptions.iter().enumerate() {
            tx.execute(
                "INSERT INTO device_subscriptions (tenant, device_id, position, collection, \
                 priority, mode) VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &tenant,
                    &device,
                    &i32::try_from(position).unwrap_or(i32::MAX),
                    &sub.collection.as_str(),
                    &i16::from(sub.priority.code()),
                    &i16::from(sub.mode == SyncMode::OnDemand),
                ],
            )
            .map_err(backend)?;
        }
        tx.execute(
            "DELETE FROM device_deferred WHERE tenant = $1 AND device_id = $2",
            &[&tenant, &device],
        )
        .map_err(backend)?;
        for entry in record.deferred.list.iter().take(DEFERRED_LISTED) {
            tx.execute(
                "INSERT INTO device_deferred (tenant, device_id, doc_id, priority, bytes, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &tenant,
                    &device,
                    &entry.doc.to_string(),
                    &i16::from(entry.priority.code()),
                    &to_i64(entry.bytes),
                    &i16::from(entry.reason.code()),
                ],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn touch_device(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        at_ms: u64,
        synced: bool,
    ) -> Result<(), StorageError> {
        self.client()?
            .execute(
                "UPDATE devices SET last_seen = greatest(last_seen, $3), \
                 last_sync = CASE WHEN $4 THEN $3 ELSE last_sync END \
                 WHERE tenant = $1 AND device_id = $2",
                &[
                    &tenant.as_str(),
                    &device.as_bytes().as_slice(),
                    &to_i64(at_ms),
                    &synced,
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn devices(
        &self,
        tenant: Option<&Tenant>,
    ) -> Result<Vec<(Tenant, DeviceRecord)>, StorageError> {
        let tenant = tenant.map(Tenant::as_str);
        let mut client = self.client()?;
        let rows = client
            .query(
                "SELECT tenant, device_id, owner, class, storage_budget, download, upload, \
                 metered, realtime, first_seen, last_seen, last_sync, metered_max_doc_bytes, \
                 deferred_docs, deferred_bytes FROM devices \
                 WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY tenant, last_seen DESC",
                &[&tenant],
            )
            .map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let ten: String = row.get(0);
            let dev: Vec<u8> = row.get(1);
            let device =
                DeviceId::try_from_slice(&dev).map_err(|e| corrupt("devices", e.to_string()))?;
            let subscriptions = client
                .query(
                    "SELECT collection, priority, mode FROM device_subscriptions \
                     WHERE tenant = $1 AND device_id = $2 ORDER BY position",
                    &[&ten, &dev],
                )
                .map_err(backend)?
                .iter()
                .map(|r| {
                    let bad = |what: String| corrupt("device_subscriptions", what);
                    Ok(CollectionSubscription {
                        collection: Collection::new(r.get::<_, String>(0))
                            .map_err(|e| bad(e.to_string()))?,
                        priority: priority_from(
                            "device_subscriptions",
                            Some(i64::from(r.get::<_, i16>(1))),
                        )?
                        .ok_or_else(|| bad("no priority".into()))?,
                        mode: if r.get::<_, i16>(2) == 1 {
                            SyncMode::OnDemand
                        } else {
                            SyncMode::Eager
                        },
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            let list = client
                .query(
                    "SELECT doc_id, priority, bytes, reason FROM device_deferred \
                     WHERE tenant = $1 AND device_id = $2 ORDER BY priority DESC, doc_id",
                    &[&ten, &dev],
                )
                .map_err(backend)?
                .iter()
                .map(|r| {
                    let bad = |what: String| corrupt("device_deferred", what);
                    let reason: i16 = r.get(3);
                    Ok(DeferredEntry {
                        doc: r
                            .get::<_, String>(0)
                            .parse()
                            .map_err(|e: syncline_protocol::IdError| bad(e.to_string()))?,
                        priority: priority_from(
                            "device_deferred",
                            Some(i64::from(r.get::<_, i16>(1))),
                        )?
                        .ok_or_else(|| bad("no priority".into()))?,
                        bytes: to_u64(r.get(2)),
                        reason: u8::try_from(reason)
                            .ok()
                            .and_then(DeferReason::from_code)
                            .ok_or_else(|| bad(format!("reason {reason}")))?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()?;
            out.push((
                Tenant::new(&ten).map_err(|e| corrupt("devices", e.to_string()))?,
                DeviceRecord {
                    device,
                    user: row.get(2),
                    profile: Profile {
                        class: class_from(i64::from(row.get::<_, i16>(3)))?,
                        storage_budget_bytes: row.get::<_, Option<i64>>(4).map(to_u64),
                        download_bytes_per_s: row.get::<_, Option<i64>>(5).map(to_u64),
                        upload_bytes_per_s: row.get::<_, Option<i64>>(6).map(to_u64),
                        metered: row.get(7),
                        realtime: row.get(8),
                        metered_max_doc_bytes: row.get::<_, Option<i64>>(12).map(to_u64),
                    },
                    subscriptions,
                    deferred: Deferred {
                        docs: to_u64(row.get(13)),
                        bytes: to_u64(row.get(14)),
                        list,
                    },
                    first_seen_ms: to_u64(row.get(9)),
                    last_seen_ms: to_u64(row.get(10)),
                    last_sync_ms: row.get::<_, Option<i64>>(11).map(to_u64),
                },
            ));
        }
        Ok(out)
    }

    fn set_cursor(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        collection: &Collection,
        seq: u64,
    ) -> Result<(), StorageError> {
        self.client()?
            .execute(
                "INSERT INTO cursors (tenant, device_id, collection, seq) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant, device_id, collection) DO UPDATE SET seq = excluded.seq",
                &[
                    &tenant.as_str(),
                    &device.as_bytes().as_slice(),
                    &collection.as_str(),
                    &to_i64(seq),
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn cursors(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
    ) -> Result<Vec<(Collection, u64)>, StorageError> {
        self.client()?
            .query(
                "SELECT collection, seq FROM cursors WHERE tenant = $1 AND device_id = $2 \
                 ORDER BY collection",
                &[&tenant.as_str(), &device.as_bytes().as_slice()],
            )
            .map_err(backend)?
            .iter()
            .map(|r| {
                Ok((
                    Collection::new(r.get::<_, String>(0))
                        .map_err(|e| corrupt("cursors", e.to_string()))?,
                    to_u64(r.get(1)),
                ))
            })
            .collect()
    }

    fn save_sync_states(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        states: &[(DocId, Vec<u8>)],
    ) -> Result<(), StorageError> {
        if states.is_empty() {
            return Ok(());
        }
        let (tenant, device) = (tenant.as_str(), device.as_bytes().as_slice());
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(backend)?;
        let statement = tx
            .prepare(
                "INSERT INTO sync_states (tenant, device_id, collection, doc_id, state) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant, device_id, collection, doc_id) \
                 DO UPDATE SET state = excluded.state",
            )
            .map_err(backend)?;
        // In one order for every relay: a device saved by two relays at once (an old
        // connection not closed yet) does not deadlock them.
        let mut sorted: Vec<&(DocId, Vec<u8>)> = states.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (doc, state) in sorted {
            tx.execute(
                &statement,
                &[
                    &tenant,
                    &device,
                    &doc.collection().as_str(),
                    &doc.id(),
                    state,
                ],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    fn load_sync_state(
        &self,
        tenant: &Tenant,
        device: &DeviceId,
        doc: &DocId,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT state FROM sync_states WHERE tenant = $1 AND device_id = $2 \
                 AND collection = $3 AND doc_id = $4",
                &[
                    &tenant.as_str(),
                    &device.as_bytes().as_slice(),
                    &doc.collection().as_str(),
                    &doc.id(),
                ],
            )
            .map_err(backend)?
            .map(|r| r.get(0)))
    }
}
