//! The relay core, sans I/O: what the relay does between its connections' sessions and its
//! document hub, driven the same way by the server and by the simulation.
//!
//! The shell pushes [`Input`]s (a session connected, a session's authorized [`Action`], a
//! session left) with the time, then calls [`RelayCore::poll`] with the connections' backlog;
//! it gets back [`Output`]s: a message to queue on a connection, a connection to close, a
//! failure to log. The core owns:
//! - **group commit across sessions**: consecutive `Sync` actions in the queue (up to
//!   [`SYNC_GROUP`], stopping at the first other input so each session's order holds) run as
//!   one [`Hub::sync_group`], one storage transaction per tenant;
//! - **fair turns** ([`FairQueue`]): the shell holds what waits per session and feeds the core
//!   one turn at a time, round-robin between tenants and between a tenant's sessions, so a
//!   flood from one connection or tenant never sits in front of another tenant's frames;
//! - **routing** of the hub's deliveries to sessions, with **grant filtering** ([`visible`])
//!   against each session's current grants;
//! - **slow consumers** ([`Backlog`], [`OutboxLimits`]): a connection whose backlog would pass the
//!   [`OutboxLimits`] is closed with `SLOW_CONSUMER` (it resyncs from storage on reconnect);
//! - **panic containment**: a panic in the hub while handling one action is answered with
//!   `INTERNAL` to the sessions involved, and the hub forgets its in-memory documents.
//!
//! It reads no clock and touches no socket, thread or channel; the per-connection protocol
//! logic stays in each connection's [`crate::session::Session`].

mod backlog;
mod fair;
mod visibility;

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;

use syncline_protocol::close_code;
use syncline_protocol::messages::SyncItem;
use syncline_protocol::{Collection, Message};

use crate::auth::{Grants, Identity};
use crate::hub::{Delivery, Hub, HubError, Lane, SessionId};
use crate::session::Action;
use crate::storage::Storage;
use crate::tenant::Tenant;
pub use backlog::{Backlog, OutboxLimits, Queued, approx_size};
pub use fair::FairQueue;
pub use visibility::visible;

/// What a session is told when the relay failed its request.
const REQUEST_FAILED: &str = "the relay could not complete this request";

/// Most `Sync` frames committed together.
pub const SYNC_GROUP: usize = 512;

/// Bytes of Automerge messages after which no more `Sync` frames join a group (the shell's
/// [`FairQueue`] turns): one tenant's turn stays bounded in work, not only in frames.
pub const SYNC_GROUP_BYTES: usize = 32 << 20;

/// Something a connection tells the core.
#[derive(Debug, Clone)]
pub enum Input {
    /// A session opened, authenticated as `identity` with `grants`.
    Connect {
        /// The session.
        id: SessionId,
        /// Who it is.
        identity: Identity,
        /// What it may read and write.
        grants: Grants,
    },
    /// An authorized action of a session ([`crate::session::Output::actions`]).
    Action {
        /// The session.
        id: SessionId,
        /// The action.
        action: Action,
    },
    /// A session's connection ended, however it ended.
    Disconnect {
        /// The session.
        id: SessionId,
    },
    /// Other relays sharing the storage committed in these collections, up to these sequence
    /// numbers ([`Hub::remote_changes`]); empty to go on with a catch-up that yielded
    /// ([`RelayCore::remote_backlog`]).
    RemoteChanges(Vec<(Tenant, Collection, u64)>),
    /// What other relays committed may have gone unannounced (the notification channel was
    /// down): compare every collection with what the hub has seen ([`Hub::remote_resync`]).
    RemoteResync,
}

/// Something the shell must do, returned by [`RelayCore::poll`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Queue `message` on session `to`'s connection. `counted` bytes count against its backlog
    /// until the connection takes the message.
    Send {
        /// The session.
        to: SessionId,
        /// The message, already filtered by the session's grants.
        message: Message,
        /// The bytes it counts against the session's backlog (0 for answers to its own
        /// requests).
        counted: usize,
        /// The connection's lane it takes when paced.
        lane: Lane,
    },
    /// Close session `to`'s connection with `code` (it could not keep up): send it nothing
    /// more. Its `Disconnect` is still expected.
    Close {
        /// The session.
        to: SessionId,
        /// The WebSocket close code.
        code: u16,
        /// Why, for the device.
        reason: String,
    },
    /// Something failed for `session` (it was answered with an `INTERNAL` error where it
    /// asked for something); for the shell's log.
    Failed {
        /// The session.
        session: SessionId,
        /// What failed.
        reason: String,
    },
}

/// What the core has done since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreStats {
    /// Group commits run.
    pub groups: u64,
    /// `Sync` frames they carried.
    pub grouped_frames: u64,
    /// Groups that carried frames of more than one session.
    pub shared_groups: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Messages dropped whole by grant filtering (nothing of them was readable).
    pub filtered: u64,
    /// Changes durably stored and acknowledged (acknowledged items with a sequence number).
    pub changes_stored: u64,
    /// Ephemeral messages not forwarded to a connection that already had a backlog.
    pub ephemerals_dropped: u64,
}

