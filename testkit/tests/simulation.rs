//! The deterministic simulation (`syncline_testkit::sim`) over many seeds. A failure prints
//! its seed; `SIM_SEED=N cargo test -p syncline-testkit --test simulation` replays it alone,
//! and `SIM_SEEDS=N` changes how many seeds run (default 1000; `cargo xtask test`, and so CI,
//! runs 10,000, as does `cargo xtask soak`). `SIM_LOG=FILTER` (e.g.
//! `syncline=debug`) prints the SDK's and the relay's logs, for replaying one seed.

use syncline_testkit::sim;

#[test]
fn devices_converge_and_lose_nothing_under_faults() {
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let count: u64 = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000);
            (0..count).collect()
        }
    };
    // Two threads: the machine has two cores, and each seed is independent. Each takes the
    // next seed not yet taken (seeds differ a lot in cost: a fixed split leaves one idle).
    let seeds = std::sync::Arc::new(seeds);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let run = || {
        let seeds = std::sync::Arc::clone(&seeds);
        let next = std::sync::Arc::clone(&next);
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut totals = sim::SimReport::default();
            while let Some(&seed) =
                seeds.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            {
                match std::panic::catch_unwind(|| sim::run(seed)) {
                    Ok(Ok(report)) => {
                        totals.writes += report.writes;
                        totals.cuts += report.cuts;
                        totals.relay_crashes += report.relay_crashes;
                        totals.restores += report.restores;
                        totals.hostile_frames += report.hostile_frames;
                        totals.device_crashes += report.device_crashes;
                        totals.frames += report.frames;
                        totals.shared_group_commits += report.shared_group_commits;
                        totals.slow_consumers += report.slow_consumers;
                        totals.grant_changes += report.grant_changes;
                        totals.filtered += report.filtered;
                        totals.profile_changes += report.profile_changes;
                        totals.subscription_changes += report.subscription_changes;
                        totals.deferred += report.deferred;
                        totals.evicted += report.evicted;
                        totals.ephemerals_sent += report.ephemerals_sent;
                        totals.ephemerals_received += report.ephemerals_received;
                        totals.resolutions += report.resolutions;
                        totals.evicted_at_restore += report.evicted_at_restore;
                        totals.restores_with_eviction += report.restores_with_eviction;
                        totals.released_at_restore += report.released_at_restore;
                        totals.lost_released += report.lost_released;
                        totals.announcements_heard += report.announcements_heard;
                        totals.announcements_lost += report.announcements_lost;
                    }
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push(format!("seed {seed}: panicked")),
                }
            }
            (failures, totals)
        })
    };
    let handles = [run(), run()];
    let mut failures = Vec::new();
    let (mut shared_groups, mut slow_consumers, mut grant_changes) = (0, 0, 0);
    let (mut profile_changes, mut subscription_changes, mut deferred) = (0, 0, 0);
    let (mut evicted, mut restores, mut hostile) = (0, 0, 0);
    let (mut ephemerals_sent, mut ephemerals_received, mut resolutions) = (0, 0, 0);
    let (mut announcements_heard, mut announcements_lost) = (0, 0);
    for handle in handles {
        let (mut f, totals) = handle.join().expect("the runner thread");
        eprintln!(
            "simulated {} writes, {} cuts, {} relay crashes, {} restores from a backup, \
             {} hostile frames, \
             {} device crashes, {} frames, \
             {} group commits shared by several devices, {} slow consumers closed, \
             {} grants narrowed, {} messages dropped by grant filtering at routing, \
             {} profiles and {} subscriptions changed, {} documents deferred, {} evicted, \
             {} ephemerals sent and {} received, {} conflicts resolved by a strategy, \
             {} documents evicted when the relay was restored, \
             {} restores after which a device evicted all it could, \
             {} evicted with the device's own changes left to the relay, {} changes lost so, \
             {} announcements of one relay's commits heard by the other and {} lost",
            totals.writes,
            totals.cuts,
            totals.relay_crashes,
            totals.restores,
            totals.hostile_frames,
            totals.device_crashes,
            totals.frames,
            totals.shared_group_commits,
            totals.slow_consumers,
            totals.grant_changes,
            totals.filtered,
            totals.profile_changes,
            totals.subscription_changes,
            totals.deferred,
            totals.evicted,
            totals.ephemerals_sent,
            totals.ephemerals_received,
            totals.resolutions,
            totals.evicted_at_restore,
            totals.restores_with_eviction,
            totals.released_at_restore,
            totals.lost_released,
            totals.announcements_heard,
            totals.announcements_lost
        );
        announcements_heard += totals.announcements_heard;
        announcements_lost += totals.announcements_lost;
        resolutions += totals.resolutions;
        ephemerals_sent += totals.ephemerals_sent;
        ephemerals_received += totals.ephemerals_received;
        evicted += totals.evicted;
        restores += totals.restores;
        hostile += totals.hostile_frames;
        profile_changes += totals.profile_changes;
        subscription_changes += totals.subscription_changes;
        deferred += totals.deferred;
        shared_groups += totals.shared_group_commits;
        slow_consumers += totals.slow_consumers;
        grant_changes += totals.grant_changes;
        failures.append(&mut f);
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (replay one with SIM_SEED=N):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    // The relay core's group commit, slow-consumer closes and grant changes happen under
    // faults, not only in their own tests (over enough seeds for each to come up).
    if seeds.len() >= 200 {
        assert!(
            shared_groups > 0,
            "no group commit carried several devices' frames"
        );
        assert!(slow_consumers > 0, "no slow consumer was closed");
        assert!(grant_changes > 0, "no connection had its grants narrowed");
        assert!(profile_changes > 0 && subscription_changes > 0);
        assert!(deferred > 0, "no document was held back");
        assert!(evicted > 0, "no document was evicted");
        assert!(restores > 0, "no relay was restored from a backup");
        assert!(hostile > 0, "no hostile client came");
        assert!(resolutions > 0, "no strategy resolved a conflict");
        assert!(
            announcements_heard > 0 && announcements_lost > 0,
            "two relays never announced their commits to each other, or never lost one"
        );
        assert!(
            ephemerals_sent > 0 && ephemerals_received > 0,
            "no presence crossed the relay ({ephemerals_sent} sent)"
        );
    }
}

/// Every source of nondeterminism (device and document ids, Automerge's change times, backoff
/// jitter, latencies and faults) comes from the seed: a seed replays bit for bit, and the
/// trace digest says so. Two different seeds give different traces.
#[test]
fn a_seed_replays_bit_for_bit() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => vec![3, 17, 42, 1001],
    };
    let mut digests = Vec::new();
    for &seed in &seeds {
        let first = sim::run(seed).expect("the run converges");
        let again = sim::run(seed).expect("the replay converges");
        assert_eq!(
            first.trace_digest, again.trace_digest,
            "seed {seed} did not replay: {first:?} vs {again:?}"
        );
        assert_eq!(first.frames, again.frames, "seed {seed}");
        assert_eq!(first.converged_at_ms, again.converged_at_ms, "seed {seed}");
        digests.push(first.trace_digest);
    }
    let mut distinct = digests.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        digests.len(),
        "different seeds, different traces: {digests:?}"
    );
}

/// The hostile client's visits draw on the `frame` fuzz target's committed corpus: it is
/// found and read.
#[test]
fn the_hostile_client_draws_on_the_fuzz_corpus() {
    assert!(
        sim::fuzz_corpus().len() >= 100,
        "{} inputs in fuzz/corpus/frame",
        sim::fuzz_corpus().len()
    );
}
