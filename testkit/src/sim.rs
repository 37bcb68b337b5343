//! Deterministic simulation of devices syncing through a relay, in one thread.
//!
//! Every device is a real [`Store`] (in a temporary directory) driven by a real sync
//! [`Engine`]; the relay is the real per-connection [`Session`] and [`Hub`] over
//! [`MemoryStorage`]. Only the network and the clock are simulated: connections deliver frames
//! in order after a random latency, may duplicate data frames, and are cut at random; devices
//! are partitioned for random periods; the relay crashes (losing its memory and every unsaved
//! sync state, keeping its storage), or is restored from a backup taken earlier in the run
//! (losing what it acknowledged since: the devices must send it back); devices crash and
//! reopen their stores. Everything random
//! comes from one seeded generator and time is virtual, so a seed replays exactly:
//! [`run`]`(seed)` returns the same result every time.
//!
//! After the chaos phase the network heals; the run then requires that within a bounded
//! virtual time every device holds every document with the same heads as the relay, that no
//! change a device wrote (its call returned) is missing, and that every change the relay
//! acknowledged is still there.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use automerge::{Automerge, ChangeHash, ReadDoc};
use syncline::engine::{Disconnect, Effect, Engine, Event, Status};
use syncline::{
    Collection, CollectionSubscription, DeviceClass, DeviceId, DocId, Priority, Store,
    StoreOptions, SyncMode, Value,
};
use syncline_protocol::messages::Limits;
use syncline_protocol::{Hash, Heads, Message, frame};
use syncline_relay::Tenant;
use syncline_relay::auth::{CollectionSet, Grants, Identity, Verified};
use syncline_relay::hub::{Hub, SessionId};
use syncline_relay::relay_core::{
    Backlog, CoreStats, Input, OutboxLimits, Output as CoreOutput, Queued, RelayCore,
};
use syncline_relay::session::{Action, Output as SessionOutput, Session};
use syncline_relay::storage::{MemoryStorage, Storage};

/// The collection every simulated document lives in.
const COLLECTION: &str = "notes";

/// The key a hostile client's forged changes set: never found on the relay.
const FORGED: &str = "forged-by-mallory";

/// What one run does; [`SimConfig::for_seed`] derives it from the seed.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Devices (2 to 4).
    pub devices: usize,
    /// Local operations during the chaos phase.
    pub ops: usize,
    /// Length of the chaos phase, virtual milliseconds.
    pub chaos_ms: u64,
    /// Give up converging after this much virtual time past the chaos phase.
    pub heal_ms: u64,
    /// The relay's slow-consumer bounds: small, so that fan-out bursts close connections.
    pub outbox: OutboxLimits,
    /// The conflict strategy every device runs (0: none, 1: last writer wins, 2: the first
    /// device has priority).
    pub strategy: u8,
    /// Relay cores over the one storage (1, or 2 for a third of the seeds: several relays on
    /// one database, each device connecting to either, their commits announced to the other
    /// late, out of turn or not at all, and made up by resyncs).
    pub relays: usize,
}

impl SimConfig {
    /// The configuration for `seed`.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5EED);
        Self {
            devices: rng.usize(2..=4),
            ops: rng.usize(5..=40),
            chaos_ms: rng.u64(500..=5_000),
            heal_ms: 120_000,
            outbox: OutboxLimits {
                messages: rng.usize(4..=32),
                bytes: 1 << rng.u32(9..=15),
            },
            strategy: rng.u8(0..3),
            // Drawn apart, so the rest of a seed's configuration is what it always was.
            relays: if fastrand::Rng::with_seed(seed ^ 0x2E1A).u8(0..3) == 0 {
                2
            } else {
                1
            },
        }
    }
}

/// What a successful run saw.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Documents at the end.
    pub documents: usize,
    /// Local operations that committed.
    pub writes: usize,
    /// Connections cut by the network.
    pub cuts: usize,
    /// Relay crashes.
    pub relay_crashes: usize,
    /// Relays restored from a backup taken earlier in the run.
    pub restores: usize,
    /// Frames a hostile client sent.
    pub hostile_frames: usize,
    /// Device crashes (store reopened).
    pub device_crashes: usize,
    /// Frames delivered.
    pub frames: usize,
    /// Virtual milliseconds until every device converged.
    pub converged_at_ms: u64,
    /// A digest of everything that happened: every frame delivered (when, on which link, in
    /// which direction, its bytes) and the relay's final heads. The same seed gives the same
    /// digest, bit for bit; it is how a replay is checked.
    pub trace_digest: u64,
    /// Group commits of the relay core that carried frames of several sessions.
    pub shared_group_commits: u64,
    /// Connections the relay core closed as slow consumers.
    pub slow_consumers: u64,
    /// Refreshed tokens that narrowed a connected device's grants.
    pub grant_changes: u64,
    /// Messages the relay core dropped whole by grant filtering.
    pub filtered: u64,
    /// Random capability profiles declared on the fly (metered, bandwidths, periodic).
    pub profile_changes: u64,
    /// Random subscription changes (eager and on demand, priorities).
    pub subscription_changes: u64,
    /// Documents the relay announced to a device and held back.
    pub deferred: u64,
    /// Documents whose content was evicted (over a storage budget) when the chaos ended.
    pub evicted: u64,
    /// Ephemeral messages (presence) devices sent while connected.
    pub ephemerals_sent: u64,
    /// Ephemeral messages devices received (from another device, on the simulated
    /// collection, within the size limit: anything else fails the run).
    pub ephemerals_received: u64,
    /// Conflict resolutions in the converged documents (written by a strategy; with one, no
    /// conflict between scalar values may be left).
    pub resolutions: u64,
    /// Documents a device had evicted, keeping its own changes apart, when the relay was
    /// restored from an older backup: those changes must bring back what the relay lost.
    pub evicted_at_restore: u64,
    /// Documents a device had evicted with its own changes too (its storage budget could not
    /// hold them) when the relay was restored: their custody was the relay's alone.
    pub released_at_restore: u64,
    /// Changes lost because their device had left them to the relay alone (above) before
    /// the relay was restored from an older backup: the one loss the design admits
    /// (SECURITY.md, "A relay restored from an older backup"). Any other loss fails the run.
    pub lost_released: u64,
    /// Restores after which a device evicted all it could as it reconnected (before it
    /// learned of the loss).
    pub restores_with_eviction: u64,
    /// With two relays: announcements of one's commits the other heard, and those lost (made
    /// up by a resync).
    pub announcements_heard: u64,
    /// See `announcements_heard`.
    pub announcements_lost: u64,
}

struct Link {
    device: usize,
    session: SessionId,
    to_relay: VecDeque<(u64, Vec<u8>)>,
    /// Frames for the device, with the bytes the relay core counted for each.
    to_device: VecDeque<(u64, Vec<u8>, usize)>,
    /// What the relay core queued on this link and the device has not received yet.
    backlog: Queued,
    /// The relay closes this link (a slow consumer) once the device has what was queued, as
    /// the server's connection sends its outbox before the close frame.
    closing: Option<(u16, String)>,
}

struct Device {
    id: DeviceId,
    dir: tempfile::TempDir,
    store: Option<Store>,
    engine: Option<Engine>,
    wake_at: Option<u64>,
    link: Option<u64>,
    connect_at: Option<u64>,
    partitioned_until: u64,
    status: Status,
    /// Every change hash this device wrote (each write returned, so it is durable).
    written: HashMap<DocId, HashSet<ChangeHash>>,
    /// With a conflict strategy, the store writes resolutions of its own: the documents of
    /// local changes the engine is yet to hear of (as the shell's local-change hook does).
    local: Option<(Arc<std::sync::Mutex<Vec<DocId>>>, syncline::Subscription)>,
}

struct Relay {
    storage: MemoryStorage,
    /// A backup of the storage taken during the chaos, to be restored later.
    backup: Option<MemoryStorage>,
    /// The relay cores (one per relay process) and each one's storage handle (its epoch).
    cores: Vec<RelayCore<MemoryStorage>>,
    handles: Vec<MemoryStorage>,
    sessions: HashMap<SessionId, (Session, u64)>,
    /// The core each session is on.
    core_of: HashMap<SessionId, usize>,
    /// The cores' statistics before their last crash.
    crashed_stats: CoreStats,
    /// With several cores: what the storage had reached when last looked at (to announce what
    /// moved), and per core, announcements on their way (when due, what moved) and its next
    /// resync.
    reached: BTreeMap<(Tenant, Collection), u64>,
    announcements: Vec<VecDeque<(u64, Moved)>>,
    resync_at: Vec<u64>,
}

