//! The worked exchanges of `docs/PROTOCOL.md` ("Worked exchanges"): each frame there, in hex
//! with its decoding, is this crate's encoding of the message below, annotated by a small CBOR
//! walker. The test fails when the document and the encoding differ; regenerate the blocks
//! with `UPDATE_GOLDEN=1 cargo test -p syncline-protocol --test worked_examples`.

use std::fmt::Write as _;
use std::path::PathBuf;

use automerge::sync::SyncDoc;
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ROOT};
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DocId, Hash, Heads, Message, Priority, frame};

/// The field names of each map, by key, and the map (or array of maps) a field holds.
fn schema(map: &str) -> &'static [(u64, &'static str, Option<&'static str>)] {
    match map {
        "hello" => &[
            (0, "versions", None),
            (1, "compression", None),
            (2, "profile", Some("profile")),
            (3, "client", None),
            (4, "features", None),
        ],
        "profile" => &[
            (0, "class", None),
            (1, "storage_budget_bytes", None),
            (2, "download_bytes_per_s", None),
            (3, "upload_bytes_per_s", None),
            (4, "metered", None),
            (5, "realtime", None),
            (6, "metered_max_doc_bytes", None),
        ],
        "welcome" => &[
            (0, "version", None),
            (1, "compression", None),
            (2, "session", None),
            (3, "server_time_ms", None),
            (4, "limits", Some("limits")),
            (5, "epoch", None),
            (6, "features", None),
        ],
        "limits" => &[
            (0, "max_frame_bytes", None),
            (1, "max_frames_per_s", None),
            (2, "max_bytes_per_s", None),
            (3, "max_docs_per_subscription", None),
            (4, "idle_timeout_ms", None),
        ],
        "reconcile" => &[
            (0, "cursors", Some("cursor")),
            (1, "changed", Some("doc_heads")),
            (2, "fetched", None),
            (3, "acked", Some("cursor")),
        ],
        "cursor" => &[
            (0, "collection", None),
            (1, "seq", None),
            (2, "epoch", None),
            (3, "receipt", None),
        ],
        "plan" => &[
            (0, "send", Some("plan_entry")),
            (1, "deferred", Some("plan_entry")),
            (2, "cursors", Some("cursor")),
            (3, "update", None),
            (4, "fetch", None),
            (5, "reset", None),
            (6, "id", None),
        ],
        "plan_entry" => &[
            (0, "doc", None),
            (1, "priority", None),
            (2, "bytes", None),
            (3, "reason", None),
            (4, "changed_ms", None),
        ],
        "sync" => &[
            (0, "items", Some("sync_item")),
            (1, "positions", Some("cursor")),
        ],
        "sync_item" => &[
            (0, "doc", None),
            (1, "message", None),
            (2, "priority", None),
        ],
        "ack" => &[
            (0, "items", Some("ack_item")),
            (1, "positions", Some("cursor")),
        ],
        "ack_item" => &[(0, "doc", None), (1, "heads", None), (2, "seq", None)],
        "plan_done" => &[(0, "plan", None)],
        "error" => &[
            (0, "code", None),
            (1, "message", None),
            (2, "retry_after_ms", None),
            (3, "doc", None),
            (4, "collection", None),
        ],
        _ => &[],
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the CBOR item at `at` (in `map`'s context when it is one) with its bytes and what
/// they mean, one line per header; returns where the next item starts.
struct Walker<'a> {
    bytes: &'a [u8],
    out: String,
}

impl Walker<'_> {
    fn line(&mut self, depth: usize, bytes: &[u8], meaning: &str) {
        let left = format!("{}{}", "  ".repeat(depth), hex(bytes));
        let line = format!("{left:<40} {meaning}");
        writeln!(self.out, "{}", line.trim_end()).expect("write");
    }

    /// The head of the item at `at`: major type, argument, and the head's length.
    fn head(&self, at: usize) -> (u8, u64, usize) {
        let first = self.bytes[at];
        let (major, info) = (first >> 5, first & 0x1f);
        let (arg, len) = match info {
            0..=23 => (u64::from(info), 1),
            24 => (u64::from(self.bytes[at + 1]), 2),
            25 => (
                u64::from(u16::from_be_bytes([self.bytes[at + 1], self.bytes[at + 2]])),
                3,
            ),
            26 => (
                u64::from(u32::from_be_bytes(
                    self.bytes[at + 1..at + 5].try_into().expect("4 bytes"),
                )),
                5,
            ),
            27 => (
                u64::from_be_bytes(self.bytes[at + 1..at + 9].try_into().expect("8 bytes")),
                9,
            ),
            _ => panic!("indefinite lengths are not used by this protocol"),
        };
        (major, arg, len)
    }

    /// Writes the item at `at`, a value of `map` (a map's name) when it is one; `name` is the
    /// field it is the value of.
    fn item(&mut self, at: usize, depth: usize, map: Option<&str>, name: &str) -> usize {
        let (major, arg, len) = self.head(at);
        let head = &self.bytes[at..at + len];
        let label = |what: String| {
            if name.is_empty() {
                what
            } else {
                format!("{name}: {what}")
            }
        };
        match major {
            0 => {
                self.line(depth, head, &label(arg.to_string()));
                at + len
            }
            2 => {
                let n = usize::try_from(arg).expect("small");
                self.line(depth, head, &label(format!("bytes({n})")));
                for chunk in self.bytes[at + len..at + len + n].chunks(16) {
                    self.line(depth + 1, chunk, "");
                }
                at + len + n
            }
            3 => {
                let n = usize::try_from(arg).expect("small");
                let text = std::str::from_utf8(&self.bytes[at + len..at + len + n]).expect("text");
                let all = &self.bytes[at..at + len + n];
                if all.len() <= 16 {
                    self.line(depth, all, &label(format!("{text:?}")));
                } else {
                    self.line(depth, head, &label(format!("text({n}) {text:?}")));
                    for chunk in self.bytes[at + len..at + len + n].chunks(16) {
                        self.line(depth + 1, chunk, "");
                    }
                }
                at + len + n
            }
            4 => {
                let n = usize::try_from(arg).expect("small");
                self.line(depth, head, &label(format!("array({n})")));
                let mut next = at + len;
                for _ in 0..n {
                    next = self.item(next, depth + 1, map, "");
                }
                next
            }
            5 => {
                let n = usize::try_from(arg).expect("small");
                let fields = map.map(schema).unwrap_or(&[]);
                self.line(depth, head, &label(format!("map({n})")));
                let mut next = at + len;
                for _ in 0..n {
                    let (_, key, key_len) = self.head(next);
                    let (field, inner) = fields
                        .iter()
                        .find(|(k, _, _)| *k == key)
                        .map_or(("?", None), |(_, f, m)| (*f, *m));
                    let key_bytes = &self.bytes[next..next + key_len];
                    self.line(depth + 1, key_bytes, &format!("key {key}: {field}"));
                    next = self.item(next + key_len, depth + 2, inner, "");
                }
                next
            }
            7 => {
                let what = match arg {
                    20 => "false",
                    21 => "true",
                    22 => "null",
                    _ => "simple",
                };
                self.line(depth, head, &label(what.to_owned()));
                at + len
            }
            other => panic!("major type {other} is not used by this protocol"),
        }
    }
}

