//! The paced downlink of one connection, sans I/O: what the relay sends a device, paced to the
//! download bandwidth its profile declares (DESIGN §3), in two lanes.
//!
//! - **Pacing.** A [`Pacer`]: a frame goes when the byte budget is not in debt, and its bytes
//!   on the wire (after compression) are taken from it. Over a transfer the rate is the
//!   declared one, whatever the frame sizes; a rate change takes effect with the next frame.
//! - **Lanes.** The live lane (answers, acknowledgements, plans, changes pushed as they
//!   happen) always goes before the bulk lane (catch-up). A small live change therefore waits
//!   at most for the frame already on the wire.
//! - **Frame size.** While paced, a bulk `Sync` is split into frames of about an eighth of a
//!   second at the declared rate, so that nothing live waits longer than that.
//! - **Replanning mid-transfer.** Bulk messages stay structured until they go, so a change of
//!   plan (a collection unsubscribed, a metered network) takes out what is no longer wanted
//!   ([`Downlink::prune`]).
//!
//! Without a declared rate every frame goes at once, as before pacing existed.

use std::collections::{HashMap, VecDeque};

use syncline_protocol::messages::{PlanDone, Sync, SyncItem};
use syncline_protocol::{Compression, DocId, Message, Pacer, frame};

use crate::hub::Lane;

/// The smallest bulk frame a paced connection is split into.
const MIN_PACED_FRAME: usize = 4 << 10;

/// Bytes a `SyncItem` costs beyond its message, for splitting (document id and CBOR framing).
const ITEM_OVERHEAD: usize = 96;

/// One frame ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The encoded (and, when negotiated and worth it, compressed) frame.
    pub bytes: Vec<u8>,
    /// Bytes counted against the connection's backlog that it gives back once sent.
    pub counted: usize,
}

/// What waits in the bulk lane.
#[derive(Debug)]
enum Bulk {
    /// A catch-up `Sync` part.
    Part {
        sync: Sync,
        counted: usize,
        /// Documents the device asked for (`Fetch`): never taken back by a change of plan.
        asked: bool,
    },
    /// The `PlanDone` that follows a plan's parts: it goes after the parts queued before it,
    /// and stays when the plan changes.
    Done { done: PlanDone, counted: usize },
}

/// The paced downlink; see the module documentation.
#[derive(Debug, Default)]
pub struct Downlink {
    pacer: Pacer,
    /// Live messages with their counted bytes, encoded when they go.
    live: VecDeque<(Message, usize)>,
    /// Catch-up `Sync` parts and the ends of their plans, encoded when they go.
    bulk: VecDeque<Bulk>,
    /// How many queued bulk items each document has.
    queued_docs: HashMap<DocId, u32>,
    /// The compression frames are encoded with (the session's, once negotiated).
    compression: Compression,
    /// Bytes sent since the connection opened (after compression).
    sent_bytes: u64,
}

impl Downlink {
    /// Paces to `rate` bytes per second from `now_ms` (none: no pacing). Frames already
    /// queued go at the new rate.
    pub fn set_rate(&mut self, rate: Option<u64>, now_ms: u64) {
        self.pacer.set_rate(rate, now_ms);
    }

    /// The declared rate, if paced.
    pub fn rate(&self) -> Option<u64> {
        self.pacer.rate()
    }

