//! Real processes through the fault proxy (issue 15): SDK devices sync with a real
//! `syncline-relay` through `syncline_testkit::proxy::FaultProxy`, which delays, holds back,
//! cuts mid-frame, drops and blackholes their connections, driven by a seed, while every
//! device writes. Once the faults end, every device holds every document with every change
//! (convergence), and every write whose call returned is there (no loss).
//!
//! `FAULT_SEED=N` replays one seed; `FAULT_SEEDS=N` runs N seeds (default 2) and
//! `FAULT_SECONDS=S` keeps the faults on for S seconds each (default 4): `cargo xtask soak`
//! runs it long.

use std::time::{Duration, Instant};

use syncline::{Collection, Store, SyncClient, SyncOptions, Value};
use syncline_testkit::proxy::FaultProxy;
use syncline_testkit::relay::Relay;
use syncline_testkit::temp_dir;

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Device {
    store: Store,
    client: SyncClient,
    _dir: tempfile::TempDir,
}

impl Device {
    fn join(relay: &Relay, url: &str) -> Self {
        let dir = temp_dir();
        let options = syncline::StoreOptions {
            durability: syncline::Durability::Normal,
            ..Default::default()
        };
        let store = Store::open_with(dir.path().join("store.db"), options).expect("store");
        let token = relay
            .token(
                "alice",
                &store.device_id().to_string(),
                "todos",
                "todos",
                3600,
            )
            .expect("token");
        let mut options = SyncOptions::new(url, &[todos()]);
        options.backoff = syncline::engine::Backoff {
            min_ms: 20,
            max_ms: 300,
        };
        // A blackholed connection is given up quickly.
        options.stall_timeout = Duration::from_secs(1);
        let client = SyncClient::start(&store, options, move || Ok(token.clone())).expect("start");
        Self {
            store,
            client,
            _dir: dir,
        }
    }
}

/// Every document of `stores[0]` is in every store with the same heads, and each holds
/// `expected` documents.
fn converged(stores: &[&Store], expected: usize) -> bool {
    let lists: Vec<_> = stores
        .iter()
        .map(|s| s.list(&todos()).unwrap_or_default())
        .collect();
    lists.iter().all(|l| l.len() == expected)
        && lists[0].iter().all(|info| {
            let heads = stores[0].document(&info.id).and_then(|d| d.heads()).ok();
            stores[1..].iter().all(|s| {
                s.document(&info.id).and_then(|d| d.heads()).ok() == heads && heads.is_some()
            })
        })
}

fn run_seed(seed: u64, fault_for: Duration) {
    let data = temp_dir();
    let relay = Relay::start(data.path()).expect("relay");
    let proxy = FaultProxy::start(&relay.addr, seed).expect("proxy");
    let devices: Vec<Device> = (0..3).map(|_| Device::join(&relay, &proxy.url())).collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    // Every write whose call returned: document, key, value. A key is written by one device
    // only ("n" by the creator, "by{d}" by device d), with growing values.
    let mut written: Vec<(syncline::DocId, String, i64)> = Vec::new();
    let started = Instant::now();
    let mut n: i64 = 0;
    // Faults until the time is up and at least three connections failed (bounded: a slow
    // machine gets longer, never forever).
    let faults = |proxy: &FaultProxy| {
        let s = proxy.stats();
        s.cut + s.dropped + s.blackholed
    };
    while started.elapsed() < fault_for || (faults(&proxy) < 3 && started.elapsed() < fault_for * 8)
    {
        let d = rng.usize(0..devices.len());
        let store = &devices[d].store;
        n += 1;
        if !written.is_empty() && rng.bool() {
            // Any device edits any document it already has.
            let (id, _, _) = written[rng.usize(0..written.len())].clone();
            if let Ok(doc) = store.document(&id) {
                let key = format!("by{d}");
                doc.put(&key, n).expect("edit");
                written.push((id, key, n));
            }
        } else {
            let doc = store.create(&todos()).expect("create");
            doc.put("n", n).expect("put");
            written.push((doc.id().clone(), "n".into(), n));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(5..40)));
    }
    proxy.calm();
    let stats = proxy.stats();
    let stores: Vec<&Store> = devices.iter().map(|d| &d.store).collect();
    let mut latest: std::collections::HashMap<(syncline::DocId, String), i64> =
        std::collections::HashMap::new();
    for (id, key, value) in &written {
        let slot = latest.entry((id.clone(), key.clone())).or_insert(*value);
        *slot = (*slot).max(*value);
    }
    let expected = latest
        .keys()
        .map(|(id, _)| id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !converged(&stores, expected) {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: no convergence 60 s after the faults ended ({stats:?}; {} documents \
             expected, the devices hold {:?}; statuses {:?})",
            expected,
            stores
                .iter()
                .map(|s| s.list(&todos()).map(|l| l.len()).unwrap_or(0))
                .collect::<Vec<_>>(),
            devices
                .iter()
                .map(|d| d.client.status())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // No loss: the last value of every key written is there, on every device.
    for ((id, key), value) in &latest {
        for store in &stores {
            let got = store
                .document(id)
                .and_then(|doc| doc.get(key))
                .expect("readable");
            assert_eq!(
                got,
                Some(Value::from(*value)),
                "seed {seed}: {id}.{key} lost a write"
            );
        }
    }
    for device in &devices {
        assert!(
            device
                .store
                .pending_documents()
                .expect("pending")
                .is_empty()
                || device
                    .client
                    .wait_synced(Duration::from_secs(30), false)
                    .is_ok(),
            "seed {seed}: changes left unacknowledged"
        );
    }
    eprintln!(
        "fault proxy seed {seed}: {} writes on {expected} documents through {stats:?}",
        written.len()
    );
    assert!(
        stats.cut + stats.dropped + stats.blackholed >= 3,
        "seed {seed}: too few faults to mean anything ({stats:?})"
    );
}

#[test]
fn devices_converge_and_lose_nothing_through_a_faulty_network() {
    let fault_for = Duration::from_secs(env("FAULT_SECONDS", 4));
    let seeds: Vec<u64> = match std::env::var("FAULT_SEED") {
        Ok(seed) => vec![seed.parse().expect("FAULT_SEED is a number")],
        Err(_) => (1..=env("FAULT_SEEDS", 2)).collect(),
    };
    for seed in seeds {
        run_seed(seed, fault_for);
    }
}
