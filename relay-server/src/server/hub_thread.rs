//! The hub thread: it moves the connections' commands into the [`RelayCore`] and the core's
//! outputs into the connections' outboxes, and measures each outbox for the core's
//! slow-consumer decisions. It runs on a thread of its own because storage blocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use syncline_protocol::{Collection, Message};
use tokio::sync::mpsc;

use super::{HubCommand, Metrics};
use crate::auth::{Grants, Identity};
use crate::hub::{Lane, SessionId};
use crate::relay_core::{
    Backlog, FairQueue, Input, Output as CoreOutput, Queued, RelayCore, SYNC_GROUP,
    SYNC_GROUP_BYTES,
};
use crate::session::Action;
use crate::storage::Storage;
use crate::tenant::Tenant;

/// A connection's outbox as the hub thread sees it: bounded in messages by the channel and in
/// bytes by `queued`, which the connection lowers as it takes messages out.
struct Route {
    /// Each message with the bytes it counts against the bound (0 for an answer to the
    /// session's own request), which the connection gives back when it takes it.
    sender: mpsc::Sender<(Message, usize, Lane)>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// The connection's span (session, device, tenant): the hub thread logs under it.
    span: tracing::Span,
    /// Its `Disconnect` arrived: removed once the turn's outputs are carried out.
    gone: bool,
}

/// The span of session `id`'s connection, for what the hub thread logs about it.
fn span_of(routes: &HashMap<SessionId, Route>, id: SessionId) -> tracing::Span {
    routes
        .get(&id)
        .map_or_else(tracing::Span::none, |r| r.span.clone())
}

/// What waits for its turn on the hub: a command of one session, holding (for an action) its
/// place in the connection's share of the queue until the core has taken it.
enum Waiting {
    Connect {
        identity: Identity,
        grants: Grants,
        now_ms: u64,
    },
    Action {
        action: Action,
        now_ms: u64,
        _place: tokio::sync::OwnedSemaphorePermit,
    },
    Disconnect {
        now_ms: u64,
    },
}

/// The bytes of Automerge messages a `Sync` action carries (it joins a group commit); `None`
/// for every other command.
fn sync_bytes(waiting: &Waiting) -> Option<usize> {
    match waiting {
        Waiting::Action {
            action: Action::Sync(items),
            ..
        } => Some(items.iter().map(|i| i.message.len()).sum()),
        _ => None,
    }
}

