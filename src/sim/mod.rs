//! Deterministic simulation: the dispatcher's decisions and the real store,
//! driven by a seed, against simulated receivers, a simulated clock and a
//! store that fails on purpose; invariants checked after every step.
//!
//! The real [`crate::dispatch::Dispatcher`] runs tokio tasks and HTTP, which
//! cannot be replayed. The simulation is a *node* made of the same parts,
//! run by a discrete-event loop on one task: the dispatcher's lanes
//! ([`Lanes`]), its attempt records ([`record::record_for`]), the store's
//! claims, releases, records and ingest (the real [`SqliteStore`], on a file,
//! behind [`faults::FaultyStore`]) and the [`ManualClock`], which moves only
//! to the next event. Every random choice (message mix, receivers'
//! answers, faults, ids, jitter) comes from generators seeded by the seed,
//! and every store call is awaited in a fixed order (the calls of one
//! instant are started together, in order, so the SQLite writer can commit
//! them as one batch), so a seed replays exactly: `hookline sim --seed N`.
//!
//! One step is one instant of simulated time: the attempts that finish
//! then are recorded (and what the records changed is acted on as the
//! dispatcher does), messages arrive, the operator acts (disables,
//! enables and deletes endpoints, skips blocked keys), the node may crash
//! (in-flight attempts are lost, its memory is dropped, the store is
//! closed and reopened from its file; half the time it releases its old
//! leases as `hookline serve` does, otherwise they expire), and the
//! scheduler claims what is due. [`invariants`] says what is checked.

mod faults;
pub mod invariants;
mod world;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::faults::FaultyStore;
use self::invariants::{Model, Violation};
use self::world::Profile;
use crate::clock::{Clock, ManualClock};
use crate::dispatch::DispatchConfig;
use crate::dispatch::lanes::{Admission, Lanes, QueuedAttempt};
use crate::dispatch::record::{self, Draws, Finished};
use crate::dispatch::sender::Sent;
use crate::domain::delivery::DeliveryState;
use crate::domain::flow::Signal;
use crate::domain::id;
use crate::domain::model::{App, DeliveryStatus, Endpoint, EndpointPatch, Message, Trigger};
use crate::domain::ordering::{FIFO_KEY, OnFailure};
use crate::domain::retry::{RetryPolicy, SuccessRule};
use crate::domain::time::Timestamp;
use crate::store::sqlite::SqliteStore;
use crate::store::{
    CreateMessage, Cursor, DeliveryFilter, DispatchStore, MessageFilter, MessageStore, Order, OrderingStore,
    PageRequest, StoreResult, TenantStore,
};

/// `hookline sim`: run seeds, print a line per seed, fail if any failed.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// The (first) seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How many seeds to run, from `--seed` on.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Messages per seed.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Inject no store failures and no crashes (the receivers still
    /// misbehave as their profiles say).
    #[arg(long)]
    pub no_faults: bool,
}

pub async fn command(args: SimArgs) -> anyhow::Result<()> {
    let cfg = SimConfig { messages: args.messages, faults: !args.no_faults, sabotage: None };
    let mut failed = Vec::new();
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let report = run(seed, &cfg).await?;
        println!("{report}");
        if report.failure.is_some() {
            failed.push(seed);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "seed(s) {failed:?} failed; replay one with `hookline sim --seed <seed> --messages {}`",
            args.messages
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Messages ingested (the run then goes on until nothing is due).
    pub messages: u64,
    /// Store failures and crash-restarts.
    pub faults: bool,
    /// A deliberately broken node, to show that the checks catch it.
    pub sabotage: Option<Sabotage>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { messages: 100_000, faults: true, sabotage: None }
    }
}

/// Ways to break the node on purpose (tests of the checker only).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Right after the operator disables an endpoint, send one of its
    /// deliveries anyway.
    SendToDisabled,
    /// Never write the record of the first successful attempt, yet carry
    /// on as if it had been.
    ForgetRecord,
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    /// Messages the run was to ingest (`--messages`).
    pub requested: u64,
    /// Instants of simulated time processed.
    pub steps: u64,
    /// Messages acknowledged (ingest returned Ok).
    pub messages: u64,
    /// Ingests that returned an error (some were written all the same).
    pub ingest_errors: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// Attempts of deliveries their receiver had already taken, which the
    /// store could not know of (a crash cut the attempt off, its record
    /// was lost): at least once.
    pub duplicates: u64,
    /// Attempts sent to an endpoint a record disabled while its reply was
    /// lost: the node could not know.
    pub unannounced: u64,
    /// Faults injected and trouble the receivers made, by kind.
    pub faults: BTreeMap<String, u64>,
    /// FNV-1a of the ordered list of attempt starts (time, message,
    /// endpoint): equal for equal runs.
    pub fingerprint: u64,
    pub simulated: Duration,
    pub elapsed: Duration,
    pub failure: Option<Failure>,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub step: u64,
    /// Simulated time since the start.
    pub at: Duration,
    pub violation: Violation,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} — {} steps, {} messages ({} ingest errors), {} deliveries, {} attempts, {} duplicates, {} unannounced, fingerprint {:016x}, {:.0} s simulated in {:.1} s",
            self.seed,
            if self.failure.is_some() { "FAILED" } else { "ok" },
            self.steps,
            self.messages,
            self.ingest_errors,
            self.deliveries,
            self.attempts,
            self.duplicates,
            self.unannounced,
            self.fingerprint,
            self.simulated.as_secs_f64(),
            self.elapsed.as_secs_f64(),
        )?;
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        write!(f, "  faults: {}", faults.join(", "))?;
        if let Some(fail) = &self.failure {
            write!(
                f,
                "\n  violated at step {} ({:.3} s): {}: {}\n  replay: hookline sim --seed {} --messages {}",
                fail.step,
                fail.at.as_secs_f64(),
                fail.violation.invariant,
                fail.violation.detail,
                self.seed,
                self.requested,
            )?;
        }
        Ok(())
    }
}