/// What one announcement says moved: (tenant, collection, sequence) per collection.
type Moved = Vec<(Tenant, Collection, u64)>;

/// How often a core compares every collection with what it has seen (the relay's feed does it
/// every minute; the simulation's runs are seconds long).
const SIM_RESYNC_MS: u64 = 1_500;

impl Relay {
    /// A core over `handle`, following the other cores' commits when there are several.
    fn core(
        handle: &MemoryStorage,
        limits: OutboxLimits,
        shared: bool,
    ) -> RelayCore<MemoryStorage> {
        let mut hub = Hub::new(Arc::new(handle.clone()));
        if shared {
            hub.follow_remote().expect("memory storage reads");
        }
        RelayCore::new(hub, limits)
    }

    /// `n` cores over `storage` (the first on its epoch, the others sharing its generation).
    fn start(storage: MemoryStorage, n: usize, limits: OutboxLimits, now: u64) -> Self {
        let handles: Vec<MemoryStorage> = (0..n)
            .map(|i| {
                if i == 0 {
                    storage.clone()
                } else {
                    storage.share()
                }
            })
            .collect();
        let cores = handles
            .iter()
            .map(|h| Self::core(h, limits, n > 1))
            .collect();
        let reached = storage
            .collection_seqs()
            .expect("memory storage reads")
            .into_iter()
            .map(|(t, c, seq)| ((t, c), seq))
            .collect();
        Self {
            storage,
            backup: None,
            cores,
            handles,
            sessions: HashMap::new(),
            core_of: HashMap::new(),
            crashed_stats: CoreStats::default(),
            reached,
            announcements: vec![VecDeque::new(); n],
            resync_at: vec![now + SIM_RESYNC_MS; n],
        }
    }

    fn shared(&self) -> bool {
        self.cores.len() > 1
    }

    /// `input` for session `id`'s core.
    fn push(&mut self, id: SessionId, input: Input, now: u64) {
        let core = self.core_of.get(&id).copied().unwrap_or(0);
        self.cores[core].push(input, now);
    }

    /// The epoch the core of a new session on `core` names in its `Welcome`.
    fn epoch(&self, core: usize) -> String {
        self.handles[core].epoch().to_owned()
    }

    fn stats(&self) -> CoreStats {
        self.cores
            .iter()
            .fold(self.crashed_stats, |total, core| sum(total, core.stats()))
    }
}

/// Two cores' statistics together.
fn sum(a: CoreStats, b: CoreStats) -> CoreStats {
    CoreStats {
        groups: a.groups + b.groups,
        grouped_frames: a.grouped_frames + b.grouped_frames,
        shared_groups: a.shared_groups + b.shared_groups,
        slow_consumers: a.slow_consumers + b.slow_consumers,
        filtered: a.filtered + b.filtered,
        changes_stored: a.changes_stored + b.changes_stored,
        ephemerals_dropped: a.ephemerals_dropped + b.ephemerals_dropped,
    }
}

/// The links' backlogs as the relay core reads them.
struct Backlogs<'a>(&'a BTreeMap<u64, Link>);

impl Backlog for Backlogs<'_> {
    fn queued(&self, id: SessionId) -> Queued {
        // Session ids are link ids.
        self.0.get(&id).map_or_else(Queued::default, |l| l.backlog)
    }
}

struct World {
    rng: fastrand::Rng,
    now: u64,
    /// When the chaos phase ends (set when the run starts).
    chaos_end: u64,
    /// `now`, shared with the devices' store clocks (Automerge stamps changes with it).
    clock: Arc<AtomicU64>,
    config: SimConfig,
    devices: Vec<Device>,
    relay: Relay,
    links: BTreeMap<u64, Link>,
    next_link: u64,
    /// Hashes the relay acknowledged, per document.
    acked: HashMap<DocId, HashSet<ChangeHash>>,
    report: SimReport,
    faults: bool,
    trace: Trace,
    /// The hostile clients' device ids (their ephemerals reach honest devices too).
    hostiles: HashSet<DeviceId>,
    /// An invariant broken while applying effects; the next step fails the run with it.
    broken: Option<String>,
    /// The conflict strategy every device runs.
    strategy: Option<syncline::ConflictStrategy>,
    /// (device, document) whose content the device had evicted with its own changes too (its
    /// budget could not hold them) when the relay was restored from a backup, with the
    /// changes it had written to it by then: only those may be lost.
    released_at_restore: HashMap<(usize, DocId), HashSet<ChangeHash>>,
    /// The relay's documents as last loaded by [`World::relay_docs`]: one whose heads are
    /// unchanged is not loaded again (heads name the whole history, even across a restore).
    relay_cache: BTreeMap<DocId, Automerge>,
}

/// Who a simulated device is to the relay.
fn sim_identity(device: DeviceId) -> Identity {
    Identity {
        user: "sim".into(),
        device,
        tenant: Tenant::default_tenant(),
    }
}

/// FNV-1a over the run's events: stable across builds and platforms, unlike `DefaultHasher`.
struct Trace(u64);

impl Trace {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn frame(&mut self, at: u64, link: u64, to_relay: bool, bytes: &[u8]) {
        self.write(&at.to_le_bytes());
        self.write(&link.to_le_bytes());
        self.write(&[u8::from(to_relay)]);
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// Runs the simulation of `seed`.
///
/// # Errors
/// What went wrong, with the seed, when the devices did not converge or lost something.
pub fn run(seed: u64) -> Result<SimReport, String> {
    let config = SimConfig::for_seed(seed);
    let mut world = World::new(seed, config);
    world.run().map_err(|e| format!("seed {seed}: {e}"))
}

impl World {
    fn new(seed: u64, config: SimConfig) -> Self {
        let storage = MemoryStorage::new();
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = 1_000_000;
        let clock = Arc::new(AtomicU64::new(now));
        let ids: Vec<DeviceId> = (0..config.devices)
            .map(|_| DeviceId::from_bytes(rng.u128(..).to_le_bytes()))
            .collect();
        let strategy = match config.strategy {
            1 => Some(syncline::ConflictStrategy::LastWriterWins),
            2 => Some(syncline::ConflictStrategy::DevicePriority(vec![ids[0]])),
            _ => None,
        };
        let devices = ids
            .iter()
            .map(|id| Device::open(None, *id, &clock, strategy.clone()))
            .collect();
        Self {
            rng,
            now,
            chaos_end: now,
            clock,
            devices,
            relay: Relay::start(storage, config.relays, config.outbox, now),
            config,
            links: BTreeMap::new(),
            next_link: 1,
            acked: HashMap::new(),
            report: SimReport::default(),
            faults: true,
            trace: Trace(0xcbf2_9ce4_8422_2325),
            hostiles: HashSet::new(),
            broken: None,
            strategy,
            released_at_restore: HashMap::new(),
            relay_cache: BTreeMap::new(),
        }
    }