/// The hub thread: moves commands from the connections into the [`RelayCore`] and its outputs
/// into the connections' outboxes, one turn at a time. Every command that has arrived waits in
/// a [`FairQueue`]; a turn is the next tenant's next session's command, or a group of `Sync`
/// frames of that tenant's sessions (up to [`SYNC_GROUP`] frames and [`SYNC_GROUP_BYTES`]),
/// which the core commits together. Its outputs go out before the next turn, so an
/// acknowledgement never waits for later work and the connections drain while the hub works
/// on. The decisions (routing, grant filtering, slow consumers) are the core's.
pub(super) fn run_hub<S: Storage>(
    mut core: RelayCore<S>,
    mut commands: mpsc::Receiver<HubCommand>,
    metrics: &Metrics,
) {
    let mut routes: HashMap<SessionId, Route> = HashMap::new();
    // Each session's tenant, from its `Connect` until its `Disconnect` has had its turn.
    let mut tenants: HashMap<SessionId, Tenant> = HashMap::new();
    let mut waiting: FairQueue<Option<Tenant>, Waiting> = FairQueue::new();
    // What the storage's change feed announced (other relays' commits), taken as a turn of
    // its own before the sessions' next one; coalesced, so a flood of commits is one turn.
    let mut remote = Remote::default();
    let mut stopping = false;
    loop {
        if waiting.is_empty() && remote.is_empty() && !core.remote_backlog() {
            if stopping {
                break;
            }
            match commands.blocking_recv() {
                Some(command) => {
                    stopping |= arrive(
                        command,
                        &mut routes,
                        &mut tenants,
                        &mut waiting,
                        &mut remote,
                    );
                }
                None => break,
            }
        }
        // Everything that has arrived waits with the rest, so the turn is chosen among all of
        // it. The queue is bounded by the connections' places (each holds at most
        // HUB_IN_FLIGHT_PER_CONNECTION actions, and a connect and a disconnect).
        while !stopping && let Ok(command) = commands.try_recv() {
            stopping |= arrive(
                command,
                &mut routes,
                &mut tenants,
                &mut waiting,
                &mut remote,
            );
        }
        remote.push_into(&mut core);
        let turn = waiting.next_turn(sync_bytes, SYNC_GROUP, SYNC_GROUP_BYTES);
        let mut syncs = 0;
        for (id, command) in turn {
            match command {
                Waiting::Connect {
                    identity,
                    grants,
                    now_ms,
                } => core.push(
                    Input::Connect {
                        id,
                        identity,
                        grants,
                    },
                    now_ms,
                ),
                Waiting::Action { action, now_ms, .. } => {
                    syncs += usize::from(matches!(action, Action::Sync(_)));
                    core.push(Input::Action { id, action }, now_ms);
                }
                Waiting::Disconnect { now_ms } => {
                    // Its span stays for the log of what the core reports of it.
                    if let Some(route) = routes.get_mut(&id) {
                        route.gone = true;
                    }
                    tenants.remove(&id);
                    core.push(Input::Disconnect { id }, now_ms);
                }
            }
        }
        let stored_before = core.stats().changes_stored;
        let (full_before, corrupt_before, failed_before) = (
            core.hub().storage_full(),
            core.hub().corrupt_documents(),
            core.hub().failed_loads(),
        );
        let started = Instant::now();
        let outputs = core.poll(&Outboxes(&routes));
        if syncs > 0 {
            metrics
                .sync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        metrics
            .changes_stored
            .inc_by(core.stats().changes_stored - stored_before);
        metrics
            .storage_full
            .inc_by(core.hub().storage_full() - full_before);
        metrics
            .corrupt_documents
            .inc_by(core.hub().corrupt_documents() - corrupt_before);
        metrics
            .failed_loads
            .inc_by(core.hub().failed_loads() - failed_before);
        apply_outputs(&mut routes, outputs);
        routes.retain(|_, route| !route.gone);
        let resynced = !core.hub().remote_resync_failed();
        for done in remote.answering.drain(..) {
            let _ = done.send(resynced);
        }
    }
}

/// Other relays' commits announced since the last turn.
#[derive(Default)]
struct Remote {
    /// Per collection, the highest sequence announced.
    moved: HashMap<(Tenant, Collection), u64>,
    /// Resyncs asked for, each waiting to hear whether it worked.
    resync: Vec<tokio::sync::oneshot::Sender<bool>>,
    /// Resyncs handed to the core this turn, answered after it.
    answering: Vec<tokio::sync::oneshot::Sender<bool>>,
}

impl Remote {
    fn is_empty(&self) -> bool {
        self.moved.is_empty() && self.resync.is_empty()
    }

    /// Hands what was announced to the core (and, when a catch-up yielded, asks it to go on).
    fn push_into<S: Storage>(&mut self, core: &mut RelayCore<S>) {
        let now_ms = super::now_ms();
        if !self.resync.is_empty() {
            core.push(Input::RemoteResync, now_ms);
            self.answering.append(&mut self.resync);
        }
        if !self.moved.is_empty() || core.remote_backlog() {
            let mut moved: Vec<(Tenant, Collection, u64)> = self
                .moved
                .drain()
                .map(|((tenant, collection), seq)| (tenant, collection, seq))
                .collect();
            moved.sort();
            core.push(Input::RemoteChanges(moved), now_ms);
        }
    }
}

/// Puts an arrived command in the queue (a `Connect` also opens the session's route, a change
/// feed's announcement joins `remote`); true for `Shutdown`, after which what already waits is
/// finished and nothing more is taken.
fn arrive(
    command: HubCommand,
    routes: &mut HashMap<SessionId, Route>,
    tenants: &mut HashMap<SessionId, Tenant>,
    waiting: &mut FairQueue<Option<Tenant>, Waiting>,
    remote: &mut Remote,
) -> bool {
    let (id, command) = match command {
        HubCommand::Shutdown => return true,
        HubCommand::RemoteChanges(moved) => {
            for (tenant, collection, seq) in moved {
                let reached = remote.moved.entry((tenant, collection)).or_insert(0);
                *reached = (*reached).max(seq);
            }
            return false;
        }
        HubCommand::RemoteResync(done) => {
            remote.resync.push(done);
            return false;
        }
        HubCommand::Connect {
            id,
            verified,
            outbox,
            queued,
            span,
            now_ms,
        } => {
            routes.insert(
                id,
                Route {
                    sender: outbox,
                    queued,
                    span,
                    gone: false,
                },
            );
            tenants.insert(id, verified.identity.tenant.clone());
            (
                id,
                Waiting::Connect {
                    identity: verified.identity,
                    grants: verified.grants,
                    now_ms,
                },
            )
        }
        HubCommand::Action {
            id,
            action,
            now_ms,
            _place,
        } => (
            id,
            Waiting::Action {
                action,
                now_ms,
                _place,
            },
        ),
        HubCommand::Disconnect { id, now_ms } => (id, Waiting::Disconnect { now_ms }),
    };
    // A session's commands all follow its `Connect`; one without (never expected) waits with
    // the sessions of no tenant.
    waiting.push(tenants.get(&id).cloned(), id, command);
    false
}

/// The connections' backlogs as the core reads them: messages in each outbox channel, and the
/// bytes counted for them that the connection has not taken yet.
struct Outboxes<'a>(&'a HashMap<SessionId, Route>);