/// A frame, annotated: the flags byte, then `[type, message]`.
fn annotate(bytes: &[u8]) -> String {
    let message = frame::decode(bytes, usize::MAX).expect("a frame");
    let mut walker = Walker {
        bytes,
        out: String::new(),
    };
    walker.line(0, &bytes[..1], "flags: 0 (the body is plain CBOR)");
    let (_, n, len) = walker.head(1);
    assert_eq!(n, 2);
    walker.line(0, &bytes[1..1 + len], "array(2): [type, message]");
    let (_, kind, kind_len) = walker.head(1 + len);
    walker.line(
        1,
        &bytes[1 + len..1 + len + kind_len],
        &format!("type {kind}: {}", message.name()),
    );
    let end = walker.item(1 + len + kind_len, 1, Some(message.name()), "");
    assert_eq!(end, bytes.len(), "one item, no trailing bytes");
    walker.out
}

fn todos() -> Collection {
    Collection::new("todos").expect("valid")
}

fn milk() -> DocId {
    "todos/milk".parse().expect("valid")
}

/// The phone's todo (device 01…01, time 0) and the message that pushes it whole.
fn pushed() -> (Automerge, Vec<u8>) {
    let mut doc = Automerge::new();
    doc.set_actor(ActorId::from([1u8; 16].as_slice()));
    let mut tx = doc.transaction();
    tx.put(ROOT, "title", "Buy milk").expect("put");
    tx.commit_with(CommitOptions::default().with_time(0));
    let mut state = syncline_protocol::sync_state::primed(Vec::new());
    let message = doc.generate_sync_message(&mut state).expect("a message");
    (doc, message.encode())
}

