//! Change listeners: per document, per collection and store-wide, fired after a change is
//! durable.
//!
//! Events are queued in commit order while the changed document is still locked, and
//! delivered by one thread at a time after every lock of the store has been released: so a
//! listener sees the changes of a document in the order they were made, and may itself read
//! or write the store. The delivering thread is the writer's, or, when several threads write
//! at once, whichever of them is already delivering; an event may thus arrive on another
//! thread, shortly after the write call returned. Keep listeners short; hand long work to
//! another thread.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use automerge::{ObjType, Prop, Value as AmValue};
use parking_lot::{Mutex, RwLock};
use syncline_protocol::{Collection, DeviceId, DocId};

use super::model::{TOMBSTONE_KEY, scalar_to_value};
use crate::{Heads, Path, Segment, Value};

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// A write made through this store.
    Local,
    /// Changes received from another device (through a relay or [`crate::Store::apply_changes`]).
    Remote,
}

/// What a listener receives: one durable change to one document.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The document that changed.
    pub doc_id: DocId,
    /// Local write or remote merge.
    pub origin: ChangeOrigin,
    /// The document's heads after the change.
    pub heads: Heads,
    /// True if the document is now deleted.
    pub deleted: bool,
    /// What changed, as patches against the previous state.
    pub patches: Vec<Patch>,
    /// The devices whose changes this event brings, each once, in id order: this store's own
    /// for a local write; for a remote merge, the authors of the changes it received (an
    /// Automerge actor that is not a Syncline device id is left out).
    pub devices: Vec<DeviceId>,
    /// The document's conflicts after this change: concurrent values a merge left (see
    /// [`crate::Conflict`]); empty when it has none.
    pub conflicts: Vec<super::conflicts::Conflict>,
}

/// The devices that authored the changes of `doc` not covered by `since` (each once, in id
/// order); see [`ChangeEvent::devices`].
pub(crate) fn authors(
    doc: &automerge::Automerge,
    since: &[automerge::ChangeHash],
) -> Vec<DeviceId> {
    let mut devices: Vec<DeviceId> = doc
        .get_changes_meta(since)
        .iter()
        .filter_map(|meta| DeviceId::try_from_slice(meta.actor.to_bytes()).ok())
        .collect();
    devices.sort_unstable();
    devices.dedup();
    devices
}

/// One change to a document's visible state.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The object that changed.
    pub path: Path,
    /// What happened to it.
    pub action: PatchAction,
}

/// The kinds of [`Patch`]. New objects appear as empty values (`Map`, `List`, `Text`), followed
/// by patches that fill them.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchAction {
    /// A map key was set.
    PutMap {
        /// The key.
        key: String,
        /// Its new (winning) value.
        value: Value,
        /// True if concurrent values remain (see [`crate::Document::conflicts`]).
        conflict: bool,
    },
    /// A list element was replaced.
    PutSeq {
        /// The element's index.
        index: usize,
        /// Its new (winning) value.
        value: Value,
        /// True if concurrent values remain.
        conflict: bool,
    },
    /// Elements were inserted into a list.
    Insert {
        /// Where the first one went.
        index: usize,
        /// The inserted values, in order.
        values: Vec<Value>,
    },
    /// Text was inserted into a text object.
    SpliceText {
        /// Where, in Unicode code points.
        index: usize,
        /// The inserted text.
        text: String,
    },
    /// A counter changed.
    Increment {
        /// The counter's key or index in the object.
        prop: Segment,
        /// By how much (may be negative).
        by: i64,
    },
    /// A concurrent value appeared at a key or index.
    Conflict {
        /// The conflicted key or index.
        prop: Segment,
    },
    /// A map key was removed.
    DeleteMap {
        /// The key.
        key: String,
    },
    /// Elements were removed from a list or text.
    DeleteSeq {
        /// The first removed index.
        index: usize,
        /// How many.
        length: usize,
    },
}

/// A registered listener. Dropping it (or calling [`Subscription::unsubscribe`]) removes the
/// listener; once that returns, the listener is not running and will not be called again
/// (dropping it from inside its own callback returns at once, and no later call follows).
#[must_use = "the listener is removed when the Subscription is dropped"]
pub struct Subscription {
    listener: Arc<Listener>,
    registry: Weak<Registry>,
}

impl Subscription {
    /// Removes the listener now.
    pub fn unsubscribe(self) {
        // Drop does the work.
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry
                .entries
                .write()
                .retain(|e| !Arc::ptr_eq(e, &self.listener));
        }
        self.listener.alive.store(false, Ordering::Release);
        let id = self.listener.id;
        if !RUNNING.with(|r| r.borrow().contains(&id)) {
            // Waits for a call in progress on another thread to finish.
            drop(self.listener.running.write());
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.listener.id)
            .finish()
    }
}

thread_local! {
    /// The listeners this thread is calling right now (nested when a listener writes).
    static RUNNING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What a listener watches.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    Document(DocId),
    Collection(Collection),
    /// Every document of the store.
    Store,
}

impl Scope {
    fn matches(&self, doc: &DocId) -> bool {
        match self {
            Self::Document(id) => id == doc,
            Self::Collection(c) => c == doc.collection(),
            Self::Store => true,
        }
    }
}

struct Listener {
    id: u64,
    scope: Scope,
    /// Cleared by [`Subscription`]'s drop; checked under `running` before every call.
    alive: AtomicBool,
    /// Held (shared) during each call, so an unsubscribe can wait for calls in progress.
    running: RwLock<()>,
    callback: Box<dyn Fn(&ChangeEvent) + Send + Sync>,
}

#[derive(Default)]
struct Delivery {
    queue: VecDeque<ChangeEvent>,
    draining: bool,
}

