//! Conformance transcripts (`protocol/test_data/transcripts/`): the frames of the protocol's
//! main scenarios, exchanged with a real `syncline-relay` over WebSockets, written down so that
//! another implementation can check itself against them (`docs/PROTOCOL.md`, "Conformance
//! transcripts").
//!
//! Each scenario below drives devices that follow PROTOCOL.md's rules (Automerge documents
//! written with the device id as actor and time 0, so their bytes never vary) and records
//! every frame: what a device sends, in hex, and a summary of each frame the relay answers.
//! The test fails when either differs from the transcript on file. Regenerate deliberately
//! with `UPDATE_TRANSCRIPTS=1 cargo test -p syncline-tests --test conformance`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use automerge::sync::{Message as SyncMessage, State, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ROOT, ReadDoc};
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DocId, Message, Priority, frame, sync_state};
use syncline_testkit::relay::Relay;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as WsMessage, WebSocket};

/// How long a device waits for the relay's next frame before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn doc_id(s: &str) -> DocId {
    s.parse().expect("valid")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 4 bytes of a hash, in hex: enough to tell the heads of a transcript apart.
fn short(hash: &[u8]) -> String {
    hex(&hash[..4])
}

fn heads_text(heads: &syncline_protocol::Heads) -> String {
    let hashes: Vec<String> = heads.as_slice().iter().map(|h| short(&h.0)).collect();
    format!("[{}]", hashes.join(" "))
}

/// What a transcript says of a relay's frame: its message, without what varies from run to
/// run (session id, clock, epoch and receipts, dates) or between relays (an error's text).
fn summary(message: &Message) -> String {
    let cursors = |cursors: &[Cursor]| {
        let list: Vec<String> = cursors
            .iter()
            .map(|c| format!("{}:{}", c.collection, c.seq))
            .collect();
        format!("[{}]", list.join(" "))
    };
    let docs = |entries: &[PlanEntry]| {
        let list: Vec<String> = entries.iter().map(|e| e.doc.to_string()).collect();
        format!("[{}]", list.join(" "))
    };
    match message {
        Message::Welcome(w) => format!(
            "welcome version={} compression={} features={:?} epoch={}",
            w.version,
            w.compression,
            w.features,
            if w.epoch.is_some() { "set" } else { "none" }
        ),
        Message::Plan(p) => format!(
            "plan id={} send={} deferred={} cursors={} update={} fetch={} reset={:?}",
            p.id.map_or("none".into(), |i| i.to_string()),
            docs(&p.send),
            docs(&p.deferred),
            cursors(&p.cursors),
            p.update,
            p.fetch,
            p.reset.iter().map(ToString::to_string).collect::<Vec<_>>()
        ),
        Message::PlanDone(d) => format!("plan_done plan={}", d.plan),
        Message::Sync(s) => {
            let items: Vec<String> = s
                .items
                .iter()
                .map(|i| match SyncMessage::decode(&i.message) {
                    Ok(m) => {
                        let heads: Vec<String> = m.heads.iter().map(|h| short(&h.0)).collect();
                        format!(
                            "{} heads=[{}] changes={}",
                            i.doc,
                            heads.join(" "),
                            m.changes.len()
                        )
                    }
                    Err(e) => format!("{} undecodable: {e}", i.doc),
                })
                .collect();
            let positions = s
                .positions
                .as_ref()
                .map_or(String::new(), |p| format!(" positions={}", cursors(p)));
            format!("sync {{{}}}{positions}", items.join(", "))
        }
        Message::Ack(a) => {
            let items: Vec<String> = a
                .items
                .iter()
                .map(|i| {
                    format!(
                        "{} heads={} seq={}",
                        i.doc,
                        heads_text(&i.heads),
                        i.seq.map_or("none".into(), |s| s.to_string())
                    )
                })
                .collect();
            let positions = a.positions.as_deref().map_or("none".into(), cursors);
            format!("ack {{{}}} positions={positions}", items.join(", "))
        }
        // Not its message: free text, for people (PROTOCOL.md, "Encoding").
        Message::Error(e) => format!(
            "error code={} doc={} collection={} retry_after_ms={}",
            e.code.0,
            e.doc.as_ref().map_or("none".into(), ToString::to_string),
            e.collection
                .as_ref()
                .map_or("none".into(), ToString::to_string),
            e.retry_after_ms.map_or("none".into(), |r| r.to_string()),
        ),
        other => other.name().to_owned(),
    }
}

