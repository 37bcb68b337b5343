//! This device's own changes to a document whose content it evicts (DESIGN §3, the storage
//! budget). Eviction leaves the document's custody to the relay, and a relay restored from a
//! backup older than those changes would have lost them for good. So eviction keeps the
//! device's own changes apart (in a shared document, usually a small part of it), and they
//! go back:
//! - merged into the document whenever its content arrives again (opened, planned, fetched);
//! - when the relay says it lost what it acknowledged (`Plan.reset`), the sync engine fetches
//!   every such document, and restores from its kept changes alone one the relay holds
//!   nothing of ([`crate::Store`]'s `restore_kept`).
//!
//! A kept change that does not apply yet (it depends on other devices' changes the relay
//! lost too) stays kept, and is tried again whenever the document receives changes. Meanwhile
//! a document made again from kept changes alone stays evicted, and one whose content came
//! back from the relay can be read but not written ([`crate::Error::AwaitingOwnChanges`]):
//! Automerge numbers a device's changes, and a new local change would take the number of a
//! kept one, which the relay (or another device holding it) would then refuse or split on.
//!
//! Encoding: each change's stored bytes (compressed where Automerge compresses them), each
//! prefixed by its length as a 4-byte big-endian integer.

use automerge::{ActorId, Automerge, Change, PatchLog, ReadDoc};

/// This device's (`actor`'s) changes to `doc`, encoded; empty if it made none.
pub(crate) fn own_changes(doc: &Automerge, actor: &ActorId) -> Vec<u8> {
    let mut out = Vec::new();
    for mut change in doc.get_changes(&[]) {
        if change.actor_id() == actor {
            push(&mut out, &change.bytes());
        }
    }
    out
}

/// The bytes a set of kept changes takes, encoded.
pub(crate) fn encode(changes: &mut [Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        push(&mut out, &change.bytes());
    }
    out
}

fn push(out: &mut Vec<u8>, change: &[u8]) {
    let len = u32::try_from(change.len()).expect("a change is far smaller than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(change);
}

/// Decodes kept changes; a description of what is wrong for a damaged row.
pub(crate) fn decode(mut bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err("a kept change's length is cut short".into());
        };
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        if len > rest.len() {
            return Err(format!(
                "a kept change claims {len} bytes, {} are left",
                rest.len()
            ));
        }
        let (change, rest) = rest.split_at(len);
        changes.push(Change::try_from(change).map_err(|e| format!("a kept change: {e}"))?);
        bytes = rest;
    }
    Ok(changes)
}

/// Applies the kept changes `kept` to `doc` (logging patches to `log`), and returns those that
/// are still not in it, encoded (empty when every one applied).
///
/// # Errors
/// A description of the damage if `kept` does not decode or a change does not apply.
pub(crate) fn merge(
    doc: &mut Automerge,
    kept: &[u8],
    log: &mut PatchLog,
) -> Result<Vec<u8>, String> {
    let changes = decode(kept)?;
    let missing: Vec<Change> = changes
        .into_iter()
        .filter(|c| doc.get_change_by_hash(&c.hash()).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    doc.apply_changes_log_patches(missing.clone(), log)
        .map_err(|e| format!("a kept change does not apply: {e}"))?;
    let mut left: Vec<Change> = missing
        .into_iter()
        .filter(|c| doc.get_change_by_hash(&c.hash()).is_none())
        .collect();
    Ok(encode(&mut left))
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit, Automerge, PatchLog, ROOT};

    use super::{decode, merge, own_changes};

    fn actor(byte: u8) -> ActorId {
        ActorId::from([byte; 16].as_slice())
    }

    #[test]
    fn own_changes_come_back_into_a_copy_that_lost_them() {
        let mut mine = AutoCommit::new().with_actor(actor(1));
        mine.put(ROOT, "title", "draft").expect("put");
        mine.commit();
        let mut theirs = mine.fork().with_actor(actor(2));
        theirs.put(ROOT, "owner", "them").expect("test setup");
        theirs.commit();
        mine.merge(&mut theirs).expect("test setup");
        // The relay's copy as a backup left it: the first change only.
        let backup = mine.document().clone();
        mine.put(ROOT, "title", "final").expect("test setup");
        mine.commit();
        let kept = own_changes(mine.document(), &actor(1));
        assert_eq!(
            decode(&kept).expect("test setup").len(),
            2,
            "only this device's changes"
        );

        let mut restored: Automerge = backup;
        let left = merge(&mut restored, &kept, &mut PatchLog::inactive()).expect("test setup");
        assert!(left.is_empty(), "every kept change applied");
        assert_eq!(restored.get_heads(), mine.get_heads());
    }

    #[test]
    fn a_kept_change_waiting_on_a_lost_dependency_stays_kept() {
        let mut theirs = AutoCommit::new().with_actor(actor(2));
        theirs.put(ROOT, "owner", "them").expect("test setup");
        theirs.commit();
        let mut mine = theirs.fork().with_actor(actor(1));
        mine.put(ROOT, "title", "mine").expect("test setup");
        mine.commit();
        let kept = own_changes(mine.document(), &actor(1));

        let mut empty = Automerge::new();
        let left = merge(&mut empty, &kept, &mut PatchLog::inactive()).expect("test setup");
        assert_eq!(
            left, kept,
            "nothing applied without the other device's change"
        );
        assert!(empty.get_heads().is_empty());
    }

    #[test]
    fn damaged_kept_changes_are_an_error() {
        let mut doc = AutoCommit::new().with_actor(actor(1));
        doc.put(ROOT, "a", 1).expect("test setup");
        doc.commit();
        let kept = own_changes(doc.document(), &actor(1));
        assert!(decode(&kept[..kept.len() - 1]).is_err(), "cut short");
        assert!(decode(&kept[..2]).is_err(), "length cut short");
        let mut flipped = kept.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(decode(&flipped).is_err(), "a damaged change");
    }
}