    fn run(&mut self) -> Result<SimReport, String> {
        let start = self.now;
        let chaos_end = start + self.config.chaos_ms;
        self.chaos_end = chaos_end;
        // The chaos phase's schedule: operations and faults at random times.
        let mut schedule: Vec<(u64, Chaos)> = Vec::new();
        for _ in 0..self.config.ops {
            schedule.push((start + self.rng.u64(0..self.config.chaos_ms), Chaos::Write));
        }
        for _ in 0..self.rng.usize(0..=4) {
            let at = start + self.rng.u64(0..self.config.chaos_ms);
            schedule.push((at, Chaos::Presence(self.rng.usize(0..self.devices.len()))));
        }
        let faults = self.rng.usize(0..=10);
        for _ in 0..faults {
            let at = start + self.rng.u64(0..self.config.chaos_ms);
            let fault = match self.rng.u8(0..15) {
                11 | 12 => Chaos::Profile(self.rng.usize(0..self.devices.len())),
                13 | 14 => Chaos::Subscribe(self.rng.usize(0..self.devices.len())),
                0..=3 => Chaos::Cut,
                4..=6 => Chaos::Partition(self.rng.u64(100..=3_000)),
                7 if self.rng.bool() => Chaos::RelayCrash,
                7 if self.rng.bool() => Chaos::Hostile,
                7 => {
                    // A backup now, restored later: the relay loses what came in between.
                    let until = at + self.rng.u64(100..=3_000);
                    schedule.push((until, Chaos::RestoreBackup));
                    Chaos::Backup
                }
                8 | 9 => Chaos::DeviceCrash,
                _ => {
                    let device = self.rng.usize(0..self.devices.len());
                    let until = at + self.rng.u64(100..=3_000);
                    schedule.push((until, Chaos::Restore(device)));
                    Chaos::Narrow(device)
                }
            };
            schedule.push((at, fault));
        }
        schedule.sort_by_key(|(at, _)| *at);
        let mut schedule: VecDeque<(u64, Chaos)> = schedule.into();
        for i in 0..self.devices.len() {
            self.handle(i, Event::Start);
        }
        let deadline = chaos_end + self.config.heal_ms;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > 2_000_000 {
                return Err("too many steps".into());
            }
            if self.now >= chaos_end && self.faults {
                self.faults = false;
                for d in &mut self.devices {
                    d.partitioned_until = 0;
                }
                // Every device back to a realtime, unmetered, eager profile with no budget: it
                // must then get everything that was held back for it or evicted.
                let notes = Collection::new(COLLECTION).expect("valid");
                for d in &self.devices {
                    if let Some(store) = &d.store {
                        let listed = store.list(&notes).unwrap_or_default();
                        self.report.evicted += listed.iter().filter(|i| i.evicted).count() as u64;
                    }
                }
                for i in 0..self.devices.len() {
                    if self.devices[i].engine.is_some() {
                        self.handle(i, Event::Profile(crate::profile(DeviceClass::Phone)));
                        self.handle(i, Event::Subscriptions(vec![sim_subscription()]));
                    }
                }
            }
            if !self.faults && self.converged()? {
                self.report.converged_at_ms = self.now - start;
                self.check_resolved()?;
                let docs = self.relay_docs()?;
                self.report.documents = docs.len();
                for (id, doc) in &docs {
                    self.trace.write(id.to_string().as_bytes());
                    for head in doc.get_heads() {
                        self.trace.write(&head.0);
                    }
                }
                self.report.trace_digest = self.trace.0;
                let stats = self.relay.stats();
                self.report.shared_group_commits = stats.shared_groups;
                self.report.slow_consumers = stats.slow_consumers;
                self.report.filtered = stats.filtered;
                return Ok(self.report.clone());
            }
            let next = self.next_time(schedule.front().map(|(at, _)| *at));
            let Some(next) = next else {
                return Err(format!(
                    "nothing left to happen but not converged: {}",
                    self.describe()
                ));
            };
            if next > deadline {
                return Err(format!("not converged in time: {}", self.describe()));
            }
            self.now = self.now.max(next);
            self.clock.store(self.now, Ordering::Relaxed);
            while schedule.front().is_some_and(|(at, _)| *at <= self.now) {
                let (_, chaos) = schedule.pop_front().expect("checked");
                self.chaos(chaos);
            }
            self.step()?;
        }
    }

    /// A hostile client's visit: a session of its own (no device behind it; what the relay
    /// sends it is dropped), fed frames the relay must refuse, then disconnected.
    fn hostile(&mut self) {
        let now = self.now;
        let id = self.next_link;
        self.next_link += 1;
        let identity = Identity {
            user: "mallory".into(),
            device: DeviceId::from_bytes(self.rng.u128(..).to_le_bytes()),
            tenant: Tenant::default_tenant(),
        };
        self.hostiles.insert(identity.device);
        let mut session = Session::new(
            format!("h{id}"),
            verified(identity.clone(), all_grants()),
            relaxed_limits(),
            now,
        );
        let core = self.pick_core();
        self.relay.core_of.insert(id, core);
        session.set_epoch(self.relay.epoch(core));
        self.relay.push(
            id,
            Input::Connect {
                id,
                identity,
                grants: all_grants(),
            },
            now,
        );
        self.relay.sessions.insert(id, (session, id));
        for bytes in self.hostile_frames() {
            self.report.hostile_frames += 1;
            self.trace.frame(now, id, true, &bytes);
            let Some((session, _)) = self.relay.sessions.get_mut(&id) else {
                break;
            };
            let out = session.handle_frame(&bytes, now);
            self.session_output(id, id, out);
        }
        self.relay.sessions.remove(&id);
        self.relay.push(id, Input::Disconnect { id }, now);
        self.relay.core_of.remove(&id);
    }