/// The listeners of one store, and the events waiting for them.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    entries: RwLock<Vec<Arc<Listener>>>,
    delivery: Mutex<Delivery>,
}

impl Registry {
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        scope: Scope,
        callback: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        let listener = Arc::new(Listener {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            scope,
            alive: AtomicBool::new(true),
            running: RwLock::new(()),
            callback: Box::new(callback),
        });
        self.entries.write().push(Arc::clone(&listener));
        Subscription {
            listener,
            registry: Arc::downgrade(self),
        }
    }

    /// How many listeners are registered (a dropped subscription's is gone).
    pub(crate) fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// True if any listener would receive an event for `doc`; patches are computed only then.
    pub(crate) fn wants(&self, doc: &DocId) -> bool {
        self.entries.read().iter().any(|e| e.scope.matches(doc))
    }

    /// Queues an event. Call it while the changed document is still locked, so that events
    /// queue in commit order; then call [`Registry::deliver`] once the locks are released.
    pub(crate) fn publish(&self, event: ChangeEvent) {
        self.delivery.lock().queue.push_back(event);
    }

    /// Delivers queued events in order, unless another thread is already doing so (then that
    /// thread delivers them).
    pub(crate) fn deliver(&self) {
        {
            let mut delivery = self.delivery.lock();
            if delivery.draining {
                return;
            }
            delivery.draining = true;
        }
        let drainer = Drainer(self);
        loop {
            let event = {
                let mut delivery = self.delivery.lock();
                let Some(event) = delivery.queue.pop_front() else {
                    // Stop draining in the same critical section that found the queue empty,
                    // so an event published meanwhile is never left without a drainer.
                    delivery.draining = false;
                    std::mem::forget(drainer);
                    return;
                };
                event
            };
            self.dispatch(&event);
        }
    }

    /// Calls every live listener matching the event. The registry lock is not held during
    /// the calls.
    fn dispatch(&self, event: &ChangeEvent) {
        let listeners: Vec<Arc<Listener>> = self
            .entries
            .read()
            .iter()
            .filter(|e| e.scope.matches(&event.doc_id))
            .map(Arc::clone)
            .collect();
        for listener in listeners {
            let _running = listener.running.read();
            if !listener.alive.load(Ordering::Acquire) {
                continue;
            }
            RUNNING.with(|r| r.borrow_mut().push(listener.id));
            let _pop = PopRunning;
            (listener.callback)(event);
        }
    }
}

/// Ends a delivery turn if a listener panics, so that later events are still delivered (the
/// event whose listener panicked is not retried). A normal turn ends in [`Registry::deliver`].
struct Drainer<'a>(&'a Registry);

impl Drop for Drainer<'_> {
    fn drop(&mut self) {
        self.0.delivery.lock().draining = false;
    }
}

struct PopRunning;

impl Drop for PopRunning {
    fn drop(&mut self) {
        RUNNING.with(|r| r.borrow_mut().pop());
    }
}

/// Converts Automerge patches, dropping those about the reserved tombstone key and about text
/// marks (which the SDK does not expose yet).
pub(crate) fn convert_patches(patches: Vec<automerge::Patch>) -> Vec<Patch> {
    patches.into_iter().filter_map(convert_patch).collect()
}

fn convert_patch(patch: automerge::Patch) -> Option<Patch> {
    let mut path = Path::root();
    for (_, prop) in &patch.path {
        path = match prop {
            Prop::Map(key) => path.key(key.clone()),
            Prop::Seq(index) => path.index(*index),
        };
    }
    let at_root = path.is_root();
    let action = match patch.action {
        automerge::PatchAction::PutMap { key, .. } | automerge::PatchAction::DeleteMap { key }
            if at_root && key == TOMBSTONE_KEY =>
        {
            return None;
        }
        automerge::PatchAction::PutMap {
            key,
            value,
            conflict,
        } => PatchAction::PutMap {
            key,
            value: patch_value(&value.0),
            conflict,
        },
        automerge::PatchAction::PutSeq {
            index,
            value,
            conflict,
        } => PatchAction::PutSeq {
            index,
            value: patch_value(&value.0),
            conflict,
        },
        automerge::PatchAction::Insert { index, values } => PatchAction::Insert {
            index,
            values: values.iter().map(|(v, _, _)| patch_value(v)).collect(),
        },
        automerge::PatchAction::SpliceText { index, value, .. } => PatchAction::SpliceText {
            index,
            text: value.make_string(),
        },
        automerge::PatchAction::Increment { prop, value } => PatchAction::Increment {
            prop: segment(prop),
            by: value,
        },
        automerge::PatchAction::Conflict { prop } => PatchAction::Conflict {
            prop: segment(prop),
        },
        automerge::PatchAction::DeleteMap { key } => PatchAction::DeleteMap { key },
        automerge::PatchAction::DeleteSeq { index, length } => {
            PatchAction::DeleteSeq { index, length }
        }
        automerge::PatchAction::Mark { .. } => return None,
    };
    Some(Patch { path, action })
}

fn segment(prop: Prop) -> Segment {
    match prop {
        Prop::Map(key) => Segment::Key(key),
        Prop::Seq(index) => Segment::Index(index),
    }
}

fn patch_value(value: &AmValue<'_>) -> Value {
    match value {
        AmValue::Scalar(s) => scalar_to_value(s.as_ref()),
        AmValue::Object(ObjType::Map | ObjType::Table) => Value::Map(Default::default()),
        AmValue::Object(ObjType::List) => Value::List(Vec::new()),
        AmValue::Object(ObjType::Text) => Value::Text(String::new()),
    }
}