/// One device of a scenario: its connection, its documents and their sync states.
struct Device {
    id: [u8; 16],
    read: &'static str,
    write: &'static str,
    socket: Option<WebSocket<MaybeTlsStream<TcpStream>>>,
    docs: BTreeMap<DocId, Automerge>,
    states: BTreeMap<DocId, State>,
    /// Documents a relay frame changed since the device last answered.
    touched: Vec<DocId>,
}

/// A scenario being run and written down.
struct Transcript {
    name: &'static str,
    relay: Relay,
    _dir: tempfile::TempDir,
    devices: BTreeMap<&'static str, Device>,
    lines: String,
}

impl Transcript {
    fn new(name: &'static str, about: &str) -> Self {
        let dir = syncline_testkit::temp_dir();
        let relay = Relay::start(dir.path()).expect("relay");
        let mut lines = String::new();
        for line in about.lines() {
            writeln!(lines, "# {}", line.trim()).expect("write");
        }
        Self {
            name,
            relay,
            _dir: dir,
            devices: BTreeMap::new(),
            lines,
        }
    }

    /// A device with id `[n; 16]` and a token reading and writing those collections.
    fn device(&mut self, name: &'static str, n: u8, read: &'static str, write: &'static str) {
        let id = [n; 16];
        writeln!(
            self.lines,
            "device {name} {} read={read} write={write}",
            hex(&id)
        )
        .expect("write");
        self.devices.insert(
            name,
            Device {
                id,
                read,
                write,
                socket: None,
                docs: BTreeMap::new(),
                states: BTreeMap::new(),
                touched: Vec::new(),
            },
        );
    }

    fn dev(&mut self, name: &str) -> &mut Device {
        self.devices.get_mut(name).expect("declared device")
    }