    /// What a hostile client sends in one visit, in a random order after its `Hello`.
    fn hostile_frames(&mut self) -> Vec<Vec<u8>> {
        use automerge::transaction::Transactable;
        use syncline_protocol::messages::{
            Cursor, Ephemeral, Reconcile, Subscribe, Sync, SyncItem, UpdateProfile,
        };
        let collection = Collection::new(COLLECTION).expect("valid");
        let mut frames = vec![frame::encode(&crate::hello("mallory", DeviceClass::Phone))];
        let mut rest = Vec::new();
        rest.push(frame::encode(&Message::Subscribe(Subscribe {
            collections: vec![sim_subscription(); 50],
        })));
        // Positions no relay showed, with bogus receipts: a replan at most, never the right
        // to send other devices' changes.
        let made_up = Cursor {
            collection: collection.clone(),
            seq: self.rng.u64(1..1_000_000),
            epoch: Some(if self.rng.bool() {
                self.relay.storage.epoch().to_owned()
            } else {
                format!("{:032x}", self.rng.u128(..))
            }),
            receipt: Some(format!("{:032x}", self.rng.u128(..))),
        };
        rest.push(frame::encode(&Message::Reconcile(Reconcile {
            cursors: vec![made_up.clone()],
            changed: Vec::new(),
            fetched: None,
            acked: Some(vec![made_up]),
        })));
        // A change forged under an honest device's id, to a document it wrote or a new one.
        let victim = self.rng.usize(0..self.devices.len());
        let known: Vec<DocId> = self.devices[victim].written.keys().cloned().collect();
        let doc = if known.is_empty() || self.rng.bool() {
            DocId::new(collection.clone(), format!("x{:016x}", self.rng.u64(..))).expect("valid")
        } else {
            known[self.rng.usize(0..known.len())].clone()
        };
        let mut forged = Automerge::new().with_actor(automerge::ActorId::from(
            self.devices[victim].id.as_bytes().as_slice(),
        ));
        let mut tx = forged.transaction();
        tx.put(automerge::ROOT, FORGED, self.rng.i64(..))
            .expect("put");
        tx.commit();
        let change = forged
            .get_last_local_change()
            .expect("a change")
            .raw_bytes()
            .to_vec();
        let message = automerge::sync::Message {
            heads: forged.get_heads(),
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![change].into(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        rest.push(frame::encode(&Message::Sync(Sync {
            items: vec![SyncItem {
                doc: doc.clone(),
                message: message.encode(),
                priority: None,
            }],
            positions: None,
        })));
        // An opening message for a made-up document: no state, no row.
        let opening = automerge::sync::Message {
            heads: vec![ChangeHash(
                self.rng
                    .u128(..)
                    .to_le_bytes()
                    .repeat(2)
                    .try_into()
                    .expect("32 bytes"),
            )],
            need: Vec::new(),
            have: vec![automerge::sync::Have::default()],
            changes: automerge::sync::ChunkList::empty(),
            flags: None,
            version: automerge::sync::MessageVersion::V1,
        };
        rest.push(frame::encode(&Message::Sync(Sync {
            items: vec![SyncItem {
                doc: DocId::new(collection, format!("y{:016x}", self.rng.u64(..))).expect("valid"),
                message: opening.encode(),
                priority: None,
            }],
            positions: None,
        })));
        for _ in 0..self.rng.usize(1..20) {
            let mut profile = crate::profile(DeviceClass::Phone);
            profile.metered = self.rng.bool();
            rest.push(frame::encode(&Message::UpdateProfile(UpdateProfile {
                profile,
            })));
        }
        for _ in 0..self.rng.usize(1..20) {
            rest.push(frame::encode(&Message::Ephemeral(Ephemeral {
                doc: doc.clone(),
                payload: vec![0u8; self.rng.usize(0..=5000)].into(),
                from: None,
            })));
        }
        let mut garbage = vec![0u8; self.rng.usize(1..64)];
        self.rng.fill(&mut garbage);
        rest.push(garbage);
        // Inputs the `frame` fuzz target found (its committed corpus, in name order, so a seed
        // still replays exactly on one commit).
        let corpus = fuzz_corpus();
        if !corpus.is_empty() {
            for _ in 0..self.rng.usize(1..=4) {
                rest.push(corpus[self.rng.usize(0..corpus.len())].clone());
            }
        }
        self.rng.shuffle(&mut rest);
        frames.extend(rest);
        frames
    }

    /// A relay crashes (with several, one of them): its connections drop, nothing unsaved
    /// survives, and a new core serves the storage.
    fn crash_relay(&mut self) {
        let core = self.pick_core();
        self.crash_core(core);
    }

    /// The core to connect to, or to crash: any of them.
    fn pick_core(&mut self) -> usize {
        if self.relay.shared() {
            self.rng.usize(0..self.relay.cores.len())
        } else {
            0
        }
    }

    /// Core `core` crashes: see [`World::crash_relay`].
    fn crash_core(&mut self, core: usize) {
        let links: Vec<u64> = self
            .links
            .keys()
            .copied()
            .filter(|link| self.relay.core_of.get(link).copied().unwrap_or(0) == core)
            .collect();
        for link in links {
            // A crash saves nothing: drop the session without the hub's disconnect.
            let device = self.links[&link].device;
            self.drop_link(link, false);
            self.devices[device].link = None;
            self.handle(
                device,
                Event::Disconnected(Disconnect::Failed("relay gone".into())),
            );
        }
        let fresh = Relay::core(
            &self.relay.handles[core],
            self.config.outbox,
            self.relay.shared(),
        );
        let old = std::mem::replace(&mut self.relay.cores[core], fresh);
        self.relay.crashed_stats = sum(self.relay.crashed_stats, old.stats());
        let gone: Vec<SessionId> = self
            .relay
            .core_of
            .iter()
            .filter(|&(_, &c)| c == core)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.relay.sessions.remove(&id);
            self.relay.core_of.remove(&id);
        }
        if !self.relay.shared() {
            self.relay.sessions.clear();
        }
    }

    fn next_time(&self, scheduled: Option<u64>) -> Option<u64> {
        let mut times: Vec<u64> = scheduled.into_iter().collect();
        for link in self.links.values() {
            times.extend(link.to_relay.front().map(|(at, _)| *at));
            times.extend(link.to_device.front().map(|(at, _, _)| *at));
        }
        for d in &self.devices {
            times.extend(d.wake_at);
            times.extend(d.connect_at);
        }
        if self.faults {
            // The end of the chaos phase is itself an event.
            times.push(self.chaos_end.max(self.now));
        }
        if self
            .relay
            .cores
            .iter()
            .any(|core| !core.is_idle() || core.remote_backlog())
        {
            // A relay core has inputs for its next turn.
            times.push(self.now);
        }
        if self.relay.shared() {
            for (queue, at) in self.relay.announcements.iter().zip(&self.relay.resync_at) {
                times.extend(queue.front().map(|(due, _)| *due));
                times.push(*at);
            }
        }
        // Paced frames waiting in the sessions' downlinks.
        times.extend(
            self.relay
                .sessions
                .values()
                .filter_map(|(session, _)| session.downlink().next_release_ms()),
        );
        times.into_iter().min()
    }

    /// Everything due now: connection completions, deliveries, timers.
    fn step(&mut self) -> Result<(), String> {
        for i in 0..self.devices.len() {
            if self.devices[i].connect_at.is_some_and(|at| at <= self.now) {
                self.devices[i].connect_at = None;
                self.complete_connect(i);
            }
        }
        let ids: Vec<u64> = self.links.keys().copied().collect();
        // Every frame due at the relay first, then one turn of the relay core: frames of
        // several devices arriving together are committed as one group, as on the server.
        for &id in &ids {
            while let Some(bytes) = self.pop_due(id, true) {
                self.report.frames += 1;
                self.trace.frame(self.now, id, true, &bytes);
                self.deliver_to_relay(id, &bytes);
            }
        }
        if self.relay.shared() {
            self.deliver_announcements();
        }
        self.poll_relay()?;
        self.release_paced(&ids);
        for id in ids {
            while let Some(bytes) = self.pop_due(id, false) {
                self.report.frames += 1;
                self.trace.frame(self.now, id, false, &bytes);
                let Some(device) = self.links.get(&id).map(|l| l.device) else {
                    break;
                };
                self.observe_acks(&bytes);
                self.handle(device, Event::Frame(bytes));
            }
            self.finish_closing(id);
        }
        for i in 0..self.devices.len() {
            if self.devices[i].wake_at.is_some_and(|at| at <= self.now) {
                self.devices[i].wake_at = None;
                self.handle(i, Event::Tick);
            }
        }
        match self.broken.take() {
            Some(broken) => Err(broken),
            None => Ok(()),
        }
    }

    fn pop_due(&mut self, link: u64, to_relay: bool) -> Option<Vec<u8>> {
        let now = self.now;
        let l = self.links.get_mut(&link)?;
        if to_relay {
            if l.to_relay.front().is_some_and(|(at, _)| *at <= now) {
                return l.to_relay.pop_front().map(|(_, b)| b);
            }
            return None;
        }
        if l.to_device.front().is_none_or(|(at, _, _)| *at > now) {
            return None;
        }
        let (_, bytes, counted) = l.to_device.pop_front()?;
        l.backlog.messages = l.backlog.messages.saturating_sub(1);
        l.backlog.bytes = l.backlog.bytes.saturating_sub(counted);
        Some(bytes)
    }

    /// Hands `event` to device `i`'s engine now and carries out its effects.
    fn handle(&mut self, i: usize, event: Event) {
        let now = self.now;
        let effects = self.engine(i).handle(event, now);
        // As every shell must: app listeners run after `handle` returned.
        self.engine(i).store().deliver_events();
        self.apply(i, effects);
        // Resolutions the store wrote on its own go to the relay like any local change.
        let resolved: Vec<DocId> = self.devices[i]
            .local
            .as_ref()
            .map(|(docs, _)| std::mem::take(&mut *docs.lock().expect("lock")))
            .unwrap_or_default();
        if !resolved.is_empty() && self.devices[i].engine.is_some() {
            self.handle(i, Event::LocalChanges(resolved));
        }
    }

    fn engine(&mut self, i: usize) -> &mut Engine {
        self.devices[i].engine.as_mut().expect("a running device")
    }

    fn latency(&mut self) -> u64 {
        self.rng.u64(1..=30)
    }

    /// Queues a frame on a link, in order after what is already queued; data frames are
    /// sometimes duplicated during the chaos phase.
    fn enqueue(&mut self, link: u64, to_relay: bool, bytes: Vec<u8>) {
        self.enqueue_counted(link, to_relay, bytes, None);
    }

    /// [`World::enqueue`] of a frame the relay core counted (`Some(bytes)` against the link's
    /// backlog until the device receives it).
    fn enqueue_counted(
        &mut self,
        link: u64,
        to_relay: bool,
        bytes: Vec<u8>,
        counted: Option<usize>,
    ) {
        let delay = self.latency();
        let duplicate = self.faults && is_data(&bytes) && self.rng.u8(0..20) == 0;
        let now = self.now;
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if to_relay {
            let at = l
                .to_relay
                .back()
                .map_or(now + delay, |(last, _)| (*last).max(now + delay));
            if duplicate {
                l.to_relay.push_back((at, bytes.clone()));
            }
            l.to_relay.push_back((at, bytes));
            return;
        }
        let at = l
            .to_device
            .back()
            .map_or(now + delay, |(last, _, _)| (*last).max(now + delay));
        if duplicate {
            l.to_device.push_back((at, bytes.clone(), 0));
        }
        if let Some(counted) = counted {
            l.backlog.messages += 1;
            l.backlog.bytes += counted;
        }
        l.to_device.push_back((at, bytes, counted.unwrap_or(0)));
    }

    fn apply(&mut self, i: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Connect => {
                    let delay = self.latency();
                    self.devices[i].connect_at = Some(self.now + delay);
                }
                Effect::Send(bytes) => {
                    if let Some(link) = self.devices[i].link {
                        self.enqueue(link, true, bytes);
                    }
                }
                Effect::Disconnect => {
                    self.devices[i].connect_at = None;
                    if let Some(link) = self.devices[i].link.take() {
                        self.drop_link(link, true);
                    }
                }
                Effect::Status(status) => self.devices[i].status = status,
                Effect::WakeAt(at) => self.devices[i].wake_at = Some(at),
                Effect::Ephemeral(message) => {
                    self.report.ephemerals_received += 1;
                    let from_honest = self.devices.iter().any(|d| d.id == message.from);
                    if message.from == self.devices[i].id
                        || !(from_honest || self.hostiles.contains(&message.from))
                        || message.doc.collection().as_str() != COLLECTION
                        || message.payload.len() > syncline_protocol::messages::MAX_EPHEMERAL_BYTES
                    {
                        self.broken =
                            Some(format!("device {i} got a misrouted ephemeral: {message:?}"));
                    }
                }
            }
        }
    }