/// The relay core; see the module documentation.
pub struct RelayCore<S> {
    hub: Hub<S>,
    /// Each connected session's current grants; a session closed as a slow consumer is gone
    /// from here (nothing more is sent to it) until its `Disconnect` reaches the hub.
    grants: HashMap<SessionId, Grants>,
    queue: VecDeque<(Input, u64)>,
    limits: OutboxLimits,
    stats: CoreStats,
}

impl<S: Storage> RelayCore<S> {
    /// A core over `hub`, closing connections whose backlog would pass `limits`.
    pub fn new(hub: Hub<S>, limits: OutboxLimits) -> Self {
        Self {
            hub,
            grants: HashMap::new(),
            queue: VecDeque::new(),
            limits,
            stats: CoreStats::default(),
        }
    }

    /// Queues `input`, which happened at `now_ms`; [`RelayCore::poll`] handles it.
    pub fn push(&mut self, input: Input, now_ms: u64) {
        self.queue.push_back((input, now_ms));
    }

    /// True when no input waits for [`RelayCore::poll`].
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The hub (its caches and sessions, for inspection).
    pub fn hub(&self) -> &Hub<S> {
        &self.hub
    }

    /// What the core has done so far.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Handles every queued input in order and returns what the shell must do, in order.
    /// `backlog` reports what each connection has queued and not taken before this call; the
    /// core adds what this call queues.
    pub fn poll(&mut self, backlog: &impl Backlog) -> Vec<Output> {
        let mut out = Vec::new();
        let mut admission = backlog::Admission::default();
        while let Some((input, now_ms)) = self.queue.pop_front() {
            self.handle_input(input, now_ms, &mut out, &mut admission, backlog);
            // Changes the hub dropped with a document it took out of memory go again.
            let notices = self.hub.take_dropped_notices();
            if !notices.is_empty() {
                self.route(notices, &[], &mut out, &mut admission, backlog);
            }
        }
        out
    }