/// Run one seed to the end (or to its first violation).
pub async fn run(seed: u64, cfg: &SimConfig) -> anyhow::Result<Report> {
    let started = Instant::now();
    let dir = scratch_dir()?;
    let mut sim = Sim::new(seed, cfg.clone(), dir.path()).await?;
    let outcome = sim.run().await;
    let failure = match outcome {
        Ok(()) => None,
        Err(Stop::Broken(violation)) => Some(Failure { step: sim.step, at: sim.elapsed(), violation }),
        Err(Stop::Error(e)) => return Err(e.context(format!("seed {seed}, step {}", sim.step))),
    };
    if std::env::var_os("HOOKLINE_SIM_CALLS").is_some() {
        eprintln!("store calls: {:?}", sim.store.calls());
    }
    let mut faults = sim.store.injected();
    for (k, n) in &sim.trouble {
        *faults.entry(k.clone()).or_default() += n;
    }
    Ok(Report {
        seed,
        requested: cfg.messages,
        steps: sim.step,
        messages: sim.acked,
        ingest_errors: sim.ingest_errors,
        deliveries: sim.model.deliveries().len() as u64,
        attempts: sim.attempts,
        duplicates: sim.model.duplicates,
        unannounced: sim.unannounced,
        faults,
        fingerprint: sim.fingerprint,
        simulated: sim.elapsed(),
        elapsed: started.elapsed(),
        failure,
    })
}

/// The database goes to memory-backed storage when there is some: the
/// simulation checks what is committed, not how fast a disk syncs.
fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    Ok(dir?)
}

enum Stop {
    Broken(Violation),
    Error(anyhow::Error),
}

impl From<Violation> for Stop {
    fn from(v: Violation) -> Self {
        Stop::Broken(v)
    }
}

impl From<crate::store::StoreError> for Stop {
    fn from(e: crate::store::StoreError) -> Self {
        Stop::Error(e.into())
    }
}

type Step<T = ()> = Result<T, Stop>;

const T0: i64 = 1_700_000_000_000;
/// The grid of simulated time: messages arrive every tick (0 to 20 at a
/// time: 200 a second), answers take whole ticks, and the scheduler looks
/// at tick boundaries (never earlier than asked), so many calls share an
/// instant and the SQLite writer commits them together.
const TICK: Duration = Duration::from_millis(world::TICK_MS);
const MESSAGES_PER_TICK: u64 = 20;
const OPERATOR_EVERY: Duration = Duration::from_secs(5);
/// Scheduler: after a failed claim, and the safety poll after any other
/// store failure (the dispatcher's `ERROR_BACKOFF` and `SAFETY_POLL`).
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
const SAFETY_POLL: Duration = Duration::from_secs(5);
/// Compare a sample of deliveries with the store this often (steps).
const RECONCILE_EVERY: u64 = 2_000;
/// Chance that a store call the node makes fails (half before, half after).
const STORE_FAULT_RATE: f64 = 0.01;

/// One simulated endpoint: how it is configured and how it answers.
struct Spec {
    profile: Profile,
    types: &'static [&'static str],
    throttle: Option<u16>,
    max_in_flight: Option<u16>,
    fifo: bool,
    block: bool,
    /// Retry delays in seconds (`None`: the default, exponential over 27 h).
    schedule: Option<&'static [u64]>,
    timeout_secs: u64,
}