    fn complete_connect(&mut self, i: usize) {
        let now = self.now;
        if self.devices[i].partitioned_until > now {
            self.handle(
                i,
                Event::Disconnected(Disconnect::Failed("partitioned".into())),
            );
            return;
        }
        let device = self.devices[i].store.as_ref().expect("running").device_id();
        let identity = sim_identity(device);
        let all = all_grants();
        let verified = verified(identity.clone(), all.clone());
        let id = self.next_link;
        self.next_link += 1;
        let mut session = Session::new(format!("s{id}"), verified, relaxed_limits(), now);
        let core = self.pick_core();
        self.relay.core_of.insert(id, core);
        session.set_epoch(self.relay.epoch(core));
        self.relay.push(
            id,
            Input::Connect {
                id,
                identity,
                grants: all,
            },
            now,
        );
        self.relay.sessions.insert(id, (session, id));
        self.links.insert(
            id,
            Link {
                device: i,
                session: id,
                to_relay: VecDeque::new(),
                to_device: VecDeque::new(),
                backlog: Queued::default(),
                closing: None,
            },
        );
        self.devices[i].link = Some(id);
        self.handle(i, Event::Connected);
    }

    /// Removes a link; the relay's side disconnects (saving its sync states).
    fn drop_link(&mut self, link: u64, save: bool) {
        if let Some(l) = self.links.remove(&link) {
            self.relay.sessions.remove(&l.session);
            if save {
                self.relay
                    .push(l.session, Input::Disconnect { id: l.session }, self.now);
            }
            self.relay.core_of.remove(&l.session);
        }
    }

    /// The network cuts a link: both sides see it.
    fn cut(&mut self, link: u64) {
        let Some(device) = self.links.get(&link).map(|l| l.device) else {
            return;
        };
        self.report.cuts += 1;
        self.drop_link(link, true);
        self.devices[device].link = None;
        self.handle(
            device,
            Event::Disconnected(Disconnect::Failed("connection reset".into())),
        );
    }

    /// A frame reaches the relay: its session handles it at once (as the connection task
    /// does), and its actions join the relay core's queue for the next turn.
    fn deliver_to_relay(&mut self, link: u64, bytes: &[u8]) {
        let now = self.now;
        let Some(session_id) = self.links.get(&link).map(|l| l.session) else {
            return;
        };
        let Some((session, _)) = self.relay.sessions.get_mut(&session_id) else {
            return;
        };
        let out = session.handle_frame(bytes, now);
        self.session_output(link, session_id, out);
    }

    /// Device `i`'s connection gets a refreshed token with `grants` (same identity). False
    /// when it has no connection (a new one starts with every grant).
    fn refresh_grants(&mut self, i: usize, grants: Grants) -> bool {
        let Some(link) = self.devices[i].link else {
            return false;
        };
        let Some(device) = self.devices[i].store.as_ref().map(Store::device_id) else {
            return false;
        };
        let Some((session, _)) = self.relay.sessions.get_mut(&link) else {
            return false;
        };
        let out = session.handle_token_verified(Ok(verified(sim_identity(device), grants)));
        self.session_output(link, link, out);
        true
    }

    /// Carries out what a session's input produced: its messages go on the link, its actions
    /// into the relay core's queue, its close to the device.
    fn session_output(&mut self, link: u64, session_id: SessionId, out: SessionOutput) {
        let now = self.now;
        let Some((session, _)) = self.relay.sessions.get(&session_id) else {
            return;
        };
        // Frames are compressed as the real relay does, once the session has negotiated it.
        let compression = session.compression();
        for message in out.send {
            self.enqueue(link, false, frame::encode_with(&message, compression));
        }
        for action in out.actions {
            if matches!(action, Action::VerifyToken(_) | Action::ClientError(_)) {
                continue;
            }
            self.relay.push(
                session_id,
                Input::Action {
                    id: session_id,
                    action,
                },
                now,
            );
        }
        if let Some(close) = out.close {
            self.close_link(link, close.code, close.reason);
        }
    }

    /// Puts on the links the paced frames whose time has come, link by link in order.
    fn release_paced(&mut self, links: &[u64]) {
        let now = self.now;
        for &link in links {
            let Some((session, _)) = self.relay.sessions.get_mut(&link) else {
                continue;
            };
            if session
                .downlink()
                .next_release_ms()
                .is_none_or(|at| at > now)
            {
                continue;
            }
            for frame in session.release(now) {
                if !frame.bytes.is_empty() {
                    self.enqueue_counted(link, false, frame.bytes, Some(frame.counted));
                }
            }
        }
    }

    /// Closes a closing link once the device has received everything queued on it.
    fn finish_closing(&mut self, link: u64) {
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        if l.to_device.is_empty()
            && let Some((code, reason)) = l.closing.take()
        {
            self.close_link(link, code, reason);
        }
    }

    /// The relay closes a link with `code`: the device sees the close.
    fn close_link(&mut self, link: u64, code: u16, reason: String) {
        let device = self.links.get(&link).map(|l| l.device);
        self.drop_link(link, true);
        if let Some(device) = device {
            self.devices[device].link = None;
            self.handle(
                device,
                Event::Disconnected(Disconnect::Closed { code, reason }),
            );
        }
    }

    /// One turn of the relay core: everything queued since the last turn, its outputs carried
    /// out as the server's hub thread does.
    fn poll_relay(&mut self) -> Result<(), String> {
        for core in 0..self.relay.cores.len() {
            self.poll_core(core)?;
        }
        Ok(())
    }

    /// One turn of core `core`; with several cores, what it committed is then announced to
    /// the others.
    fn poll_core(&mut self, core: usize) -> Result<(), String> {
        if self.relay.cores[core].remote_backlog() && self.relay.cores[core].is_idle() {
            self.relay.cores[core].push(Input::RemoteChanges(Vec::new()), self.now);
        }
        if self.relay.cores[core].is_idle() {
            return Ok(());
        }
        let outputs = self.relay.cores[core].poll(&Backlogs(&self.links));
        if self.relay.shared() {
            self.announce(core);
        }
        for output in outputs {
            match output {
                CoreOutput::Send {
                    to,
                    message,
                    counted,
                    lane,
                } => {
                    // The session encodes (compressed once negotiated) and paces, as on the
                    // server.
                    let now = self.now;
                    let Some((session, _)) = self.relay.sessions.get_mut(&to) else {
                        continue;
                    };
                    let delivered = session.deliver(message, lane, counted, now);
                    for action in delivered.actions {
                        self.relay.push(to, Input::Action { id: to, action }, now);
                    }
                    for frame in delivered.frames {
                        // A frame with no bytes only gives its counted bytes back.
                        if !frame.bytes.is_empty() {
                            self.enqueue_counted(to, false, frame.bytes, Some(frame.counted));
                        }
                    }
                }
                CoreOutput::Close { to, code, reason } => {
                    if let Some(link) = self.links.get_mut(&to) {
                        link.closing = Some((code, reason));
                    }
                    self.finish_closing(to);
                }
                CoreOutput::Failed { session, reason } => {
                    return Err(format!("the relay failed for session {session}: {reason}"));
                }
            }
        }
        Ok(())
    }

    /// What the storage moved since last looked at (core `from` committed it) goes to every
    /// other core, each after a delay of its own; during the chaos one in ten is lost (the
    /// next resync makes up for it).
    fn announce(&mut self, from: usize) {
        let mut moved = Vec::new();
        for (tenant, collection, seq) in self.relay.storage.collection_seqs().unwrap_or_default() {
            let key = (tenant.clone(), collection.clone());
            if self.relay.reached.get(&key) != Some(&seq) {
                self.relay.reached.insert(key, seq);
                moved.push((tenant, collection, seq));
            }
        }
        if moved.is_empty() {
            return;
        }
        for core in 0..self.relay.cores.len() {
            if core == from {
                continue;
            }
            if self.faults && self.rng.u8(0..10) == 0 {
                self.report.announcements_lost += 1;
                continue;
            }
            let due = self.now + self.rng.u64(0..=200);
            let queue = &mut self.relay.announcements[core];
            // Notifications arrive in commit order.
            let due = queue.back().map_or(due, |(last, _)| due.max(*last));
            queue.push_back((due, moved.clone()));
        }
    }

