//! The deterministic simulation (issue 19, `hookline sim`): the node's
//! decisions and the real SQLite store under a seeded world of misbehaving
//! receivers, store failures and crash-restarts, every invariant checked
//! after every step (`src/sim/invariants.rs`). Here: a few seeds pass, a
//! seed replays exactly, and a deliberately broken node is caught and
//! reported with the seed that replays it.
//!
//! The sizes are the CI's (a debug build on two shared cores); the full
//! runs are `hookline sim --seed N` (100,000 messages per seed).

use hookline::sim::invariants::{DISABLED, LOST, TWICE};
use hookline::sim::{self, Report, Sabotage, SimConfig};

fn config(messages: u64) -> SimConfig {
    SimConfig { messages, ..SimConfig::default() }
}

async fn run(seed: u64, cfg: &SimConfig) -> Report {
    let report = sim::run(seed, cfg).await.expect("the simulation ran");
    println!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_seeds_keep_every_invariant_through_faults_and_crashes() {
    let mut crashes = 0;
    for seed in [1, 2, 3] {
        let r = run(seed, &config(3_000)).await;
        assert!(r.failure.is_none(), "{r}");
        assert!(r.messages > 2_900 && r.messages + r.ingest_errors == 3_000, "{r}");
        assert!(r.attempts > r.messages, "retries happened: {r}");
        let kinds = |prefix: &str| r.faults.keys().filter(|k| k.starts_with(prefix)).count();
        assert!(kinds("store: ") >= 6, "store failures of several kinds: {r}");
        assert!(kinds("net: ") >= 6, "receivers misbehaved in several ways: {r}");
        crashes += r.faults.get("crash-restart").copied().unwrap_or(0);
    }
    assert!(crashes > 0, "at least one seed crashed and restarted");
    // Without store failures and crashes nothing is ever sent again once its
    // receiver took it.
    let clean = run(4, &SimConfig { faults: false, ..config(1_500) }).await;
    assert!(clean.failure.is_none(), "{clean}");
    assert_eq!((clean.duplicates, clean.faults.keys().filter(|k| k.starts_with("store")).count()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_replays_exactly_and_another_seed_differs() {
    let cfg = config(1_500);
    let (a, b, other) = (run(11, &cfg).await, run(11, &cfg).await, run(12, &cfg).await);
    for r in [&a, &b, &other] {
        assert!(r.failure.is_none(), "{r}");
    }
    let summary =
        |r: &Report| (r.fingerprint, r.steps, r.attempts, r.messages, r.duplicates, r.faults.clone());
    assert_eq!(summary(&a), summary(&b), "the same seed gives the same run");
    assert_ne!(a.fingerprint, other.fingerprint, "another seed, another run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_sends_to_a_disabled_endpoint_is_caught_with_its_seed() {
    let cfg = SimConfig { sabotage: Some(Sabotage::SendToDisabled), ..config(1_500) };
    let r = run(5, &cfg).await;
    let failure = r.failure.as_ref().expect("the broken node was caught");
    assert_eq!(failure.violation.invariant, DISABLED, "{r}");
    assert!(r.to_string().contains("replay: hookline sim --seed 5 --messages 1500"), "{r}");
    // The failure replays: same step, same violation.
    let again = run(5, &cfg).await;
    let replayed = again.failure.expect("caught again");
    assert_eq!((replayed.step, replayed.violation), (failure.step, failure.violation.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_an_attempt_record_is_caught() {
    let cfg = SimConfig { sabotage: Some(Sabotage::ForgetRecord), faults: false, ..config(800) };
    let r = run(7, &cfg).await;
    let failure = r.failure.as_ref().expect("the lost record was caught");
    assert!([TWICE, LOST].contains(&failure.violation.invariant), "{r}");
}