    /// Bytes sent so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes
    }

    /// Frames waiting for the budget.
    pub fn queued_frames(&self) -> usize {
        self.live.len() + self.bulk.len()
    }

    /// True if a bulk message for `doc` waits to go.
    pub fn has_queued(&self, doc: &DocId) -> bool {
        self.queued_docs.contains_key(doc)
    }

    /// Queues `message` in `lane` (encoded with `compression` when it goes); `counted` bytes
    /// are given back when its (last) frame is sent.
    pub fn queue(
        &mut self,
        message: Message,
        lane: Lane,
        counted: usize,
        compression: Compression,
    ) {
        self.compression = compression;
        match (message, lane) {
            (Message::Sync(sync), Lane::Bulk | Lane::Asked) => {
                let parts = match self.pacer.rate() {
                    Some(rate) => split(&sync, frame_target(rate)),
                    None => vec![sync],
                };
                let last = parts.len().saturating_sub(1);
                for (i, part) in parts.into_iter().enumerate() {
                    for item in &part.items {
                        *self.queued_docs.entry(item.doc.clone()).or_default() += 1;
                    }
                    self.bulk.push_back(Bulk::Part {
                        sync: part,
                        counted: if i == last { counted } else { 0 },
                        asked: lane == Lane::Asked,
                    });
                }
            }
            // A plan's end follows its catch-up in the same lane.
            (Message::PlanDone(done), Lane::Bulk | Lane::Asked) => {
                self.bulk.push_back(Bulk::Done { done, counted });
            }
            // Only catch-up `Sync`s and their plans' ends are bulk; anything else goes live.
            (message, _) => self.live.push_back((message, counted)),
        }
    }

    /// Takes out of the bulk lane every item `keep` refuses (the plan changed), and returns
    /// them; what the device asked for stays. Their counted bytes stay with what remains of
    /// their message (or go with the next release, for a message emptied).
    pub fn prune(&mut self, keep: impl Fn(&SyncItem) -> bool) -> Vec<SyncItem> {
        let mut removed = Vec::new();
        let mut freed = 0;
        self.bulk.retain_mut(|queued| {
            let Bulk::Part {
                sync,
                counted,
                asked: false,
            } = queued
            else {
                return true;
            };
            let (kept, gone): (Vec<SyncItem>, Vec<SyncItem>) =
                std::mem::take(&mut sync.items).into_iter().partition(&keep);
            sync.items = kept;
            removed.extend(gone);
            if sync.items.is_empty() {
                freed += *counted;
                false
            } else {
                true
            }
        });
        for item in &removed {
            self.forget_queued(&item.doc);
        }
        if freed > 0 {
            // Nothing to send for them, but the backlog bytes must come back.
            match self.bulk.front_mut() {
                Some(Bulk::Part { counted, .. } | Bulk::Done { counted, .. }) => *counted += freed,
                None => self.live.push_back((
                    Message::Sync(Sync {
                        items: Vec::new(),
                        positions: None,
                    }),
                    freed,
                )),
            }
        }
        removed
    }

    /// The frames that may go at `now_ms`, live lane first, each message passed through
    /// `filter` as it goes (the grants then current). A frame with no bytes only gives its
    /// counted bytes back: there is nothing to send for it.
    pub fn release(
        &mut self,
        now_ms: u64,
        filter: impl Fn(Message) -> Option<Message>,
    ) -> Vec<Frame> {
        let mut out = Vec::new();
        while self.pacer.ready(now_ms) {
            let (message, counted) = match self.live.pop_front() {
                Some(live) => live,
                None => match self.bulk.pop_front() {
                    Some(Bulk::Done { done, counted }) => (Message::PlanDone(done), counted),
                    Some(Bulk::Part { sync, counted, .. }) => {
                        for item in &sync.items {
                            self.forget_queued(&item.doc);
                        }
                        (Message::Sync(sync), counted)
                    }
                    None => break,
                },
            };
            let empty = matches!(&message, Message::Sync(s) if s.items.is_empty());
            let bytes = match filter(message) {
                Some(message) if !empty => frame::encode_with(&message, self.compression),
                _ => Vec::new(),
            };
            let len = bytes.len() as u64;
            self.sent_bytes += len;
            self.pacer.spend(len, now_ms);
            out.push(Frame { bytes, counted });
        }
        out
    }

    /// When the next queued frame may go, if one waits for the budget.
    pub fn next_release_ms(&self) -> Option<u64> {
        if self.live.is_empty() && self.bulk.is_empty() {
            return None;
        }
        self.pacer.ready_at()
    }

    fn forget_queued(&mut self, doc: &DocId) {
        if let Some(count) = self.queued_docs.get_mut(doc) {
            *count -= 1;
            if *count == 0 {
                self.queued_docs.remove(doc);
            }
        }
    }
}

/// The size bulk frames are split to at `rate`: an eighth of a second, at least 4 KiB.
fn frame_target(rate: u64) -> usize {
    usize::try_from(rate / 8)
        .unwrap_or(usize::MAX)
        .max(MIN_PACED_FRAME)
}