    /// Hands every core the announcements due now, and its resync when due.
    fn deliver_announcements(&mut self) {
        for core in 0..self.relay.cores.len() {
            while self.relay.announcements[core]
                .front()
                .is_some_and(|(due, _)| *due <= self.now)
            {
                let (_, moved) = self.relay.announcements[core].pop_front().expect("checked");
                self.report.announcements_heard += 1;
                self.relay.cores[core].push(Input::RemoteChanges(moved), self.now);
            }
            if self.relay.resync_at[core] <= self.now {
                self.relay.resync_at[core] = self.now + SIM_RESYNC_MS;
                self.relay.cores[core].push(Input::RemoteResync, self.now);
            }
        }
    }

    fn observe_acks(&mut self, bytes: &[u8]) {
        match frame::decode(bytes, usize::MAX) {
            Ok(Message::Ack(ack)) => {
                for item in ack.items {
                    self.acked
                        .entry(item.doc)
                        .or_default()
                        .extend(item.heads.as_slice().iter().map(|h| ChangeHash(h.0)));
                }
            }
            Ok(Message::Plan(plan)) => self.report.deferred += plan.deferred.len() as u64,
            _ => {}
        }
    }

    fn chaos(&mut self, chaos: Chaos) {
        match chaos {
            Chaos::Write => {
                let i = self.rng.usize(0..self.devices.len());
                self.write(i);
            }
            Chaos::Cut => {
                let links: Vec<u64> = self.links.keys().copied().collect();
                if !links.is_empty() {
                    let link = links[self.rng.usize(0..links.len())];
                    self.cut(link);
                }
            }
            Chaos::Partition(ms) => {
                let i = self.rng.usize(0..self.devices.len());
                self.devices[i].partitioned_until = self.now + ms;
                if let Some(link) = self.devices[i].link {
                    self.cut(link);
                }
            }
            Chaos::Backup => self.relay.backup = Some(self.relay.storage.backup()),
            Chaos::Hostile => self.hostile(),
            Chaos::RestoreBackup => {
                // Often a device has just turned to evicting half its content, so keeping
                // its own changes apart: they must come back to the restored relay.
                let running: Vec<usize> = (0..self.devices.len())
                    .filter(|&i| self.devices[i].engine.is_some())
                    .collect();
                if self.faults
                    && self.relay.backup.is_some()
                    && !running.is_empty()
                    && self.rng.u8(0..3) == 0
                {
                    let i = running[self.rng.usize(0..running.len())];
                    let content: u64 = self.devices[i]
                        .store
                        .as_ref()
                        .and_then(|s| s.list(&Collection::new(COLLECTION).expect("valid")).ok())
                        .unwrap_or_default()
                        .iter()
                        .map(|info| info.stored_bytes)
                        .sum();
                    self.evict_from(i, content / 2);
                }
                // A device that evicted a document's content kept its own changes to it apart
                // (unless its storage budget could not hold them): those must come back to a
                // relay restored from an older backup.
                let collection = Collection::new(COLLECTION).expect("valid");
                for (i, d) in self.devices.iter().enumerate() {
                    let Some(store) = d.store.as_ref() else {
                        continue;
                    };
                    for info in store.list(&collection).unwrap_or_default() {
                        if !info.evicted {
                            continue;
                        }
                        if info.kept_bytes > 0 {
                            self.report.evicted_at_restore += 1;
                            continue;
                        }
                        self.report.released_at_restore += 1;
                        let written = d.written.get(&info.id).cloned().unwrap_or_default();
                        self.released_at_restore
                            .entry((i, info.id))
                            .or_default()
                            .extend(written);
                    }
                }
                if let Some(backup) = self.relay.backup.take() {
                    self.report.restores += 1;
                    for core in 0..self.relay.cores.len() {
                        self.crash_core(core);
                    }
                    // The restored relays serve the backup, in epochs of their own.
                    let stats = self.relay.crashed_stats;
                    self.relay =
                        Relay::start(backup, self.config.relays, self.config.outbox, self.now);
                    self.relay.crashed_stats = stats;
                    // Often a device also turns to evicting all it can as it reconnects: it
                    // must not evict what the restored relay lost (it learns of the loss
                    // first). (Only while the chaos lasts: then every profile is reset.)
                    if self.faults && !running.is_empty() && self.rng.u8(0..3) == 0 {
                        let i = running[self.rng.usize(0..running.len())];
                        self.report.restores_with_eviction += 1;
                        self.evict_from(i, 0);
                    }
                }
            }
            Chaos::RelayCrash => {
                self.report.relay_crashes += 1;
                self.crash_relay();
            }
            Chaos::Narrow(i) => {
                let archive = Collection::new("archive").expect("valid");
                let narrow = CollectionSet::Only(std::collections::BTreeSet::from([archive]));
                if self.refresh_grants(
                    i,
                    Grants {
                        read: narrow.clone(),
                        write: narrow,
                    },
                ) {
                    self.report.grant_changes += 1;
                }
            }
            Chaos::Profile(i) => {
                if self.devices[i].engine.is_some() {
                    let bandwidth =
                        |rng: &mut fastrand::Rng| rng.bool().then(|| rng.u64(2_000..=200_000));
                    let profile = syncline::Profile {
                        metered: self.rng.bool(),
                        download_bytes_per_s: bandwidth(&mut self.rng),
                        upload_bytes_per_s: bandwidth(&mut self.rng),
                        realtime: self.rng.u8(0..4) != 0,
                        metered_max_doc_bytes: self.rng.bool().then(|| self.rng.u64(50..=2_000)),
                        storage_budget_bytes: self.rng.bool().then(|| self.rng.u64(0..=4_000)),
                        ..crate::profile(DeviceClass::Phone)
                    };
                    self.report.profile_changes += 1;
                    self.handle(i, Event::Profile(profile));
                }
            }
            Chaos::Subscribe(i) => {
                if self.devices[i].engine.is_some() {
                    let subscription = CollectionSubscription {
                        priority: Priority::ALL[self.rng.usize(0..4)],
                        mode: if self.rng.bool() {
                            SyncMode::OnDemand
                        } else {
                            SyncMode::Eager
                        },
                        ..sim_subscription()
                    };
                    self.report.subscription_changes += 1;
                    self.handle(i, Event::Subscriptions(vec![subscription]));
                }
            }
            Chaos::Presence(i) => {
                let connected = self.devices[i]
                    .engine
                    .as_ref()
                    .is_some_and(Engine::is_connected);
                let store = self.devices[i].store.clone();
                let docs = store
                    .map(|s| s.list(&Collection::new(COLLECTION).expect("valid")))
                    .transpose()
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                if connected && !docs.is_empty() {
                    let doc = docs[self.rng.usize(0..docs.len())].id.clone();
                    let payload = self.rng.u64(..).to_le_bytes().to_vec();
                    self.report.ephemerals_sent += 1;
                    self.handle(i, Event::Ephemeral { doc, payload });
                }
            }
            Chaos::Restore(i) => {
                if self.refresh_grants(i, all_grants())
                    && let Some(link) = self.devices[i].link
                {
                    self.cut(link);
                }
            }
            Chaos::DeviceCrash => {
                self.report.device_crashes += 1;
                let i = self.rng.usize(0..self.devices.len());
                if let Some(link) = self.devices[i].link.take() {
                    self.drop_link(link, true);
                }
                let old = std::mem::replace(&mut self.devices[i], Device::placeholder());
                let written = old.written.clone();
                let partitioned_until = old.partitioned_until;
                let id = old.id;
                let dir = old.close();
                let mut reopened = Device::open(Some(dir), id, &self.clock, self.strategy.clone());
                reopened.written = written;
                reopened.partitioned_until = partitioned_until;
                self.devices[i] = reopened;
                self.handle(i, Event::Start);
            }
        }
    }

    /// Device `i` keeps the collection on demand within `budget` bytes of content.
    fn evict_from(&mut self, i: usize, budget: u64) {
        let subscription = CollectionSubscription {
            mode: SyncMode::OnDemand,
            ..sim_subscription()
        };
        self.handle(i, Event::Subscriptions(vec![subscription]));
        let profile = syncline::Profile {
            storage_budget_bytes: Some(budget),
            ..crate::profile(DeviceClass::Phone)
        };
        self.handle(i, Event::Profile(profile));
    }

