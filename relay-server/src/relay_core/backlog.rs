//! Slow consumers: how far behind a connection may fall before it is closed to resync from
//! storage, instead of being buffered without bound.
//!
//! The shell measures each connection's backlog (what the core gave it to send and the
//! connection has not taken yet) and reports it through [`Backlog`]; the core decides. What
//! the sessions whose requests a turn handles get in that turn (their plan, their replies, and
//! the changes of the other senders committed in the same group) is not counted against them:
//! it is bounded by what they asked for, and counting it would stop a large initial sync.
//! Fan-out to sessions that asked for nothing counts. The message bound applies to everything.

use std::collections::HashMap;

use syncline_protocol::Message;

use crate::hub::SessionId;

/// How much one connection has queued and not yet taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued {
    /// Messages queued.
    pub messages: usize,
    /// Their counted bytes ([`approx_size`]; 0 for answers to the session's own requests).
    pub bytes: usize,
}

/// What the shell reports of its connections' queues (the core reads, never writes, it).
pub trait Backlog {
    /// What session `id`'s connection has queued and not taken.
    fn queued(&self, id: SessionId) -> Queued;
}

/// How much a connection may have queued before it counts as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Messages queued at most (the shell's queue holds at least this many).
    pub messages: usize,
    /// Counted bytes queued at most; a single larger message is still queued when the outbox
    /// is empty.
    pub bytes: usize,
}

/// The approximate size of a message on the wire, for the byte bound.
pub fn approx_size(message: &Message) -> usize {
    match message {
        Message::Sync(sync) => sync.items.iter().map(|i| i.message.len() + 64).sum(),
        Message::Plan(plan) => 64 + 64 * (plan.send.len() + plan.deferred.len()),
        Message::Ack(ack) => 16 + 96 * ack.items.len(),
        Message::Ephemeral(e) => 96 + e.payload.len(),
        _ => 128,
    }
}

/// The decisions of one `poll`: what the shell already had queued plus what this poll added.
#[derive(Debug, Default)]
pub(super) struct Admission {
    added: HashMap<SessionId, Queued>,
}

impl Admission {
    /// Whether session `to` has more than a quarter of its limits queued.
    pub(super) fn backlogged(
        &self,
        to: SessionId,
        backlog: &impl Backlog,
        limits: OutboxLimits,
    ) -> bool {
        let before = backlog.queued(to);
        let added = self.added.get(&to).copied().unwrap_or_default();
        (before.messages + added.messages) * 4 > limits.messages
            || (before.bytes + added.bytes) * 4 > limits.bytes
    }

    /// Whether `message` may join session `to`'s queue (and counts it), or the session is a
    /// slow consumer. `own` marks an answer to the session's own request.
    pub(super) fn admit(
        &mut self,
        to: SessionId,
        message: &Message,
        own: bool,
        backlog: &impl Backlog,
        limits: OutboxLimits,
    ) -> Option<usize> {
        let before = backlog.queued(to);
        let added = self.added.entry(to).or_default();
        let messages = before.messages + added.messages;
        let bytes = before.bytes + added.bytes;
        let size = if own { 0 } else { approx_size(message) };
        let over_bytes = !own && bytes > 0 && bytes + size > limits.bytes;
        if over_bytes || messages >= limits.messages {
            return None;
        }
        added.messages += 1;
        added.bytes += size;
        Some(size)
    }
}