    /// Opens the device's WebSocket with its token (`Authorization: Bearer`).
    fn connect(&mut self, name: &'static str) {
        let url = format!("{}/v1/sync", self.relay.url());
        let device = &self.devices[name];
        let token = self
            .relay
            .token("alice", &hex(&device.id), device.read, device.write, 600)
            .expect("token");
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (socket, _) = tungstenite::connect(request).expect("connect");
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            tcp.set_read_timeout(Some(WAIT)).expect("timeout");
        }
        let device = self.dev(name);
        device.socket = Some(socket);
        // A new connection starts with new sync states (PROTOCOL.md, "Sync states").
        device.states.clear();
        writeln!(self.lines, "{name} connect").expect("write");
    }

    fn close(&mut self, name: &'static str) {
        if let Some(mut socket) = self.dev(name).socket.take() {
            let _ = socket.close(None);
            let _ = socket.flush();
        }
        writeln!(self.lines, "{name} close").expect("write");
    }

    /// Sends a frame, written down in hex with what it is.
    fn send_frame(&mut self, name: &'static str, bytes: Vec<u8>, what: &str) {
        writeln!(self.lines, "{name} > {}  # {what}", hex(&bytes)).expect("write");
        let socket = self.dev(name).socket.as_mut().expect("connected");
        socket.send(WsMessage::Binary(bytes.into())).expect("send");
    }

    fn send(&mut self, name: &'static str, message: &Message) {
        let what = match message {
            Message::Sync(_) => format!("{} ({})", message.name(), summary(message)),
            _ => message.name().to_owned(),
        };
        self.send_frame(name, frame::encode(message), &what);
    }

    /// Sends a text WebSocket message (not a frame).
    fn send_text(&mut self, name: &'static str, text: &str) {
        writeln!(self.lines, "{name} text {text:?}").expect("write");
        let socket = self.dev(name).socket.as_mut().expect("connected");
        socket
            .send(WsMessage::Text(text.to_owned().into()))
            .expect("send");
    }

    /// Reads the relay's next `n` frames to the device, applies what they carry, and writes
    /// down their summaries.
    fn read(&mut self, name: &'static str, n: usize) {
        for _ in 0..n {
            let message = loop {
                let socket = self.dev(name).socket.as_mut().expect("connected");
                match socket.read() {
                    Ok(WsMessage::Binary(bytes)) => {
                        break frame::decode(&bytes, usize::MAX).expect("a relay frame decodes");
                    }
                    Ok(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
                    Ok(other) => panic!("{}: {name} got {other:?}", self.name),
                    Err(e) => panic!(
                        "{}: {name} waited for a frame: {e}\nso far:\n{}",
                        self.name, self.lines
                    ),
                }
            };
            writeln!(self.lines, "{name} < {}", summary(&message)).expect("write");
            if let Message::Sync(sync) = &message {
                let device = self.dev(name);
                for item in &sync.items {
                    let m = SyncMessage::decode(&item.message).expect("decodes");
                    let doc = device.docs.entry(item.doc.clone()).or_default();
                    let state = device.states.entry(item.doc.clone()).or_default();
                    doc.receive_sync_message(state, m)
                        .expect("the relay's message applies");
                    if !device.touched.contains(&item.doc) {
                        device.touched.push(item.doc.clone());
                    }
                }
            }
        }
    }

    /// Reads the relay's frames to the device up to and including the first whose summary
    /// starts with `last` (at most 16).
    fn read_until(&mut self, name: &'static str, last: &str) {
        for _ in 0..16 {
            self.read(name, 1);
            let latest = self.lines.lines().last().unwrap_or_default();
            if latest.starts_with(&format!("{name} < {last}")) {
                return;
            }
        }
        panic!("{}: {name} never got {last}:\n{}", self.name, self.lines);
    }

    /// Writes `title` (and `done`) in the device's document, as its actor at time 0.
    fn edit(&mut self, name: &'static str, doc: &str, key: &str, value: &str) {
        let doc = doc_id(doc);
        let device = self.dev(name);
        let actor = ActorId::from(device.id.as_slice());
        let automerge = device.docs.entry(doc).or_default();
        automerge.set_actor(actor);
        let mut tx = automerge.transaction();
        if value == "true" || value == "false" {
            tx.put(ROOT, key, value == "true").expect("put");
        } else {
            tx.put(ROOT, key, value).expect("put");
        }
        tx.commit_with(CommitOptions::default().with_time(0));
    }

    /// Sends the device's messages for `docs`, one `Sync` frame. A document without a sync
    /// state on this connection starts primed with nothing (the whole document goes).
    fn push(&mut self, name: &'static str, docs: &[&str]) {
        let device = self.dev(name);
        let mut items = Vec::new();
        for doc in docs {
            let doc = doc_id(doc);
            let automerge = device.docs.get_mut(&doc).expect("the device holds it");
            let state = device
                .states
                .entry(doc.clone())
                .or_insert_with(|| sync_state::primed(Vec::new()));
            if let Some(message) = automerge.generate_sync_message(state) {
                items.push(SyncItem {
                    doc,
                    message: message.encode(),
                    priority: Some(Priority::Normal),
                });
            }
        }
        self.send(
            name,
            &Message::Sync(Sync {
                items,
                positions: None,
            }),
        );
    }

    /// Answers what the relay's frames brought (its heads, or what it still needs), as a
    /// client does once per received frame; nothing when the heads are equal.
    fn answer(&mut self, name: &'static str) {
        let device = self.dev(name);
        let touched = std::mem::take(&mut device.touched);
        let mut items = Vec::new();
        for doc in touched {
            let automerge = device.docs.get_mut(&doc).expect("held");
            let state = device.states.entry(doc.clone()).or_default();
            if let Some(message) = automerge.generate_sync_message(state) {
                items.push(SyncItem {
                    doc,
                    message: message.encode(),
                    priority: None,
                });
            }
        }
        if items.is_empty() {
            // Automerge has nothing to say: the relay's last message showed the heads the
            // device holds (PROTOCOL.md, "Sync states": settled).
            writeln!(self.lines, "{name} (nothing to answer: heads equal)").expect("write");
            return;
        }
        self.send(
            name,
            &Message::Sync(Sync {
                items,
                positions: None,
            }),
        );
    }

    fn hello(&mut self, name: &'static str) {
        let hello = syncline_testkit::hello_with(
            "conformance/1",
            DeviceClass::Desktop,
            vec![Feature::PlanDone.code()],
        );
        self.send(name, &hello);
    }

    fn subscribe(&mut self, name: &'static str, collections: &[&str]) {
        let collections = collections
            .iter()
            .map(|c| CollectionSubscription {
                collection: Collection::new(*c).expect("valid"),
                priority: Priority::Normal,
                mode: SyncMode::Eager,
            })
            .collect();
        self.send(name, &Message::Subscribe(Subscribe { collections }));
    }

    fn reconcile(&mut self, name: &'static str, cursors: &[(&str, u64)]) {
        let cursors = cursors
            .iter()
            .map(|(c, seq)| Cursor {
                collection: Collection::new(*c).expect("valid"),
                seq: *seq,
                epoch: None,
                receipt: None,
            })
            .collect();
        self.send(
            name,
            &Message::Reconcile(Reconcile {
                cursors,
                changed: Vec::new(),
                fetched: None,
                acked: None,
            }),
        );
    }

    /// Waits until the relay handled everything the device sent: a `Reconcile` naming no
    /// collection is answered (an empty plan, then its end) only after the frames before it
    /// (the relay handles a connection's frames in order). Without it, the device's last
    /// frame and another device's could meet in one group commit, and the relay's answer
    /// would differ from run to run.
    fn barrier(&mut self, name: &'static str) {
        self.reconcile(name, &[]);
        self.read_until(name, "plan_done");
    }

    fn title(&self, name: &str, doc: &str) -> Option<String> {
        let automerge = self.devices[name].docs.get(&doc_id(doc))?;
        let (value, _) = automerge.get(ROOT, "title").ok()??;
        value.into_string().ok()
    }

    /// Checks the transcript against the file (or writes it, with `UPDATE_TRANSCRIPTS`).
    fn finish(self) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../protocol/test_data/transcripts")
            .join(format!("{}.txt", self.name));
        if std::env::var_os("UPDATE_TRANSCRIPTS").is_some() {
            std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
            std::fs::write(&path, &self.lines).expect("write transcript");
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_TRANSCRIPTS=1 to write it)",
                path.display()
            )
        });
        for (n, (want, got)) in expected.lines().zip(self.lines.lines()).enumerate() {
            assert_eq!(
                got,
                want,
                "{}: line {} differs from the transcript",
                self.name,
                n + 1
            );
        }
        assert_eq!(
            self.lines.lines().count(),
            expected.lines().count(),
            "{}: transcript length",
            self.name
        );
    }

    /// The first sync every scenario but the refusals starts from: the phone (device 01…01)
    /// wrote todos/milk offline and connects with its first flight; the laptop (02…02), new,
    /// connects and gets it through its plan, and answers.
    fn first_sync(&mut self) {
        self.device("phone", 1, "todos", "todos");
        self.device("laptop", 2, "todos", "todos");
        self.edit("phone", "todos/milk", "title", "Buy milk");
        self.open("phone", &["todos"]);
        self.push("phone", &["todos/milk"]);
        self.reconcile("phone", &[]);
        // The push's Ack, then the plan and its end.
        self.read_until("phone", "plan_done");
        self.open("laptop", &["todos"]);
        self.reconcile("laptop", &[]);
        // Plan, the document, PlanDone.
        self.read_until("laptop", "plan_done");
        self.answer("laptop");
    }

    /// Opens the connection and goes through `Hello`, `Welcome` and `Subscribe`.
    fn open(&mut self, name: &'static str, collections: &[&str]) {
        self.connect(name);
        self.hello(name);
        self.read(name, 1);
        self.subscribe(name, collections);
    }
}

