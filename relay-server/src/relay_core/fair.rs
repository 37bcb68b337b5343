//! Fair turns on the shared hub: what waits for the hub thread, served round-robin between
//! tenants, and between the sessions of a tenant, never in plain arrival order.
//!
//! One hub thread serves every tenant. In arrival order, a flood from one connection (or from
//! the thousands of connections one tenant may hold) sits in front of every other tenant's
//! next frame. [`FairQueue`] keeps one queue per session and serves one turn per tenant in
//! rotation: another tenant's frame waits at most one turn of each tenant with work, whatever
//! those tenants have queued. A session's own inputs keep their order.
//!
//! A turn is one input, or (for inputs that commit together, the `Sync` frames) a group of
//! them taken from the heads of the tenant's sessions, one per session per round, within a
//! count and a byte bound: one storage transaction, as large as one tenant's share allows.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::hub::SessionId;

/// Per-session queues served one tenant turn at a time; see the module documentation.
#[derive(Debug)]
pub struct FairQueue<K, T> {
    /// Tenants with something waiting, in the order of their next turn.
    tenants: VecDeque<K>,
    /// Each waiting tenant's sessions with something waiting, in the order of their next turn.
    rotations: HashMap<K, VecDeque<SessionId>>,
    /// Each session's waiting inputs, in arrival order.
    sessions: HashMap<SessionId, VecDeque<T>>,
    len: usize,
}

impl<K, T> Default for FairQueue<K, T> {
    fn default() -> Self {
        Self {
            tenants: VecDeque::new(),
            rotations: HashMap::new(),
            sessions: HashMap::new(),
            len: 0,
        }
    }
}

