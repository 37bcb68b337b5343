//! Crash safety of the SDK store: a writer process is killed with SIGKILL at random moments;
//! every write whose call had returned (and been reported) must be there afterwards, and the
//! file must open cleanly every time.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use syncline::{DocId, Store};
use syncline_testkit::Child;

const CYCLES: usize = 60;
const THREADS: usize = 3;

#[test]
fn writes_that_returned_survive_sigkill() {
    let dir = syncline_testkit::temp_dir();
    let path = dir.path().join("crash.db");
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = fastrand::Rng::with_seed(seed);
    // Highest write reported per document, across all cycles.
    let mut acknowledged: HashMap<String, i64> = HashMap::new();
    for cycle in 0..CYCLES {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash-writer"));
        cmd.arg(&path).arg(THREADS.to_string());
        let mut child = Child::spawn(cmd).expect("spawn crash-writer");
        // Kill after a random number of reported writes (0 = possibly during start-up).
        let kill_after = rng.usize(0..200);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = 0;
        while seen < kill_after && Instant::now() < deadline {
            let Some(line) = child.next_line().expect("read child output") else {
                panic!("cycle {cycle}: crash-writer exited early (seed {seed})");
            };
            let mut parts = line.split(' ');
            let (Some("ok"), Some(doc), Some(n)) = (parts.next(), parts.next(), parts.next())
            else {
                panic!("unexpected output {line:?}");
            };
            let n: i64 = n.parse().expect("number");
            let entry = acknowledged.entry(doc.to_owned()).or_default();
            *entry = (*entry).max(n);
            seen += 1;
        }
        child.kill().expect("kill");
        // Lines the child printed before dying but we have not read are acknowledged too,
        // but not needed: checking what we read is the contract.
        drop(child);

        let store = Store::open(&path)
            .unwrap_or_else(|e| panic!("cycle {cycle}: store failed to open after SIGKILL: {e}"));
        for (doc, &n) in &acknowledged {
            let id: DocId = doc.parse().expect("doc id");
            let got = store
                .document(&id)
                .and_then(|d| d.get_i64("n"))
                .expect("read");
            assert!(
                got.unwrap_or(0) >= n,
                "cycle {cycle} (seed {seed}): {doc} has n={got:?} but write {n} had returned"
            );
            let (_, t) = id.id().split_once('t').expect("crash/t<N>");
            let shared = store
                .document(&"crash/shared".parse().expect("id"))
                .expect("shared");
            assert_eq!(
                shared.get_i64(format!("t{t}-{n}").as_str()).expect("read"),
                Some(n),
                "cycle {cycle}: shared write t{t}-{n} lost"
            );
        }
    }
    assert!(
        acknowledged.values().sum::<i64>() > 0,
        "the writer never wrote anything"
    );
}