/// Splits a `Sync` into several of about `target` bytes each, in order (an item larger than
/// the target goes alone); its positions go with the last.
fn split(sync: &Sync, target: usize) -> Vec<Sync> {
    let mut parts = Vec::new();
    let mut items: Vec<SyncItem> = Vec::new();
    let mut size = 0;
    for item in &sync.items {
        let item_size = item.message.len() + ITEM_OVERHEAD;
        if !items.is_empty() && size + item_size > target {
            parts.push(Sync {
                items: std::mem::take(&mut items),
                positions: None,
            });
            size = 0;
        }
        size += item_size;
        items.push(item.clone());
    }
    if !items.is_empty() || parts.is_empty() {
        // The positions speak for the whole push: they go with its last part.
        parts.push(Sync {
            items,
            positions: sync.positions.clone(),
        });
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_protocol::DocId;
    use syncline_protocol::messages::Ack;

    fn sync_of(n: usize, bytes: usize) -> Message {
        Message::Sync(Sync {
            items: (0..n)
                .map(|i| SyncItem {
                    doc: format!("c/d{i}").parse::<DocId>().expect("valid"),
                    message: vec![u8::try_from(i % 251).expect("small"); bytes],
                    priority: None,
                })
                .collect(),
            positions: None,
        })
    }

    /// Drives the downlink in virtual time until it is empty: (time the last frame went,
    /// bytes sent).
    fn drain(link: &mut Downlink, mut now: u64) -> (u64, u64) {
        let mut last = now;
        for _ in 0..1_000_000 {
            let frames = link.release(now, Some);
            if !frames.is_empty() {
                last = now;
            }
            match link.next_release_ms() {
                Some(at) => now = at.max(now + 1),
                None => break,
            }
        }
        (last, link.sent_bytes())
    }

    #[test]
    fn unpaced_sends_everything_at_once() {
        let mut link = Downlink::default();
        link.queue(sync_of(100, 1000), Lane::Bulk, 0, Compression::None);
        assert_eq!(link.release(0, Some).len(), 1, "one frame, not split");
        assert_eq!(link.next_release_ms(), None);
    }

    #[test]
    fn a_paced_transfer_takes_the_time_its_rate_implies() {
        let rate = 100_000;
        let mut link = Downlink::default();
        link.set_rate(Some(rate), 0);
        // 2 MB in 256-item frames of 8 KB items.
        for _ in 0..1 {
            link.queue(sync_of(256, 8000), Lane::Bulk, 0, Compression::None);
        }
        let (last, sent) = drain(&mut link, 0);
        // The first burst goes at once; the rest at the rate.
        let ideal = (sent - Pacer::burst(rate)) * 1000 / rate;
        assert!(sent > 2_000_000, "{sent}");
        let error = last.abs_diff(ideal) as f64 / ideal as f64;
        assert!(error < 0.15, "took {last} ms, ideal {ideal} ms");
    }

    #[test]
    fn a_live_message_waits_at_most_one_frame_behind_a_catch_up() {
        let rate = 100_000;
        let mut link = Downlink::default();
        link.set_rate(Some(rate), 0);
        link.queue(sync_of(256, 8000), Lane::Bulk, 0, Compression::None);
        let mut now = 0;
        let mut largest = 0;
        // Let a second of catch-up go.
        while now < 1000 {
            for f in link.release(now, Some) {
                largest = largest.max(f.bytes.len() as u64);
            }
            now = link.next_release_ms().expect("more to send").max(now + 1);
        }
        let ack = Message::Ack(Ack {
            items: Vec::new(),
            positions: None,
        });
        link.queue(ack, Lane::Live, 7, Compression::None);
        let queued_at = now;
        let mut sent_at = None;
        for _ in 0..10_000 {
            let frames = link.release(now, Some);
            if let Some(f) = frames.iter().find(|f| f.counted == 7) {
                assert_eq!(frames[0], *f, "the live frame goes first");
                sent_at = Some(now);
                break;
            }
            now = link.next_release_ms().expect("queued").max(now + 1);
        }
        let waited = sent_at.expect("sent") - queued_at;
        let one_frame_ms = largest * 1000 / rate;
        assert!(
            waited <= one_frame_ms + 1,
            "waited {waited} ms, one frame is {one_frame_ms} ms"
        );
        assert!(
            largest <= 2 * frame_target(rate) as u64,
            "frames are split: {largest}"
        );
    }

    #[test]
    fn a_rate_change_takes_effect_mid_transfer() {
        let mut link = Downlink::default();
        link.set_rate(Some(50_000), 0);
        link.queue(sync_of(200, 5000), Lane::Bulk, 0, Compression::None);
        let mut now = 0;
        while link.sent_bytes() < 300_000 {
            link.release(now, Some);
            now = link.next_release_ms().expect("more").max(now + 1);
        }
        let (half_time, half_bytes) = (now, link.sent_bytes());
        link.set_rate(Some(500_000), now);
        let (end, total) = drain(&mut link, now);
        let fast_ms = end - half_time;
        let expected = (total - half_bytes) * 1000 / 500_000;
        assert!(
            fast_ms.abs_diff(expected) as f64 <= expected as f64 * 0.15 + 5.0,
            "{fast_ms} ms after the change, expected {expected}"
        );
    }
}