impl Backlog for Outboxes<'_> {
    fn queued(&self, id: SessionId) -> Queued {
        self.0
            .get(&id)
            .map_or_else(Queued::default, |route| Queued {
                messages: route.sender.max_capacity() - route.sender.capacity(),
                bytes: route.queued.load(Ordering::Relaxed),
            })
    }
}

/// Carries out the core's outputs: queue messages, close slow consumers (dropping the sender
/// ends the connection's inbox, which closes it with `SLOW_CONSUMER`), log failures under the
/// session's span.
fn apply_outputs(routes: &mut HashMap<SessionId, Route>, outputs: Vec<CoreOutput>) {
    for output in outputs {
        match output {
            CoreOutput::Send {
                to,
                message,
                counted,
                lane,
            } => {
                let Some(route) = routes.get(&to) else {
                    continue;
                };
                match route.sender.try_send((message, counted, lane)) {
                    Ok(()) => {
                        route.queued.fetch_add(counted, Ordering::Relaxed);
                    }
                    // A gone connection needs nothing more.
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        routes.remove(&to);
                    }
                    // The core admits a message only with room for it (its message bound is
                    // the channel's capacity): a full channel is a bug, handled as a close.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::error!(
                            parent: &route.span,
                            "outbox full although the core admitted a message: closing"
                        );
                        debug_assert!(false, "the core's message bound exceeds the outbox");
                        routes.remove(&to);
                    }
                }
            }
            CoreOutput::Close { to, .. } => {
                if let Some(route) = routes.remove(&to) {
                    tracing::warn!(
                        parent: &route.span,
                        queued_bytes = route.queued.load(Ordering::Relaxed),
                        "slow consumer: closing it so it resyncs from storage"
                    );
                }
            }
            CoreOutput::Failed { session, reason } => {
                tracing::error!(parent: &span_of(routes, session), %reason, "hub failure");
            }
        }
    }
}