impl<K: Clone + Eq + Hash, T> FairQueue<K, T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inputs waiting, in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` behind `session`'s other inputs; `session` belongs to `tenant` (a session
    /// is always pushed with the same tenant).
    pub fn push(&mut self, tenant: K, session: SessionId, item: T) {
        let queue = self.sessions.entry(session).or_default();
        queue.push_back(item);
        self.len += 1;
        if queue.len() > 1 {
            return;
        }
        let rotation = self.rotations.entry(tenant.clone()).or_default();
        rotation.push_back(session);
        if rotation.len() == 1 {
            self.tenants.push_back(tenant);
        }
    }

    /// The next turn: the tenant whose turn it is gives its next session's first input. When
    /// `group` says that input commits with others (`Some(bytes)`), the heads of the tenant's
    /// sessions that `group` also accepts join it, one per session per round, in rotation, up
    /// to `max_items` inputs and until `max_bytes` is reached. Sessions served go to the back of
    /// their tenant's rotation, and the tenant to the back of the tenants'. Empty when nothing
    /// waits.
    pub fn next_turn(
        &mut self,
        group: impl Fn(&T) -> Option<usize>,
        max_items: usize,
        max_bytes: usize,
    ) -> Vec<(SessionId, T)> {
        let Some(tenant) = self.tenants.pop_front() else {
            return Vec::new();
        };
        let Some(mut rotation) = self.rotations.remove(&tenant) else {
            debug_assert!(false, "a waiting tenant has a rotation");
            return Vec::new();
        };
        let mut turn = Vec::new();
        let mut served: Vec<SessionId> = Vec::new();
        if let Some(first) = rotation.pop_front()
            && let Some(item) = self.take(first)
        {
            served.push(first);
            let joins = group(&item);
            turn.push((first, item));
            if let Some(mut bytes) = joins {
                // The others first, this session last: one input per session per round.
                let mut candidates: Vec<SessionId> = rotation.iter().copied().collect();
                candidates.push(first);
                let mut progress = true;
                while progress && turn.len() < max_items.max(1) && bytes < max_bytes {
                    progress = false;
                    for &session in &candidates {
                        if turn.len() >= max_items.max(1) || bytes >= max_bytes {
                            break;
                        }
                        let Some(size) = self
                            .sessions
                            .get(&session)
                            .and_then(VecDeque::front)
                            .and_then(&group)
                        else {
                            continue;
                        };
                        if let Some(item) = self.take(session) {
                            bytes = bytes.saturating_add(size);
                            turn.push((session, item));
                            progress = true;
                            if !served.contains(&session) {
                                served.push(session);
                            }
                        }
                    }
                }
            }
        }
        // Sessions not served keep their places; the served go behind them, in service order.
        rotation.retain(|s| !served.contains(s));
        rotation.extend(served);
        rotation.retain(|s| self.sessions.contains_key(s));
        if !rotation.is_empty() {
            self.rotations.insert(tenant.clone(), rotation);
            self.tenants.push_back(tenant);
        }
        turn
    }

    /// `session`'s first input; forgets the session once it has none left.
    fn take(&mut self, session: SessionId) -> Option<T> {
        let queue = self.sessions.get_mut(&session)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.sessions.remove(&session);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test input: a sync frame of `n` bytes, or another input.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum In {
        Sync(usize),
        Other,
    }

    fn sync_bytes(input: &(u32, In)) -> Option<usize> {
        match input.1 {
            In::Sync(n) => Some(n),
            In::Other => None,
        }
    }

    /// Every turn until the queue is empty, as (session, label) lists.
    fn drain(q: &mut FairQueue<&'static str, (u32, In)>, max_items: usize) -> Vec<Vec<(u64, u32)>> {
        let mut turns = Vec::new();
        for _ in 0..10_000 {
            let turn = q.next_turn(sync_bytes, max_items, 1_000);
            if turn.is_empty() {
                break;
            }
            turns.push(turn.into_iter().map(|(s, (label, _))| (s, label)).collect());
        }
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        turns
    }

    #[test]
    fn a_flooding_tenant_does_not_go_before_another_tenants_input() {
        let mut q = FairQueue::new();
        // Tenant a's session 1 queues 100 inputs, then tenant b's session 2 one.
        for n in 0..100 {
            q.push("a", 1, (n, In::Other));
        }
        q.push("b", 2, (0, In::Other));
        let turns = drain(&mut q, 16);
        assert_eq!(turns.len(), 101);
        assert_eq!(
            turns[1],
            vec![(2, 0)],
            "b's input is the second turn, not the 101st"
        );
    }

    #[test]
    fn a_tenant_with_many_sessions_gets_one_turn_per_round() {
        let mut q = FairQueue::new();
        for session in 1..=50 {
            q.push("a", session, (0, In::Other));
        }
        q.push("b", 100, (0, In::Other));
        q.push("b", 100, (1, In::Other));
        let turns = drain(&mut q, 16);
        let b_turns: Vec<usize> = (turns.iter().enumerate())
            .filter(|(_, t)| t[0].0 == 100)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(b_turns, vec![1, 3], "b every other turn while it has work");
    }

    #[test]
    fn each_sessions_inputs_keep_their_order_and_nothing_is_lost() {
        let mut q = FairQueue::new();
        let mut pushed = 0;
        for n in 0..30u32 {
            let session = u64::from(n % 4);
            let tenant = if session < 2 { "a" } else { "b" };
            let input = if n % 3 == 0 { In::Other } else { In::Sync(10) };
            q.push(tenant, session, (n, input));
            pushed += 1;
        }
        assert_eq!(q.len(), pushed);
        let turns = drain(&mut q, 3);
        let all: Vec<(u64, u32)> = turns.into_iter().flatten().collect();
        assert_eq!(all.len(), pushed);
        for session in 0..4u64 {
            let labels: Vec<u32> = all
                .iter()
                .filter(|(s, _)| *s == session)
                .map(|(_, l)| *l)
                .collect();
            assert!(labels.is_sorted(), "session {session}: {labels:?}");
        }
    }

    #[test]
    fn sync_frames_of_one_tenant_commit_together_within_the_bounds() {
        let mut q = FairQueue::new();
        for session in 1..=4 {
            for n in 0..3 {
                q.push("a", session, (n, In::Sync(100)));
            }
        }
        q.push("b", 9, (0, In::Sync(100)));
        // One per session per round: the first turn takes a round of four, then a second, and
        // stops at eight inputs; b's frame is never in a's group.
        let turn = q.next_turn(sync_bytes, 8, 10_000);
        let sessions: Vec<u64> = turn.iter().map(|(s, _)| *s).collect();
        assert_eq!(sessions, vec![1, 2, 3, 4, 1, 2, 3, 4]);
        let turn = q.next_turn(sync_bytes, 8, 10_000);
        assert_eq!(turn.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![9]);
        // The byte bound: the group stops once 250 bytes are reached (the third frame is the
        // last to join).
        let turn = q.next_turn(sync_bytes, 100, 250);
        assert_eq!(turn.len(), 3);
    }

    #[test]
    fn a_group_stops_at_a_session_whose_next_input_does_not_join() {
        let mut q = FairQueue::new();
        q.push("a", 1, (0, In::Sync(1)));
        q.push("a", 1, (1, In::Other));
        q.push("a", 1, (2, In::Sync(1)));
        q.push("a", 2, (0, In::Sync(1)));
        let turns = drain(&mut q, 16);
        assert_eq!(
            turns[0],
            vec![(1, 0), (2, 0)],
            "1's later sync waits behind its other input"
        );
        assert_eq!(turns[1], vec![(1, 1)]);
        assert_eq!(turns[2], vec![(1, 2)]);
    }
}