    /// Counts the resolutions in the converged documents, and with a strategy, checks that no
    /// conflict between scalar values is left on any device.
    fn check_resolved(&mut self) -> Result<(), String> {
        let collection = Collection::new(COLLECTION).expect("valid");
        for (i, device) in self.devices.iter().enumerate() {
            let Some(store) = device.store.as_ref() else {
                continue;
            };
            for info in store.list(&collection).map_err(|e| e.to_string())? {
                let Ok(doc) = store.document(&info.id) else {
                    continue;
                };
                if i == 0 {
                    let history = doc.history().map_err(|e| e.to_string())?;
                    self.report.resolutions += history
                        .iter()
                        .filter(|c| {
                            c.message
                                .as_deref()
                                .is_some_and(|m| m.starts_with("resolve conflict ("))
                        })
                        .count() as u64;
                }
                if self.strategy.is_some() {
                    let left = doc.all_conflicts().map_err(|e| e.to_string())?;
                    if let Some(c) = left.iter().find(|c| c.values.iter().all(|v| !v.object)) {
                        return Err(format!(
                            "device {i} kept a conflict under {:?}: {c:?}",
                            self.strategy
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// One random local operation on device `i`: create a document, or put a map key, insert
    /// into a list, splice text or increment a counter in one it holds.
    fn write(&mut self, i: usize) {
        let collection = Collection::new(COLLECTION).expect("valid");
        let store = self.devices[i].store.clone().expect("running");
        // An app writes to documents whose content is here (an evicted one is fetched first),
        // and not to one still waiting for its own kept changes (the write would fail with
        // `AwaitingOwnChanges`).
        let docs: Vec<_> = store
            .list(&collection)
            .unwrap_or_default()
            .into_iter()
            .filter(|info| !info.evicted && info.kept_bytes == 0)
            .collect();
        let kind = self.rng.u8(0..5);
        let value = self.rng.i64(0..1000);
        let doc = if docs.is_empty() || kind == 0 {
            let initial = Value::from_json(&serde_json::json!({"list": [], "count": 0}));
            let id = DocId::new(collection.clone(), format!("d{:016x}", self.rng.u64(..)))
                .expect("a valid id");
            match store.create_at(id, initial, Priority::Normal) {
                Ok(doc) => {
                    let _ = doc.transact(None, |tx| {
                        tx.put("text", Value::Text(String::new()))?;
                        tx.put("count", Value::Counter(0))
                    });
                    doc
                }
                Err(e) => panic!("create failed: {e}"),
            }
        } else {
            let id = docs[self.rng.usize(0..docs.len())].id.clone();
            let doc = store.document(&id).expect("listed");
            let position = self.rng.usize(0..8);
            let key = format!("k{}", self.rng.u8(0..4));
            let result = doc.transact(None, |tx| match kind {
                1 => tx.put(key.as_str(), value),
                2 => {
                    let len = match tx.get("list")? {
                        Some(Value::List(items)) => items.len(),
                        _ => return tx.put("list", Value::List(vec![Value::Int(value)])),
                    };
                    tx.insert(
                        syncline::Path::root().key("list").index(position.min(len)),
                        value,
                    )
                }
                3 => {
                    let len = match tx.get("text")? {
                        Some(Value::Text(text)) => text.chars().count(),
                        _ => return tx.put("text", Value::Text(format!("{value}"))),
                    };
                    tx.splice_text("text", position.min(len), 0, &format!("{value} "))
                }
                _ => match tx.get("count")? {
                    Some(Value::Counter(_)) => tx.increment("count", 1),
                    _ => tx.put("count", Value::Counter(1)),
                },
            });
            if let Err(e) = result {
                panic!("write failed: {e}");
            }
            doc
        };
        self.report.writes += 1;
        let heads = doc.heads().expect("readable");
        self.devices[i]
            .written
            .entry(doc.id().clone())
            .or_default()
            .extend(heads.as_slice().iter().copied());
        self.handle(i, Event::LocalChanges(vec![doc.id().clone()]));
    }

    /// The relay's documents, loaded from storage.
    fn relay_docs(&mut self) -> Result<BTreeMap<DocId, Automerge>, String> {
        let collection = Collection::new(COLLECTION).expect("valid");
        let mut cached = std::mem::take(&mut self.relay_cache);
        let mut docs = BTreeMap::new();
        for summary in self
            .relay
            .storage
            .changed_since(&Tenant::default_tenant(), &collection, 0, usize::MAX)
            .map_err(|e| e.to_string())?
        {
            if let Some(doc) = cached.remove(&summary.doc).filter(|doc| {
                let heads: Vec<_> = doc.get_heads().iter().map(|h| Hash(h.0)).collect();
                Heads::new(heads) == summary.heads
            }) {
                docs.insert(summary.doc, doc);
                continue;
            }
            let stored = self
                .relay
                .storage
                .load(&Tenant::default_tenant(), &summary.doc)
                .map_err(|e| e.to_string())?
                .ok_or("listed but not stored")?;
            let mut doc = Automerge::new();
            for chunk in &stored.chunks {
                doc.load_incremental(chunk).map_err(|e| e.to_string())?;
            }
            docs.insert(summary.doc, doc);
        }
        Ok(docs)
    }

    /// True once every device holds every relay document at the relay's heads and nothing
    /// is in flight; an error if something written or acknowledged is missing at that point.
    fn converged(&mut self) -> Result<bool, String> {
        if self
            .links
            .values()
            .any(|l| !l.to_relay.is_empty() || !l.to_device.is_empty())
        {
            return Ok(false);
        }
        if self
            .devices
            .iter()
            .any(|d| !matches!(d.status, Status::Synced { .. }))
        {
            return Ok(false);
        }
        let relay = self.relay_docs()?;
        let converged = self.converged_with(&relay);
        self.relay_cache = relay;
        converged
    }

    /// [`World::converged`] past its quick checks, against the relay's documents.
    fn converged_with(&mut self, relay: &BTreeMap<DocId, Automerge>) -> Result<bool, String> {
        let collection = Collection::new(COLLECTION).expect("valid");
        for (i, d) in self.devices.iter().enumerate() {
            let store = d.store.as_ref().expect("running");
            let mut listed = store.list(&collection).map_err(|e| e.to_string())?;
            // A document this device left to the relay alone, which a restore then lost
            // whole: the admitted loss, listed here as evicted for good.
            listed.retain(|info| {
                !(info.evicted
                    && !relay.contains_key(&info.id)
                    && self.released_at_restore.contains_key(&(i, info.id.clone())))
            });
            if listed.len() != relay.len() {
                return Ok(false);
            }
            for info in listed {
                if info.evicted {
                    return Ok(false);
                }
                let Some(at_relay) = relay.get(&info.id) else {
                    return Ok(false);
                };
                let heads = store
                    .document(&info.id)
                    .and_then(|doc| doc.heads())
                    .map_err(|e| e.to_string())?;
                if heads.as_slice() != at_relay.get_heads().as_slice() {
                    return Ok(false);
                }
            }
            if !store
                .pending_documents()
                .map_err(|e| e.to_string())?
                .is_empty()
            {
                return Ok(false);
            }
        }
        // Converged: now nothing written or acknowledged may be missing.
        for (i, d) in self.devices.iter().enumerate() {
            for (doc, hashes) in &d.written {
                let released = self.released_at_restore.get(&(i, doc.clone()));
                let at_relay = relay.get(doc);
                for h in hashes {
                    if at_relay.is_some_and(|d| holds(d, h)) {
                        continue;
                    }
                    if released.is_some_and(|r| r.contains(h)) {
                        self.report.lost_released += 1;
                        continue;
                    }
                    return Err(match at_relay {
                        Some(_) => format!("device {i}'s change {h} to {doc} was lost"),
                        None => format!("device {i} wrote {doc}, which the relay lacks"),
                    });
                }
            }
        }
        for (doc, at_relay) in relay {
            if at_relay
                .get(automerge::ROOT, FORGED)
                .ok()
                .flatten()
                .is_some()
            {
                return Err(format!("a forged change to {doc} was stored"));
            }
        }
        for (doc, hashes) in &self.acked {
            let at_relay = relay.get(doc);
            for h in hashes {
                if at_relay.is_some_and(|d| holds(d, h)) {
                    continue;
                }
                let author = self
                    .devices
                    .iter()
                    .position(|d| d.written.get(doc).is_some_and(|w| w.contains(h)));
                if author.is_some_and(|i| {
                    self.released_at_restore
                        .get(&(i, doc.clone()))
                        .is_some_and(|r| r.contains(h))
                }) {
                    self.report.lost_released += 1;
                    continue;
                }
                return Err(match at_relay {
                    Some(_) => format!("acknowledged change {h} to {doc} was lost"),
                    None => format!("{doc} was acknowledged but is gone"),
                });
            }
        }
        Ok(true)
    }

    fn describe(&mut self) -> String {
        let statuses: Vec<String> = self
            .devices
            .iter()
            .map(|d| {
                format!(
                    "{:?} {:?} link {:?} wake {:?} connect {:?}",
                    d.status, d.engine, d.link, d.wake_at, d.connect_at
                )
            })
            .collect();
        // What each device lacks or differs in, against the relay.
        let relay = self.relay_docs().unwrap_or_default();
        let collection = Collection::new(COLLECTION).expect("valid");
        let mut differences = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            let Some(store) = d.store.as_ref() else {
                continue;
            };
            for (id, doc) in &relay {
                let here = store.document(id).and_then(|d| d.heads());
                match here {
                    Ok(heads) if heads.as_slice() == doc.get_heads().as_slice() => {}
                    Ok(heads) => {
                        // Which side lacks what: the device the relay's heads, or the relay
                        // the device's.
                        let relay_lacks =
                            heads.as_slice().iter().filter(|h| !holds(doc, h)).count();
                        let here: HashSet<ChangeHash> = store
                            .document(id)
                            .and_then(|d| d.history())
                            .map(|h| h.into_iter().map(|c| c.hash).collect())
                            .unwrap_or_default();
                        let device_lacks =
                            doc.get_heads().iter().filter(|h| !here.contains(h)).count();
                        let pending = store.pending_documents().is_ok_and(|p| p.contains(id));
                        let acked = heads
                            .as_slice()
                            .iter()
                            .filter(|h| {
                                self.acked
                                    .get(id)
                                    .is_some_and(|a| a.contains(&ChangeHash(h.0)))
                            })
                            .count();
                        differences.push(format!(
                            "device {i}: {id} differs (the relay lacks {relay_lacks} of the \
                             device's heads, the device {device_lacks} of the relay's; \
                             pending on the device: {pending}; device's heads acknowledged: \
                             {acked})"
                        ));
                    }
                    Err(_) => differences.push(format!("device {i}: {id} missing")),
                }
            }
            let deferred = store.deferred().unwrap_or_default();
            for d in &deferred {
                differences.push(format!("device {i}: {} deferred ({:?})", d.doc, d.reason));
            }
            let deferred = deferred.len();
            let listed = store.list(&collection).map(|l| l.len()).unwrap_or(0);
            if listed != relay.len() || deferred > 0 {
                differences.push(format!(
                    "device {i}: {listed} documents of {}, {deferred} deferred",
                    relay.len()
                ));
            }
        }
        format!(
            "t={} ms, {} relay(s), statuses {statuses:?}, links {}, {}",
            self.now - 1_000_000,
            self.relay.cores.len(),
            self.links.len(),
            differences.join("; ")
        )
    }
}

enum Chaos {
    Write,
    Cut,
    Partition(u64),
    RelayCrash,
    /// A hostile client connects and sends what the relay must refuse: changes forged under
    /// honest devices' ids, made-up positions with bogus receipts, floods of profiles and
    /// ephemerals, opening messages for made-up documents, garbage, inputs from the `frame`
    /// fuzz target's committed corpus; then it goes.
    Hostile,
    /// A backup of the relay's storage is taken now...
    Backup,
    /// ...and the relay is restored from it (losing what it acknowledged since).
    RestoreBackup,
    DeviceCrash,
    /// A refreshed token narrows device `i`'s grants to a collection it does not use: its
    /// writes are refused and nothing of `notes` reaches it, until `Restore`.
    Narrow(usize),
    /// A refreshed token gives device `i` its grants back, and the device reconnects (as an
    /// app does after a refused write) so that what was refused is sent again.
    Restore(usize),
    /// Device `i` declares a random profile: metered or not, bandwidths (paced both ways),
    /// periodic or realtime, its own metered threshold.
    Profile(usize),
    /// Device `i` subscribes to the collection eagerly or on demand, at a random priority.
    Subscribe(usize),
    /// Device `i`, if connected, sends an ephemeral message (presence) on a document it
    /// holds: the others connected on it get it, with its sender.
    Presence(usize),
}

/// The committed corpus of the `frame` fuzz target (`fuzz/corpus/frame/`), sorted by file
/// name, read once per process; empty where the tree has none.
pub fn fuzz_corpus() -> &'static [Vec<u8>] {
    static CORPUS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|path| std::fs::read(path).ok())
            .collect()
    })
}

/// The subscription every simulated device starts with (and returns to when the chaos ends).
fn sim_subscription() -> CollectionSubscription {
    CollectionSubscription {
        collection: Collection::new(COLLECTION).expect("valid"),
        priority: Priority::Normal,
        mode: SyncMode::Eager,
    }
}

impl Device {
    /// Opens (or reopens, after a crash) device `id`'s store in `dir`, on the world's clock.
    fn open(
        dir: Option<tempfile::TempDir>,
        id: DeviceId,
        clock: &Arc<AtomicU64>,
        strategy: Option<syncline::ConflictStrategy>,
    ) -> Self {
        let dir = dir.unwrap_or_else(crate::memory_temp_dir);
        let clock = Arc::clone(clock);
        let store = Store::open_with(
            dir.path().join("store.db"),
            StoreOptions {
                durability: syncline::Durability::Normal,
                clock: Arc::new(move || i64::try_from(clock.load(Ordering::Relaxed)).unwrap_or(0)),
                device_id: Some(id),
                ..StoreOptions::default()
            },
        )
        .expect("open the device store");
        let local = strategy.as_ref().map(|_| {
            let docs: Arc<std::sync::Mutex<Vec<DocId>>> = Arc::default();
            let sink = Arc::clone(&docs);
            let watching = store.watch_all(move |event| {
                if event.origin == syncline::ChangeOrigin::Local {
                    sink.lock().expect("lock").push(event.doc_id.clone());
                }
            });
            (docs, watching)
        });
        if let Some(strategy) = strategy {
            store
                .set_conflict_strategy(&Collection::new(COLLECTION).expect("valid"), Some(strategy))
                .expect("set the conflict strategy");
        }
        let config = crate::engine_config("sim", vec![sim_subscription()]);
        let seed = u64::from_le_bytes(
            store.device_id().as_bytes()[..8]
                .try_into()
                .expect("16 bytes"),
        );
        Self {
            id,
            engine: Some(Engine::new(store.clone(), config, seed)),
            store: Some(store),
            dir,
            wake_at: None,
            link: None,
            connect_at: None,
            partitioned_until: 0,
            status: Status::Offline,
            written: HashMap::new(),
            local,
        }
    }

    fn placeholder() -> Self {
        Self {
            id: DeviceId::from_bytes([0; 16]),
            dir: crate::memory_temp_dir(),
            store: None,
            engine: None,
            wake_at: None,
            link: None,
            connect_at: None,
            partitioned_until: 0,
            status: Status::Offline,
            written: HashMap::new(),
            local: None,
        }
    }

    /// Drops the engine and the store (the crash), keeping the files.
    fn close(mut self) -> tempfile::TempDir {
        self.engine = None;
        self.store = None;
        self.dir
    }
}

/// Relay limits that stay out of the simulation's way.
/// Every collection, to read and to write.
pub fn all_grants() -> Grants {
    Grants {
        read: CollectionSet::All,
        write: CollectionSet::All,
    }
}

/// A verified token for `identity` with `grants` that does not expire within a run.
pub fn verified(identity: Identity, grants: Grants) -> Verified {
    Verified {
        identity,
        grants,
        expires_at: u64::MAX / 2000,
        valid_until: u64::MAX / 2000,
    }
}

/// Relay limits no simulated device reaches: the faults are the network's, not the limits'.
pub fn relaxed_limits() -> Limits {
    Limits {
        max_frame_bytes: 16 << 20,
        max_frames_per_s: 1_000_000,
        max_bytes_per_s: 1 << 40,
        max_docs_per_subscription: 100_000,
        idle_timeout_ms: 3_600_000,
    }
}

/// `Sync` and `Ack` frames: the ones a duplicate cannot confuse.
fn is_data(bytes: &[u8]) -> bool {
    matches!(
        frame::decode(bytes, usize::MAX),
        Ok(Message::Sync(_) | Message::Ack(_))
    )
}

/// Whether `doc` holds the change `hash` (asked of its change graph: building the change with
/// `get_change_by_hash` cost the simulation a twentieth of its time).
fn holds(doc: &Automerge, hash: &ChangeHash) -> bool {
    doc.get_missing_deps(std::slice::from_ref(hash)).is_empty()
}