/// A first sync: the phone writes a todo offline and connects (its first flight: `Hello`,
/// `Subscribe`, the `Sync` of what the relay has not acknowledged, `Reconcile`); the laptop,
/// new, connects and gets it through a plan.
#[test]
fn first_sync() {
    let mut t = Transcript::new(
        "first_sync",
        "A first sync. The phone wrote todos/milk offline and connects: Hello, Subscribe,\n\
         the Sync of its unacknowledged document (primed with no heads: the whole document),\n\
         then Reconcile with no cursor. The relay answers Welcome, acknowledges the push\n\
         (nothing in it needed another answer), and plans. Then the laptop, new, gets the\n\
         todo through its plan and answers with its heads.",
    );
    t.first_sync();
    assert_eq!(t.title("laptop", "todos/milk").as_deref(), Some("Buy milk"));
    t.finish();
}

/// A push and its acknowledgement on a live connection, and the push to the other device.
#[test]
fn push_and_ack() {
    let mut t = Transcript::new(
        "push_and_ack",
        "A live push. Both devices are connected and caught up; the phone changes a todo.\n\
         The relay acknowledges it to the phone and pushes it to the laptop (with the\n\
         position it holds it at), which answers with its heads.",
    );
    t.first_sync();
    t.barrier("laptop");
    // Live.
    t.edit("phone", "todos/milk", "done", "true");
    t.push("phone", &["todos/milk"]);
    t.read_until("phone", "ack");
    t.read_until("laptop", "sync");
    t.answer("laptop");
    t.finish();
}