fn spec(name: &'static str, types: &'static [&'static str]) -> Spec {
    Spec {
        profile: Profile { name, ..Default::default() },
        types,
        throttle: None,
        max_in_flight: None,
        fifo: false,
        block: false,
        schedule: Some(&[1, 5]),
        timeout_secs: 5,
    }
}

/// The world's endpoints. Event types `e0`..`e5` are common, `e6` rare
/// (the FIFO endpoints', which take one message at a time).
fn world() -> Vec<Spec> {
    let with = |mut s: Spec, f: &dyn Fn(&mut Spec)| {
        f(&mut s);
        s
    };
    vec![
        with(spec("healthy", &["e0"]), &|s| s.schedule = None),
        with(spec("throttled", &["e1"]), &|s| {
            s.throttle = Some(20);
            s.profile.error = 0.02;
        }),
        with(spec("flaky", &["e2"]), &|s| {
            s.profile.error = 0.3;
            s.schedule = Some(&[1, 2, 5]);
        }),
        with(spec("timeouts", &["e3"]), &|s| {
            s.profile.timeout = 0.15;
            s.timeout_secs = 2;
            s.schedule = Some(&[1, 3]);
        }),
        with(spec("resets", &["e4"]), &|s| {
            s.profile.reset = 0.15;
            s.schedule = Some(&[1, 1, 1]);
        }),
        with(spec("slow", &["e5"]), &|s| {
            s.profile.slow = 0.4;
            s.max_in_flight = Some(4);
            s.schedule = Some(&[2, 2]);
        }),
        with(spec("pausing", &["e5"]), &|s| {
            s.profile.retry_after = 0.03;
            s.profile.congested = 0.05;
            s.throttle = Some(50);
            s.schedule = Some(&[1, 2, 4]);
        }),
        with(spec("fifo-skip", &["e6"]), &|s| {
            s.fifo = true;
            s.profile.error = 0.05;
            s.schedule = Some(&[1, 1]);
        }),
        with(spec("fifo-block", &["e6"]), &|s| {
            s.fifo = true;
            s.block = true;
            s.profile.error = 0.05;
            s.schedule = Some(&[1]);
        }),
        with(spec("keyed-block", &["e3"]), &|s| {
            s.block = true;
            s.profile.error = 0.1;
            s.schedule = Some(&[1, 2]);
        }),
        with(spec("dying", &["e4"]), &|s| {
            s.profile.error = 0.6;
            s.profile.gone = 0.002;
            s.profile.abort = 0.01;
            s.schedule = Some(&[1, 2]);
        }),
        spec("churn", &["e0"]),
        spec("doomed", &["e1"]),
    ]
}

/// The endpoint the operator deletes half way through.
const DOOMED: u16 = 12;
const KEYS: u32 = 40;

enum Event {
    Ingest,
    Done { epoch: u64, flight: u64 },
    Operator,
    Crash,
}

/// What a node keeps in memory: lost in a crash.
struct Node {
    lanes: Lanes,
    flights: BTreeMap<u64, Flight>,
    epoch: u64,
    /// What lanes let go as their cap shrank (`Lanes::started`), handed
    /// back after the step, as the dispatcher's `release_soon` does.
    shed: Vec<QueuedAttempt>,
}

struct Flight {
    queued: QueuedAttempt,
    delivery: u32,
    started: Timestamp,
    sent: Sent,
    accepted: bool,
}

struct SimEndpoint {
    endpoint: Arc<Endpoint>,
    profile: Profile,
}

struct Sim {
    cfg: SimConfig,
    dispatch: DispatchConfig,
    rng: StdRng,
    ids: id::Sequence,
    clock: ManualClock,
    dir: std::path::PathBuf,
    store: FaultyStore,
    app_id: String,
    endpoints: Vec<SimEndpoint>,
    endpoint_index: HashMap<String, u16>,
    messages: Vec<Arc<Message>>,
    message_index: HashMap<String, u32>,
    model: Model,
    node: Node,
    queue: BinaryHeap<Reverse<(i64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    planned_claim: Option<Timestamp>,
    step: u64,
    submitted: u64,
    acked: u64,
    ingest_errors: u64,
    attempts: u64,
    unannounced: u64,
    flight_no: u64,
    trouble: BTreeMap<String, u64>,
    fingerprint: u64,
    forgot_a_record: bool,
    /// Endpoints a record disabled while its reply was lost.
    unannounced_endpoints: BTreeSet<u16>,
}

impl Sim {
    async fn new(seed: u64, cfg: SimConfig, dir: &Path) -> anyhow::Result<Sim> {
        let store = Arc::new(SqliteStore::open(dir)?);
        let rate = if cfg.faults { STORE_FAULT_RATE } else { 0.0 };
        let faulty = FaultyStore::new(Arc::clone(&store), seed ^ 0x5eed_fa17, rate);
        let dispatch = DispatchConfig {
            node_id: "sim-node".into(),
            endpoint_concurrency: 8,
            endpoint_queue: 32,
            claim_batch: 128,
            ..DispatchConfig::default()
        };
        let mut sim = Sim {
            cfg,
            dispatch,
            rng: StdRng::seed_from_u64(seed),
            ids: id::Sequence::default(),
            clock: ManualClock::new(Timestamp::from_millis(T0)),
            dir: dir.to_owned(),
            store: faulty,
            app_id: String::new(),
            endpoints: Vec::new(),
            endpoint_index: HashMap::new(),
            messages: Vec::new(),
            message_index: HashMap::new(),
            model: Model::default(),
            node: Node::new(&DispatchConfig::default(), 0),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            planned_claim: None,
            step: 0,
            submitted: 0,
            acked: 0,
            ingest_errors: 0,
            attempts: 0,
            unannounced: 0,
            flight_no: 0,
            trouble: BTreeMap::new(),
            fingerprint: FNV_OFFSET,
            forgot_a_record: false,
            unannounced_endpoints: BTreeSet::new(),
        };
        sim.node = Node::new(&sim.dispatch, 0);
        sim.populate(&store).await?;
        Ok(sim)
    }

    async fn populate(&mut self, store: &SqliteStore) -> anyhow::Result<()> {
        let now = self.clock.now();
        let app = App {
            id: self.next_id(id::APP),
            uid: None,
            name: "simulated".into(),
            metadata: Default::default(),
            throttle_rate: None,
            created_at: now,
            updated_at: now,
        };
        store.insert_app(&app).await?;
        self.app_id = app.id;
        for s in world() {
            let secs = |list: &[u64]| list.iter().map(|s| Duration::from_secs(*s)).collect();
            let retry_policy = s.schedule.map(|list| RetryPolicy {
                schedule: secs(list),
                success: SuccessRule::Any2xx,
                timeout: Duration::from_secs(s.timeout_secs),
            });
            let endpoint = Endpoint {
                id: self.next_id(id::ENDPOINT),
                app_id: self.app_id.clone(),
                uid: Some(s.profile.name.to_owned()),
                url: format!("https://{}.example/hook", s.profile.name),
                description: String::new(),
                disabled: false,
                event_types: Some(s.types.iter().map(|t| t.to_string()).collect()),
                channels: None,
                metadata: Default::default(),
                headers: Default::default(),
                throttle_rate: s.throttle,
                max_in_flight: s.max_in_flight,
                fifo: s.fifo,
                ordering_on_failure: if s.block { OnFailure::Block } else { OnFailure::Skip },
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                old_secrets: Vec::new(),
                retry_policy,
                failing_since: None,
                created_at: now,
                updated_at: now,
                disabled_at: None,
            };
            store.insert_endpoint(&endpoint).await?;
            let index = self.model.add_endpoint(s.throttle, s.block);
            self.endpoint_index.insert(endpoint.id.clone(), index);
            self.endpoints.push(SimEndpoint { endpoint: Arc::new(endpoint), profile: s.profile });
        }
        self.schedule(now, Event::Ingest);
        self.schedule(now.plus(OPERATOR_EVERY), Event::Operator);
        if self.cfg.faults {
            let first = self.crash_gap();
            self.schedule(now.plus(first), Event::Crash);
        }
        Ok(())
    }

    fn next_id(&mut self, prefix: &str) -> String {
        let now = self.clock.now();
        let random = self.rng.random();
        self.ids.next_id(prefix, now, random)
    }

    /// The time to the next crash: a fifth to three fifths of the time
    /// ingest takes (between 5 s and 4 min), so short runs crash under
    /// load too.
    fn crash_gap(&mut self) -> Duration {
        let ingest_secs = self.cfg.messages * 2 / (MESSAGES_PER_TICK * 1000 / world::TICK_MS);
        let (low, high) = ((ingest_secs / 5).clamp(5, 240), (ingest_secs * 3 / 5).clamp(5, 240));
        Duration::from_secs(self.rng.random_range(low..=high))
    }

    fn elapsed(&self) -> Duration {
        Duration::from_millis((self.clock.now().as_millis() - T0).max(0) as u64)
    }

    fn schedule(&mut self, at: Timestamp, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at.as_millis(), self.seq)));
        self.events.insert(self.seq, event);
    }

    /// The scheduler should look no later than `at`.
    fn hint(&mut self, at: Timestamp) {
        let tick = world::TICK_MS as i64;
        let at = at.max(self.clock.now()).as_millis();
        let at = Timestamp::from_millis((at + tick - 1).div_euclid(tick) * tick);
        self.planned_claim = Some(self.planned_claim.map_or(at, |p| p.min(at)));
    }

    fn ingesting(&self) -> bool {
        self.submitted < self.cfg.messages
    }

    async fn run(&mut self) -> Step {
        let mut quiet_rounds = 0;
        loop {
            let next_event = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_claim = self.planned_claim.map(|t| t.as_millis());
            let next = match (next_event, next_claim) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => {
                        // Nothing is due: the operator skips what is still
                        // blocked; once nothing is, the run is over.
                        quiet_rounds += 1;
                        if quiet_rounds > 1_000 {
                            return Err(Stop::Error(anyhow::anyhow!("blocked keys never cleared")));
                        }
                        if self.skip_blocked().await? == 0 {
                            return self.reconcile_all().await;
                        }
                        continue;
                    }
                },
            };
            self.clock.set(Timestamp::from_millis(next));
            self.step += 1;
            let (mut done, mut ingest, mut operator, mut crash) = (Vec::new(), false, false, false);
            while let Some(Reverse((t, seq))) = self.queue.peek().copied() {
                if t != next {
                    break;
                }
                self.queue.pop();
                match self.events.remove(&seq) {
                    Some(Event::Done { epoch, flight }) if epoch == self.node.epoch => done.push(flight),
                    Some(Event::Done { .. }) | None => {} // lost in a crash
                    Some(Event::Ingest) => ingest = true,
                    Some(Event::Operator) => operator = true,
                    Some(Event::Crash) => crash = true,
                }
            }
            if !done.is_empty() {
                self.complete(done).await?;
            }
            if ingest {
                self.ingest().await?;
            }
            if operator {
                self.operator().await?;
            }
            let shed = std::mem::take(&mut self.node.shed);
            if !shed.is_empty() {
                self.give_back(shed).await;
            }
            if crash {
                self.crash().await?;
            }
            if self.planned_claim.is_some_and(|t| t.as_millis() <= next) {
                self.claim().await?;
            }
            self.model.check_step(self.node.flights.len())?;
            if self.step.is_multiple_of(RECONCILE_EVERY) {
                self.reconcile_sample().await?;
            }
        }
    }

    // --- the node: what the dispatcher does ---

    /// Admit attempts to the lanes; start those that may run, hand back
    /// those refused (`Dispatcher::offer`).
    async fn offer(&mut self, tasks: Vec<crate::store::DeliveryTask>) -> Step {
        let mut busy = Vec::new();
        for task in tasks {
            match self.node.lanes.admit(QueuedAttempt { task, trigger: Trigger::Scheduled }, false) {
                Admission::Run(attempt) => self.start(attempt)?,
                Admission::Busy(attempt) => busy.push(attempt),
                Admission::Queued | Admission::AlreadyHeld => {}
            }
        }
        self.give_back(busy).await;
        Ok(())
    }

    async fn give_back(&mut self, attempts: Vec<QueuedAttempt>) {
        let keys: Vec<_> =
            attempts.iter().filter(|a| a.trigger == Trigger::Scheduled).map(|a| a.task.key()).collect();
        if keys.is_empty() {
            return;
        }
        let now = self.clock.now();
        match self.store.release(&keys, now).await {
            // As the dispatcher: a look only for lanes with room (one that frees up hints).
            Ok(()) if self.node.lanes.all_full(keys.iter().map(|k| k.endpoint_id.as_str())) => {}
            Ok(()) => self.hint(now),
            Err(_) => self.hint(now.plus(SAFETY_POLL)),
        }
    }

    fn start(&mut self, queued: QueuedAttempt) -> Step {
        let now = self.clock.now();
        let (msg, ep) = self.indices(&queued.task.message.id, &queued.task.endpoint.id)?;
        let delivery = self.model.delivery_id(msg, ep).ok_or_else(|| {
            invariants_violation(format!(
                "message #{msg} to endpoint #{ep} sent, but it was never a delivery"
            ))
        })?;
        let shed = self.node.lanes.started(&queued.task.endpoint.id, now.as_secs());
        self.node.shed.extend(shed);
        let policy = record::policy(&queued.task, &self.dispatch);
        let answer = self.endpoints[usize::from(ep)].profile.answer(&mut self.rng, policy.timeout);
        let accepted = answer.sent.status.is_some_and(|s| policy.success.accepts(s));
        self.flight_no += 1;
        let flight = self.flight_no;
        if self.model.is_disabled(ep) && !self.announced(ep) {
            self.unannounced += 1;
            self.model.start_untracked(flight, delivery);
        } else {
            self.model.start(flight, delivery, now, accepted)?;
        }
        if let Some(kind) = answer.trouble {
            *self.trouble.entry(kind.to_owned()).or_default() += 1;
        }
        self.attempts += 1;
        self.fingerprint = fnv(self.fingerprint, &[now.as_millis() as u64, u64::from(msg), u64::from(ep)]);
        let epoch = self.node.epoch;
        self.node
            .flights
            .insert(flight, Flight { queued, delivery, started: now, sent: answer.sent, accepted });
        self.schedule(now.plus(answer.took), Event::Done { epoch, flight });
        Ok(())
    }

    fn indices(&self, msg_id: &str, endpoint_id: &str) -> Step<(u32, u16)> {
        match (self.message_index.get(msg_id), self.endpoint_index.get(endpoint_id)) {
            (Some(m), Some(e)) => Ok((*m, *e)),
            _ => Err(invariants_violation(format!(
                "{msg_id} to {endpoint_id} sent, but no such message was acknowledged"
            ))
            .into()),
        }
    }

    /// Attempts that finished now: record them all (one batch for the
    /// writer), then act on each record as the dispatcher does.
    async fn complete(&mut self, done: Vec<u64>) -> Step {
        let now = self.clock.now();
        let mut finished = Vec::new();
        let mut records = Vec::new();
        let mut held_back = Vec::new();
        for f in done {
            let Some(flight) = self.node.flights.remove(&f) else { continue };
            self.model.answered(f, flight.accepted);
            let task = &flight.queued.task;
            let sending_rate = self.node.lanes.sending_rate(&task.endpoint.id, now.as_secs());
            let queued_behind = self.node.lanes.queued_to(&task.endpoint.id) > 0;
            let draws = Draws { attempt_id: self.next_id(id::ATTEMPT), jitter: self.rng.random() };
            let done = Finished {
                task,
                trigger: flight.queued.trigger,
                policy: record::policy(task, &self.dispatch),
                sent: flight.sent.clone(),
                started: flight.started,
                finished_at: now,
            };
            let record = record::record_for(done, &self.dispatch, draws, sending_rate, queued_behind);
            let pausing = matches!(record.signal, Signal::PauseUntil { .. });
            if pausing {
                // Nothing more starts there until the store knows of the pause.
                held_back.extend(self.node.lanes.hold(&task.endpoint.id));
            }
            let forget =
                self.cfg.sabotage == Some(Sabotage::ForgetRecord) && !self.forgot_a_record && flight.accepted;
            self.forgot_a_record |= forget;
            records.push((!forget).then_some(record));
            finished.push((flight, pausing));
        }
        self.give_back(held_back).await;
        let calls = records
            .into_iter()
            .map(|r| -> BoxFuture<'_, Option<StoreResult<_>>> {
                match r {
                    Some(record) => Box::pin(async { Some(self.store.record_attempt(record).await) }),
                    None => Box::pin(async { None }),
                }
            })
            .collect();
        let results = in_order(calls).await;
        for ((flight, pausing), result) in finished.iter().zip(results) {
            let endpoint_id = &flight.queued.task.endpoint.id;
            if *pausing {
                self.node.lanes.release_hold(endpoint_id);
            }
            match result {
                None => {
                    let forged =
                        DeliveryState { status: DeliveryStatus::Success, attempts: 1, next_attempt: None };
                    self.model.recorded(flight.delivery, &forged)?;
                }
                Some(Ok(effects)) => {
                    self.model.recorded(flight.delivery, &effects.state)?;
                    self.after_record(flight, effects).await?;
                }
                Some(Err(_)) => self.record_lost(flight).await?,
            }
        }
        for (flight, _) in finished {
            let (next, freed) = self.node.lanes.finish(&flight.queued);
            if freed {
                self.hint(now);
            }
            if let Some(next) = next {
                self.start(next)?;
            }
        }
        Ok(())
    }

    /// `Inner::after_record`: act on what recording changed.
    async fn after_record(&mut self, flight: &Flight, effects: crate::store::AttemptEffects) -> Step {
        let endpoint_id = flight.queued.task.endpoint.id.clone();
        for at in [effects.state.next_attempt, effects.wake].into_iter().flatten() {
            self.hint(at);
        }
        if let Some(until) = effects.endpoint_paused {
            let ep = self.endpoint_index[&endpoint_id];
            self.model.paused(ep, until);
            let queued = self.node.lanes.drop_queued(&endpoint_id);
            self.give_back(queued).await;
        }
        if let Some(next) = effects.next {
            self.offer(vec![next]).await?;
        }
        if let Some(d) = effects.endpoint_disabled {
            let ep = self.endpoint_index[&d.endpoint.id];
            self.model.disabled(ep);
            self.node.lanes.drop_queued(&d.endpoint.id);
        }
        Ok(())
    }

    /// A record whose answer was lost: it may or may not have been written.
    /// The node does what the dispatcher does (nothing: the lease will
    /// expire); the model reads the truth from the store.
    async fn record_lost(&mut self, flight: &Flight) -> Step {
        let task = &flight.queued.task;
        let now = self.clock.now();
        self.hint(now.plus(SAFETY_POLL));
        let stored = self.store.inner().get_delivery(&task.message.id, &task.endpoint.id).await?;
        if let Some(d) = &stored {
            self.model.sync(flight.delivery, Some(d.status), d.next_attempt);
        }
        let ep = self.endpoint_index[&task.endpoint.id];
        let now_disabled = self.store.inner().get_endpoint(&self.app_id, &task.endpoint.id).await?;
        if now_disabled.is_some_and(|e| e.disabled) && !self.model.is_disabled(ep) {
            // A record disabled it (410); the node never heard.
            self.model.disabled(ep);
            self.unannounced_endpoints.insert(ep);
        }
        Ok(())
    }

    /// The scheduler's loop body: claim what is due (again while batches
    /// come back full), then plan the next look.
    async fn claim(&mut self) -> Step {
        let now = self.clock.now();
        self.planned_claim = None;
        loop {
            let mut skip = self.node.lanes.full_endpoints();
            skip.sort();
            let lease = record::lease(&self.dispatch, now);
            let batch = self.dispatch.claim_batch;
            match self.store.claim_due(now, &lease, batch, &skip).await {
                Ok(tasks) => {
                    let full = tasks.len() >= batch;
                    let filled: Vec<String> =
                        if full { tasks.iter().map(|t| t.endpoint.id.clone()).collect() } else { Vec::new() };
                    self.offer(tasks).await?;
                    // As the scheduler: again at once unless the batch only filled lanes.
                    if full && !self.node.lanes.all_full(filled.iter().map(String::as_str)) {
                        continue;
                    }
                }
                Err(_) => {
                    self.hint(now.plus(ERROR_BACKOFF));
                    return Ok(());
                }
            }
            let mut skip = self.node.lanes.full_endpoints();
            skip.sort();
            match self.store.next_due(now, &skip).await {
                Ok(Some(at)) => self.hint(at.max(now.plus(TICK))),
                Ok(None) => {}
                Err(_) => self.hint(now.plus(SAFETY_POLL)),
            }
            return Ok(());
        }
    }

    // --- the world: clients, the operator, crashes ---

    async fn ingest(&mut self) -> Step {
        let now = self.clock.now();
        let n = self.rng.random_range(0..=MESSAGES_PER_TICK).min(self.cfg.messages - self.submitted);
        let mut requests = Vec::new();
        for _ in 0..n {
            let event_type = if self.rng.random_bool(0.03) {
                "e6".to_owned()
            } else {
                format!("e{}", self.rng.random_range(0..6))
            };
            let key = self.rng.random_bool(0.3).then(|| self.rng.random_range(0..KEYS));
            let deliver_at =
                self.rng.random_bool(0.05).then(|| now.plus(TICK * self.rng.random_range(20..=600u32)));
            let message = Message {
                id: self.next_id(id::MESSAGE),
                app_id: String::new(),
                event_type,
                event_id: None,
                channels: None,
                tags: None,
                payload: Some(Bytes::from_static(b"{\"sim\":true}")),
                created_at: now,
                deliver_at,
                expires_at: None,
                ordering_key: key.map(|k| format!("k{k}")),
                trace: None,
            };
            requests.push(CreateMessage {
                app_ref: self.app_id.clone(),
                new_app: None,
                message,
                lease: Some(record::lease(&self.dispatch, now)),
                only_endpoint: None,
                idempotency_key: None,
                busy_endpoints: self.node.lanes.full_endpoints(),
            });
        }
        self.submitted += n;
        let calls = requests
            .iter()
            .map(|r| -> BoxFuture<'_, _> { Box::pin(self.store.create_message(r.clone())) })
            .collect();
        let results = in_order(calls).await;
        for (request, result) in requests.into_iter().zip(results) {
            match result {
                Ok(created) => {
                    self.acked += 1;
                    let endpoints: Vec<String> = created.endpoints.iter().map(|e| e.id.clone()).collect();
                    self.add_message(Arc::clone(&created.message), &endpoints);
                    if let Some(at) = created.wake {
                        self.hint(at);
                    }
                    self.offer(created.send_now).await?;
                }
                Err(_) => {
                    self.ingest_errors += 1;
                    self.hint(now.plus(SAFETY_POLL));
                    // Not acknowledged: it may exist or not, and if it does,
                    // it must be delivered like any other.
                    let inner = Arc::clone(self.store.inner());
                    let id = &request.message.id;
                    if let Some(message) = inner.get_message(&self.app_id, id).await? {
                        let page = PageRequest::first(100, Order::Ascending);
                        let deliveries = inner.list_message_deliveries(&self.app_id, id, &page).await?;
                        let endpoints: Vec<String> =
                            deliveries.items.iter().map(|(d, _)| d.endpoint_id.clone()).collect();
                        self.add_message(Arc::new(message), &endpoints);
                    }
                }
            }
        }
        if self.ingesting() {
            self.schedule(now.plus(TICK), Event::Ingest);
        }
        Ok(())
    }

    fn add_message(&mut self, message: Arc<Message>, endpoint_ids: &[String]) {
        let index = self.messages.len() as u32;
        let endpoints: Vec<u16> = endpoint_ids.iter().map(|id| self.endpoint_index[id]).collect();
        let fifo: Vec<bool> = self.endpoints.iter().map(|e| e.endpoint.fifo).collect();
        let key = message.ordering_key.as_deref().and_then(|k| k.strip_prefix('k')?.parse().ok());
        let first_at = message.first_attempt_at();
        self.model.add_message(index, key, &fifo, &endpoints, first_at);
        self.message_index.insert(message.id.clone(), index);
        self.messages.push(message);
    }

    /// Every few seconds: skip blocked keys now and then, disable an
    /// endpoint, enable one again, delete one half way through.
    async fn operator(&mut self) -> Step {
        let now = self.clock.now();
        if self.rng.random_bool(0.25) {
            self.skip_blocked().await?;
        }
        let count = self.endpoints.len() as u16;
        // The sabotage needs a disable to show itself: it gets one at once.
        let sabotaging = self.cfg.sabotage == Some(Sabotage::SendToDisabled);
        if self.rng.random_bool(0.1) || sabotaging {
            let ep = self.rng.random_range(0..count);
            if !self.model.is_disabled(ep) && !self.model.is_deleted(ep) {
                self.set_disabled(ep, true).await?;
                if self.cfg.sabotage == Some(Sabotage::SendToDisabled) {
                    self.send_anyway(ep)?;
                }
            }
        }
        if self.rng.random_bool(0.3) {
            let ep = self.rng.random_range(0..count);
            if self.model.is_disabled(ep) && !self.model.is_deleted(ep) {
                self.set_disabled(ep, false).await?;
            }
        }
        if self.submitted * 2 >= self.cfg.messages && !self.model.is_deleted(DOOMED) {
            let id = self.endpoints[usize::from(DOOMED)].endpoint.id.clone();
            self.store.inner().delete_endpoint(&self.app_id, &id).await?;
            self.node.lanes.drop_queued(&id);
            self.model.deleted(DOOMED);
            *self.trouble.entry("operator: endpoint deleted".into()).or_default() += 1;
        }
        if self.ingesting() {
            self.schedule(now.plus(OPERATOR_EVERY), Event::Operator);
        }
        Ok(())
    }

    async fn set_disabled(&mut self, ep: u16, disabled: bool) -> Step {
        let now = self.clock.now();
        let id = self.endpoints[usize::from(ep)].endpoint.id.clone();
        let patch = EndpointPatch { disabled: Some(disabled), ..Default::default() };
        let updated = self.store.inner().update_endpoint(&self.app_id, &id, patch, now).await?;
        self.endpoints[usize::from(ep)].endpoint = Arc::new(updated);
        self.unannounced_endpoints.remove(&ep);
        if disabled {
            // `Dispatcher::endpoint_stopped`.
            self.node.lanes.drop_queued(&id);
            self.model.disabled(ep);
        } else {
            self.model.enabled(ep);
        }
        let kind = if disabled { "operator: endpoint disabled" } else { "operator: endpoint enabled" };
        *self.trouble.entry(kind.into()).or_default() += 1;
        Ok(())
    }

    /// Sabotage: one attempt to an endpoint just disabled.
    fn send_anyway(&mut self, ep: u16) -> Step {
        let Some(&delivery) = self.model.endpoint_deliveries(ep).last() else { return Ok(()) };
        let message = Arc::clone(&self.messages[self.model.delivery(delivery).msg as usize]);
        let endpoint = Arc::clone(&self.endpoints[usize::from(ep)].endpoint);
        let task = crate::store::DeliveryTask { message, endpoint, paced: false };
        self.start(QueuedAttempt { task, trigger: Trigger::Scheduled })
    }

    /// Skip every blocked key of the endpoints that block; returns how many.
    async fn skip_blocked(&mut self) -> Step<usize> {
        let now = self.clock.now();
        let mut skipped = 0;
        for ep in 0..self.endpoints.len() as u16 {
            let endpoint = Arc::clone(&self.endpoints[ep as usize].endpoint);
            if endpoint.ordering_on_failure != OnFailure::Block || self.model.is_deleted(ep) {
                continue;
            }
            let page = PageRequest::first(100, Order::Ascending);
            let blocked = self.store.inner().blocked_keys(&endpoint.id, &page).await?;
            for key in blocked.items {
                let next = self.store.inner().skip_blocked(&endpoint.id, &key.key, now).await?;
                let id = if key.key == FIFO_KEY {
                    invariants::FIFO
                } else {
                    key.key.strip_prefix('k').and_then(|k| k.parse().ok()).unwrap_or(u32::MAX - 1)
                };
                self.model.skipped(ep, id);
                if next.is_some() {
                    self.hint(now);
                }
                skipped += 1;
            }
        }
        if skipped > 0 {
            *self.trouble.entry("operator: blocked key skipped".into()).or_default() += skipped as u64;
        }
        Ok(skipped)
    }

    /// The node dies: attempts in flight are cut off (their receivers may
    /// have taken them), its memory is gone, the store is closed and
    /// opened again from its file.
    async fn crash(&mut self) -> Step {
        let now = self.clock.now();
        for (f, flight) in std::mem::take(&mut self.node.flights) {
            self.model.answered(f, flight.accepted);
        }
        self.node = Node::new(&self.dispatch, self.node.epoch + 1);
        self.planned_claim = None;
        let reopened = SqliteStore::open(&self.dir).map_err(|e| Stop::Error(e.into()))?;
        self.store.reopen(Arc::new(reopened));
        if self.rng.random_bool(0.5) {
            // As `hookline serve` starts on SQLite; otherwise the old
            // leases must expire.
            let _ = self.store.release_all(None).await;
        }
        self.hint(now);
        *self.trouble.entry("crash-restart".into()).or_default() += 1;
        if self.ingesting() {
            let gap = self.crash_gap();
            self.schedule(now.plus(gap), Event::Crash);
        }
        Ok(())
    }

    // --- reconciliation with the store ---

    async fn reconcile_sample(&mut self) -> Step {
        let total = self.model.deliveries().len();
        if total == 0 {
            return Ok(());
        }
        for _ in 0..20 {
            let id = self.rng.random_range(0..total) as u32;
            let d = self.model.delivery(id).clone();
            let (msg_id, ep_id) = (
                self.messages[d.msg as usize].id.clone(),
                self.endpoints[usize::from(d.ep)].endpoint.id.clone(),
            );
            let stored = self.store.inner().get_delivery(&msg_id, &ep_id).await?;
            self.model.reconcile(id, stored.map(|s| s.status), false)?;
        }
        Ok(())
    }

    /// At the end: every acknowledged message is in the store, and every
    /// delivery is settled as the model says.
    async fn reconcile_all(&mut self) -> Step {
        let inner = Arc::clone(self.store.inner());
        let mut stored_messages = HashSet::new();
        let mut page = PageRequest::first(1000, Order::Ascending);
        loop {
            let p = inner.list_messages(&self.app_id, &MessageFilter::default(), &page).await?;
            let last = p.items.last().map(|m| m.id.clone());
            stored_messages.extend(p.items.into_iter().map(|m| m.id));
            match (p.more, last) {
                (true, Some(id)) => page.cursor = Some(Cursor::After(id)),
                _ => break,
            }
        }
        for m in &self.messages {
            if !stored_messages.contains(&m.id) {
                return Err(invariants_violation(format!(
                    "acknowledged message {} is not in the store",
                    m.id
                ))
                .into());
            }
        }
        for ep in 0..self.endpoints.len() as u16 {
            let endpoint_id = self.endpoints[usize::from(ep)].endpoint.id.clone();
            let mut stored = HashMap::new();
            let mut page = PageRequest::first(1000, Order::Ascending);
            loop {
                let p = inner
                    .list_endpoint_deliveries(&self.app_id, &endpoint_id, &DeliveryFilter::default(), &page)
                    .await?;
                let last = p.items.last().map(|(d, _)| d.msg_id.clone());
                stored.extend(p.items.into_iter().map(|(d, _)| (d.msg_id, d.status)));
                match (p.more, last) {
                    (true, Some(id)) => page.cursor = Some(Cursor::After(id)),
                    _ => break,
                }
            }
            let known = self.model.endpoint_deliveries(ep).len();
            if stored.len() > known {
                let detail =
                    format!("endpoint #{ep} has {} deliveries in the store, {known} known", stored.len());
                return Err(invariants_violation(detail).into());
            }
            for &id in self.model.endpoint_deliveries(ep) {
                let msg_id = &self.messages[self.model.delivery(id).msg as usize].id;
                self.model.reconcile(id, stored.get(msg_id).copied(), true)?;
            }
        }
        Ok(())
    }

    // Endpoints a record disabled without the node hearing of it: sends to
    // them are counted, not failures (see `Report::unannounced`).
    fn announced(&self, ep: u16) -> bool {
        !self.unannounced_endpoints.contains(&ep)
    }
}

impl Node {
    fn new(cfg: &DispatchConfig, epoch: u64) -> Node {
        Node {
            lanes: Lanes::new(cfg.endpoint_concurrency, cfg.endpoint_queue),
            flights: BTreeMap::new(),
            epoch,
            shed: Vec::new(),
        }
    }
}

fn invariants_violation(detail: String) -> Violation {
    Violation { invariant: invariants::LOST, detail }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Run futures together, first polled in the order given (so store calls
/// reach the SQLite writer in that order and commit together), and return
/// their results in that order.
async fn in_order<T>(mut calls: Vec<BoxFuture<'_, T>>) -> Vec<T> {
    let mut results: Vec<Option<T>> = calls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (call, slot) in calls.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match call.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    results.into_iter().map(|r| r.expect("every call finished")).collect()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut hash: u64, words: &[u64]) -> u64 {
    for w in words {
        for b in w.to_le_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}
