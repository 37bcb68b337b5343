//! The hub thread: it moves the connections' commands into the [`RelayCore`] and the core's
//! outputs into the connections' outboxes, and measures each outbox for the core's
//! slow-consumer decisions. It runs on a thread of its own because storage blocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use syncline_protocol::Message;
use tokio::sync::mpsc;

use super::{HUB_QUEUE, HubCommand, Metrics};
use crate::hub::SessionId;
use crate::relay_core::{Backlog, Input, Output as CoreOutput, Queued, RelayCore};
use crate::session::Action;
use crate::storage::Storage;

/// A connection's outbox as the hub thread sees it: bounded in messages by the channel and in
/// bytes by `queued`, which the connection lowers as it takes messages out.
struct Route {
    /// Each message with the bytes it counts against the bound (0 for an answer to the
    /// session's own request), which the connection gives back when it takes it.
    sender: mpsc::Sender<(Message, usize)>,
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

/// The hub thread: moves commands from the connections into the [`RelayCore`] and its outputs
/// into the connections' outboxes. Every command already queued joins one `poll`, so the core
/// can commit concurrent `Sync` frames together; the decisions (grouping, routing, grant
/// filtering, slow consumers) are the core's.
pub(super) fn run_hub<S: Storage>(
    mut core: RelayCore<S>,
    mut commands: mpsc::Receiver<HubCommand>,
    metrics: &Metrics,
) {
    let mut routes: HashMap<SessionId, Route> = HashMap::new();
    let mut stopping = false;
    while !stopping {
        let Some(first) = commands.blocking_recv() else {
            break;
        };
        let mut carries_sync = false;
        let mut next = Some(first);
        // A turn takes what is queued, at most what a full queue holds.
        let mut taken = 0;
        while let Some(command) = next.take() {
            taken += 1;
            match command {
                HubCommand::Shutdown => {
                    stopping = true;
                    break;
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
                    core.push(
                        Input::Connect {
                            id,
                            identity: verified.identity,
                            grants: verified.grants,
                        },
                        now_ms,
                    );
                }
                HubCommand::Disconnect { id, now_ms } => {
                    // Its span stays for the log of what the core reports of it.
                    if let Some(route) = routes.get_mut(&id) {
                        route.gone = true;
                    }
                    core.push(Input::Disconnect { id }, now_ms);
                }
                HubCommand::Action { id, action, now_ms } => {
                    carries_sync |= matches!(action, Action::Sync(_));
                    core.push(Input::Action { id, action }, now_ms);
                }
            }
            if taken < HUB_QUEUE {
                next = commands.try_recv().ok();
            }
        }
        let started = Instant::now();
        let outputs = core.poll(&Outboxes(&routes));
        if carries_sync {
            metrics
                .sync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        apply_outputs(&mut routes, outputs, metrics);
        routes.retain(|_, route| !route.gone);
    }
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
fn apply_outputs(
    routes: &mut HashMap<SessionId, Route>,
    outputs: Vec<CoreOutput>,
    metrics: &Metrics,
) {
    for output in outputs {
        match output {
            CoreOutput::Send {
                to,
                message,
                counted,
            } => {
                if let Message::Ack(ack) = &message {
                    metrics
                        .changes_stored
                        .inc_by(ack.items.iter().filter(|i| i.seq.is_some()).count() as u64);
                }
                let Some(route) = routes.get(&to) else {
                    continue;
                };
                match route.sender.try_send((message, counted)) {
                    Ok(()) => {
                        route.queued.fetch_add(counted, Ordering::Relaxed);
                    }
                    // The core admits a message only with room for it; a gone connection
                    // needs nothing more.
                    Err(_) => {
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
