// The facade's records and enums under the names an app writes: `import Syncline` is enough to
// name them. Each is the generated type itself (a value type, `Sendable`, `Hashable`), named
// here one by one rather than through `@_exported import SynclineCore`, so that the generated
// objects (`FfiStore`, ...), listener protocols and `FfiError` stay out of an app's namespace.
//
// `Progress` shares its name with Foundation's class: in a file that imports Foundation too,
// write `Syncline.Progress` if the compiler calls the name ambiguous.

import SynclineCore

// MARK: Values and changes

/// A value read from or written to a document: a scalar, or a whole object tree. `.str` is a
/// scalar string (a concurrent write replaces it whole); `.text` is a collaborative text whose
/// concurrent edits merge character by character.
public typealias Value = SynclineCore.Value

/// One operation of `Document.apply(_:message:)`; paths are JSON Pointers (`/items/0/title`).
public typealias WriteOp = SynclineCore.WriteOp

/// One durable change to one document, local or remote, as the change streams yield it.
public typealias ChangeEvent = SynclineCore.ChangeEvent

/// One change to a document's visible state: the object at `path` and what happened to it.
public typealias Patch = SynclineCore.Patch

/// The kinds of `Patch`.
public typealias PatchAction = SynclineCore.PatchAction

/// One change in a document's history: who (which device) wrote it, when, with which message.
public typealias Change = SynclineCore.Change

/// A change no relay has acknowledged yet, with the document it belongs to.
public typealias PendingChange = SynclineCore.PendingChange

// MARK: Store and documents

/// Tuning for `Store.open(_:options:)`: the document cache's size and the commits' durability.
public typealias StoreOptions = SynclineCore.StoreOptions

/// How hard a commit works to survive a power cut.
public typealias Durability = SynclineCore.Durability

/// A document's sync priority.
public typealias Priority = SynclineCore.Priority

/// What the store knows of a document without loading it.
public typealias DocumentInfo = SynclineCore.DocumentInfo

// MARK: Conflicts

/// Concurrent values a merge left at one path of a document.
public typealias Conflict = SynclineCore.Conflict

/// One of a conflict's values, with who wrote it and when.
public typealias ConflictValue = SynclineCore.ConflictValue

/// How a collection's conflicts are resolved (every device must run the same).
public typealias ConflictStrategy = SynclineCore.ConflictStrategy

// MARK: Sync

/// Everything a sync client starts with besides the store and the tokens.
public typealias SyncOptions = SynclineCore.SyncOptions

/// One collection to sync, with its priority and whether its content is fetched on demand.
public typealias CollectionSync = SynclineCore.CollectionSync

/// The device's declared capabilities; the relay plans what and how fast to sync from them.
public typealias Profile = SynclineCore.Profile

/// The kind of device.
public typealias DeviceClass = SynclineCore.DeviceClass

/// The sync status: offline, connecting, syncing (with its progress), synced, or an error.
public typealias SyncStatus = SynclineCore.SyncStatus

/// Progress of a sync: the download (per priority too), the upload, what is deferred.
public typealias Progress = SynclineCore.Progress

/// Documents and bytes of one part of a sync.
public typealias Transfer = SynclineCore.Transfer

/// What a sync moved.
public typealias SyncStats = SynclineCore.SyncStats

/// Why a connection ended.
public typealias Disconnect = SynclineCore.Disconnect

/// A document the relay announced and holds back.
public typealias DeferredDoc = SynclineCore.DeferredDoc

/// Why a document is held back.
public typealias DeferReason = SynclineCore.DeferReason

/// One document that did not sync while the rest went on.
public typealias DocSyncError = SynclineCore.DocSyncError

/// Why a document did not sync.
public typealias SyncErrorKind = SynclineCore.SyncErrorKind

/// A document's sync error raised or cleared.
public typealias SyncErrorEvent = SynclineCore.SyncErrorEvent

/// An ephemeral message (presence, a cursor) another device sent: never stored.
public typealias Ephemeral = SynclineCore.Ephemeral

/// One connection to a relay, from the store's history of syncs.
public typealias SyncRecord = SynclineCore.SyncRecord

/// How a connection ended (see `SyncRecord`).
public typealias SyncEnd = SynclineCore.SyncEnd