/// A reconnect: the laptop comes back with its cursor and gets only what changed after it.
#[test]
fn reconcile() {
    let mut t = Transcript::new(
        "reconcile",
        "A reconnect. The laptop synced todos/milk (cursor todos:1) and left; the phone\n\
         then wrote todos/bread. The laptop reconnects with its cursor: its plan sends only\n\
         todos/bread, and its cursors move to todos:2.",
    );
    t.first_sync();
    t.close("laptop");
    t.edit("phone", "todos/bread", "title", "Buy bread");
    t.push("phone", &["todos/bread"]);
    t.read_until("phone", "ack");
    t.open("laptop", &["todos"]);
    t.reconcile("laptop", &[("todos", 1)]);
    t.read_until("laptop", "plan_done");
    t.answer("laptop");
    assert_eq!(
        t.title("laptop", "todos/bread").as_deref(),
        Some("Buy bread")
    );
    t.finish();
}

/// Refusals, each of which leaves the connection usable.
#[test]
fn refusal() {
    let mut t = Transcript::new(
        "refusal",
        "Refusals, each leaving the connection usable. A malformed first frame, then a\n\
         good Hello. A Subscribe naming a collection the token cannot read: that collection\n\
         alone is refused (Error with `collection`), todos is subscribed. A Sync item whose\n\
         change another actor wrote: one Error with `doc` and a retry delay, and nothing else\n\
         for it. A text WebSocket message, a frame of an unknown type, a Reconcile without its\n\
         required `changed`. Then a push is acknowledged and the Reconcile planned.",
    );
    t.device("phone", 1, "todos", "todos");
    t.connect("phone");
    t.send_frame(
        "phone",
        vec![0x00, 0x82, 0x01, 0xa0],
        "hello with an empty map",
    );
    t.read("phone", 1);
    t.hello("phone");
    t.read("phone", 1);
    t.subscribe("phone", &["todos", "secrets"]);
    t.read("phone", 1);
    // A document whose change device 09…09's actor wrote, sent by the phone.
    let mut other = Automerge::new();
    other.set_actor(ActorId::from([9u8; 16].as_slice()));
    let mut tx = other.transaction();
    tx.put(ROOT, "title", "someone else's").expect("put");
    tx.commit_with(CommitOptions::default().with_time(0));
    t.dev("phone").docs.insert(doc_id("todos/forged"), other);
    t.push("phone", &["todos/forged"]);
    t.read("phone", 1);
    t.send_text("phone", "hello?");
    t.read("phone", 1);
    // Type 99 with an empty map.
    t.send_frame(
        "phone",
        vec![0x00, 0x82, 0x18, 0x63, 0xa0],
        "unknown type 99",
    );
    t.read("phone", 1);
    // Reconcile (type 4) with only `cursors` (key 0): `changed` (key 1) is required.
    t.send_frame(
        "phone",
        vec![0x00, 0x82, 0x04, 0xa1, 0x00, 0x80],
        "reconcile without changed",
    );
    t.read("phone", 1);
    t.edit("phone", "todos/milk", "title", "Buy milk");
    t.push("phone", &["todos/milk"]);
    t.reconcile("phone", &[]);
    t.read_until("phone", "plan_done");
    t.finish();
}

/// A concurrent edit: both devices change the same todo without having seen the other's
/// change; both end with both changes and the same heads.
#[test]
fn concurrent_edit() {
    let mut t = Transcript::new(
        "concurrent_edit",
        "A concurrent edit. Both devices hold todos/milk; the phone renames it and the laptop\n\
         marks it done, neither having seen the other's change. Each push is acknowledged and\n\
         pushed to the other device; both end with both changes and the same heads.",
    );
    t.first_sync();
    t.barrier("laptop");
    // Both edit before either hears of the other's change.
    t.edit("phone", "todos/milk", "title", "Buy oat milk");
    t.edit("laptop", "todos/milk", "done", "true");
    t.push("phone", &["todos/milk"]);
    t.read_until("phone", "ack");
    // The laptop's change goes before it reads the push of the phone's.
    t.push("laptop", &["todos/milk"]);
    t.read_until("laptop", "ack");
    t.read_until("phone", "sync");
    t.answer("phone");
    t.answer("laptop");
    let heads =
        |t: &Transcript, name: &str| t.devices[name].docs[&doc_id("todos/milk")].get_heads();
    assert_eq!(heads(&t, "phone"), heads(&t, "laptop"), "converged");
    assert_eq!(
        t.title("laptop", "todos/milk").as_deref(),
        Some("Buy oat milk")
    );
    t.finish();
}

#[test]
fn transcripts_on_file_are_all_checked() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../protocol/test_data/transcripts");
    let mut on_file: Vec<String> = std::fs::read_dir(&dir)
        .expect("transcripts")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    on_file.sort();
    assert_eq!(
        on_file,
        [
            "concurrent_edit.txt",
            "first_sync.txt",
            "push_and_ack.txt",
            "reconcile.txt",
            "refusal.txt"
        ]
    );
}