    /// Handles one input (see [`RelayCore::poll`]).
    fn handle_input(
        &mut self,
        input: Input,
        now_ms: u64,
        out: &mut Vec<Output>,
        admission: &mut backlog::Admission,
        backlog: &impl Backlog,
    ) {
        match input {
            Input::Connect {
                id,
                identity,
                grants,
            } => match self.hub.admit(&identity) {
                Ok(()) => {
                    self.grants.insert(id, grants.clone());
                    self.hub.connect(id, identity, grants, now_ms);
                }
                Err(HubError::DeviceOwned) => out.push(Output::Close {
                    to: id,
                    code: close_code::DEVICE_OWNED,
                    reason: HubError::DeviceOwned.to_string(),
                }),
                Err(e) => {
                    out.push(Output::Failed {
                        session: id,
                        reason: format!("could not admit the device: {e}"),
                    });
                    out.push(Output::Close {
                        to: id,
                        code: close_code::GOING_AWAY,
                        reason: "the relay could not admit the device; retry".into(),
                    });
                }
            },
            Input::Disconnect { id } => {
                self.grants.remove(&id);
                if let Err(e) = self.hub.disconnect(id, now_ms) {
                    out.push(Output::Failed {
                        session: id,
                        reason: format!("could not save sync state on disconnect: {e}"),
                    });
                }
            }
            Input::RemoteChanges(moved) => {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.hub.remote_changes(moved, now_ms)
                }));
                self.remote(outcome, out, admission, backlog);
            }
            Input::RemoteResync => {
                let outcome =
                    std::panic::catch_unwind(AssertUnwindSafe(|| self.hub.remote_resync(now_ms)));
                self.remote(outcome, out, admission, backlog);
            }
            Input::Action {
                id,
                action: Action::Sync(items),
            } => {
                let frames = self.gather(id, items);
                self.sync_group(frames, now_ms, out, admission, backlog);
            }
            Input::Action { id, action } => {
                if let Action::GrantsChanged(grants) = &action
                    && let Some(current) = self.grants.get_mut(&id)
                {
                    current.clone_from(grants);
                }
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.hub.handle(id, action, now_ms)
                }));
                let deliveries = match outcome {
                    Ok(Ok(deliveries)) => deliveries,
                    Ok(Err(e)) => {
                        out.push(Output::Failed {
                            session: id,
                            reason: format!("action failed: {e}"),
                        });
                        vec![Delivery::internal(id, REQUEST_FAILED)]
                    }
                    Err(_) => {
                        out.push(Output::Failed {
                            session: id,
                            reason: "action panicked; the session gets an error".into(),
                        });
                        self.hub.forget_documents();
                        vec![Delivery::internal(id, REQUEST_FAILED)]
                    }
                };
                self.route(deliveries, &[id], out, admission, backlog);
            }
        }
    }

    /// Whether other relays' changes wait to be read ([`Hub::remote_backlog`]): the shell then
    /// pushes an empty [`Input::RemoteChanges`] on its next turn.
    pub fn remote_backlog(&self) -> bool {
        self.hub.remote_backlog()
    }

    /// Routes what catching up on other relays' changes produced; a failure is logged (the
    /// collections stay pending) and a panic drops the hub's documents, as for an action.
    fn remote(
        &mut self,
        outcome: Result<Result<Vec<Delivery>, HubError>, Box<dyn std::any::Any + Send>>,
        out: &mut Vec<Output>,
        admission: &mut backlog::Admission,
        backlog: &impl Backlog,
    ) {
        match outcome {
            Ok(Ok(deliveries)) => self.route(deliveries, &[], out, admission, backlog),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read other relays' changes; retried later");
            }
            Err(_) => {
                tracing::error!("reading other relays' changes panicked; documents reloaded");
                self.hub.forget_documents();
            }
        }
    }

    /// The `Sync` frame of session `id` and every `Sync` frame queued right after it (up to
    /// [`SYNC_GROUP`]): the first other input ends the group, so each session's order holds.
    fn gather(&mut self, id: SessionId, items: Vec<SyncItem>) -> Vec<(SessionId, Vec<SyncItem>)> {
        let mut frames = vec![(id, items)];
        while frames.len() < SYNC_GROUP
            && matches!(
                self.queue.front(),
                Some((
                    Input::Action {
                        action: Action::Sync(_),
                        ..
                    },
                    _
                ))
            )
        {
            if let Some((
                Input::Action {
                    id,
                    action: Action::Sync(items),
                },
                _,
            )) = self.queue.pop_front()
            {
                frames.push((id, items));
            }
        }
        frames
    }

    fn sync_group(
        &mut self,
        frames: Vec<(SessionId, Vec<SyncItem>)>,
        now_ms: u64,
        out: &mut Vec<Output>,
        admission: &mut backlog::Admission,
        backlog: &impl Backlog,
    ) {
        let sessions: Vec<SessionId> = frames.iter().map(|(id, _)| *id).collect();
        self.stats.groups += 1;
        self.stats.grouped_frames += sessions.len() as u64;
        if sessions.iter().any(|s| *s != sessions[0]) {
            self.stats.shared_groups += 1;
        }
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.hub.sync_group(frames, now_ms)));
        let deliveries = match outcome {
            Ok(group) => {
                for (session, e) in group.failed {
                    out.push(Output::Failed {
                        session,
                        reason: format!("a sync frame was not committed: {e}"),
                    });
                }
                group.deliveries
            }
            Err(_) => {
                for session in &sessions {
                    out.push(Output::Failed {
                        session: *session,
                        reason: "a sync group panicked; its sessions get an error".into(),
                    });
                }
                self.hub.forget_documents();
                sessions
                    .iter()
                    .map(|s| Delivery::internal(*s, REQUEST_FAILED))
                    .collect()
            }
        };
        self.route(deliveries, &sessions, out, admission, backlog);
    }

    /// Routes deliveries to the sessions still connected: filtered by their grants, admitted
    /// against their backlog, or their connection closed as a slow consumer. `requesters` are
    /// the sessions whose requests these deliveries answer.
    fn route(
        &mut self,
        deliveries: Vec<Delivery>,
        requesters: &[SessionId],
        out: &mut Vec<Output>,
        admission: &mut backlog::Admission,
        backlog: &impl Backlog,
    ) {
        for Delivery { to, message, lane } in deliveries {
            if let Message::Ack(ack) = &message {
                self.stats.changes_stored +=
                    ack.items.iter().filter(|i| i.seq.is_some()).count() as u64;
            }
            let Some(grants) = self.grants.get(&to) else {
                continue;
            };
            let Some(message) = visible(message, grants) else {
                self.stats.filtered += 1;
                continue;
            };
            // Presence is worth nothing late: it never adds to a backlog, so another device's
            // ephemerals cannot push a connection over its slow-consumer limit.
            if matches!(message, Message::Ephemeral(_))
                && admission.backlogged(to, backlog, self.limits)
            {
                self.stats.ephemerals_dropped += 1;
                continue;
            }
            let own = requesters.contains(&to);
            match admission.admit(to, &message, own, backlog, self.limits) {
                Some(counted) => out.push(Output::Send {
                    to,
                    message,
                    counted,
                    lane,
                }),
                None => {
                    self.grants.remove(&to);
                    self.stats.slow_consumers += 1;
                    out.push(Output::Close {
                        to,
                        code: close_code::SLOW_CONSUMER,
                        reason: "too slow: reconnect to resync".into(),
                    });
                }
            }
        }
    }
}