fn heads(doc: &Automerge) -> Heads {
    Heads::new(doc.get_heads().iter().map(|h| Hash(h.0)).collect())
}

const EPOCH: &str = "5f2c0e9a41b7d3c8";

fn cursor(seq: u64, receipt: Option<&str>) -> Cursor {
    Cursor {
        collection: todos(),
        seq,
        epoch: Some(EPOCH.into()),
        receipt: receipt.map(str::to_owned),
    }
}

/// The examples, by the name PROTOCOL.md gives each block.
fn examples() -> Vec<(&'static str, Message)> {
    let (doc, message) = pushed();
    vec![
        (
            "hello",
            Message::Hello(Hello {
                versions: vec![1],
                compression: vec![1, 0],
                profile: Profile::new(DeviceClass::Phone),
                client: "example/1".into(),
                features: vec![Feature::PlanDone.code()],
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                version: 1,
                compression: 0,
                session: "s-1".into(),
                server_time_ms: 1_764_806_400_000,
                limits: Limits {
                    max_frame_bytes: 16 << 20,
                    max_frames_per_s: 200,
                    max_bytes_per_s: 32 << 20,
                    max_docs_per_subscription: 100_000,
                    idle_timeout_ms: 60_000,
                },
                epoch: Some(EPOCH.into()),
                features: vec![Feature::PlanDone.code()],
            }),
        ),
        (
            "push",
            Message::Sync(Sync {
                items: vec![SyncItem {
                    doc: milk(),
                    message,
                    priority: Some(Priority::Normal),
                }],
                positions: None,
            }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                items: vec![AckItem {
                    doc: milk(),
                    heads: heads(&doc),
                    seq: Some(1),
                }],
                positions: Some(vec![cursor(1, Some("4c1d9e0b77a2f3e5c6b8a9d0e1f2a3b4"))]),
            }),
        ),
        (
            "reconcile",
            Message::Reconcile(Reconcile {
                cursors: Vec::new(),
                changed: Vec::new(),
                fetched: None,
                acked: None,
            }),
        ),
        (
            "plan",
            Message::Plan(Plan {
                send: vec![PlanEntry {
                    doc: milk(),
                    priority: Priority::Normal,
                    bytes: 118,
                    reason: None,
                    changed_ms: Some(1_764_806_400_000),
                }],
                deferred: Vec::new(),
                cursors: vec![cursor(1, Some("0b8e6f1a2c3d4e5f60718293a4b5c6d7"))],
                update: false,
                fetch: false,
                reset: Vec::new(),
                id: Some(1),
            }),
        ),
        ("plan_done", Message::PlanDone(PlanDone { plan: 1 })),
        (
            "refusal",
            Message::Error(Error {
                code: ErrorCode::FORBIDDEN,
                message: "no read grant for collection secrets".into(),
                retry_after_ms: None,
                doc: None,
                collection: Some(Collection::new("secrets").expect("valid")),
            }),
        ),
    ]
}

/// The block PROTOCOL.md shows for an example: the frame's hex on one line, then its
/// annotated decoding.
fn block(message: &Message) -> String {
    let bytes = frame::encode(message);
    let mut out = format!("{} bytes:\n", bytes.len());
    for line in bytes.chunks(32) {
        writeln!(out, "{}", hex(line).replace(' ', "")).expect("write");
    }
    out.push('\n');
    out.push_str(&annotate(&bytes));
    out
}

#[test]
fn the_worked_exchanges_in_protocol_md_are_the_encodings() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
    let mut doc = std::fs::read_to_string(&path).expect("PROTOCOL.md");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, message) in examples() {
        let marker = format!("<!-- frame: {name} -->\n```text\n");
        let start = doc
            .find(&marker)
            .unwrap_or_else(|| panic!("PROTOCOL.md has no block `{}`", marker.trim()))
            + marker.len();
        let end = start + doc[start..].find("```\n").expect("the block ends");
        let expected = block(&message);
        if update {
            doc.replace_range(start..end, &expected);
        } else {
            assert_eq!(
                doc[start..end],
                expected,
                "PROTOCOL.md's `{name}` frame is not the encoding (UPDATE_GOLDEN=1 rewrites it)"
            );
        }
    }
    if update {
        std::fs::write(&path, doc).expect("write PROTOCOL.md");
    }
}
