//! The deterministic simulation (`syncline_testkit::sim`) over many seeds. A failure prints
//! its seed; `SIM_SEED=N cargo test -p syncline-testkit --test simulation` replays it alone,
//! and `SIM_SEEDS=N` changes how many seeds run (default 1000).

use syncline_testkit::sim;

#[test]
fn devices_converge_and_lose_nothing_under_faults() {
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
    // Two threads: the machine has two cores, and each seed is independent.
    let (first, second): (Vec<u64>, Vec<u64>) = seeds.iter().partition(|s| *s % 2 == 0);
    let run = |seeds: Vec<u64>| {
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut totals = sim::SimReport::default();
            for seed in seeds {
                match std::panic::catch_unwind(|| sim::run(seed)) {
                    Ok(Ok(report)) => {
                        totals.writes += report.writes;
                        totals.cuts += report.cuts;
                        totals.relay_crashes += report.relay_crashes;
                        totals.device_crashes += report.device_crashes;
                        totals.frames += report.frames;
                    }
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push(format!("seed {seed}: panicked")),
                }
            }
            (failures, totals)
        })
    };
    let handles = [run(first), run(second)];
    let mut failures = Vec::new();
    for handle in handles {
        let (mut f, totals) = handle.join().expect("the runner thread");
        eprintln!(
            "simulated {} writes, {} cuts, {} relay crashes, {} device crashes, {} frames",
            totals.writes, totals.cuts, totals.relay_crashes, totals.device_crashes, totals.frames
        );
        failures.append(&mut f);
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed (replay one with SIM_SEED=N):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}
