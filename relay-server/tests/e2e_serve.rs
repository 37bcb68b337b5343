//! End to end: the real `syncline-relay serve` process, raw WebSocket protocol clients.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use automerge::sync::{State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use futures_util::{SinkExt, StreamExt};
use syncline_protocol::messages::*;
use syncline_protocol::{Collection, DocId, Message, Priority, frame};
use syncline_relay::Tenant;
use syncline_relay::admin;
use syncline_relay::auth::Claims;
use syncline_testkit::Child;
use tokio_tungstenite::tungstenite::{self, Message as Ws, client::IntoClientRequest};

/// A tenant by name (test names are valid).
fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a valid tenant")
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

struct Relay {
    child: Child,
    addr: String,
}

fn start(data: &Path) -> Relay {
    start_with(data, None)
}

/// [`start`] with a TOML configuration.
fn start_with(data: &Path, toml: Option<&str>) -> Relay {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncline-relay"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env(
            "RUST_LOG",
            std::env::var("RELAY_LOG").unwrap_or_else(|_| "warn,automerge=off".into()),
        );
    if let Some(toml) = toml {
        let path = data.join("relay.toml");
        std::fs::create_dir_all(data).expect("data dir");
        std::fs::write(&path, toml).expect("write config");
        cmd.arg("--config").arg(path);
    }
    let mut child = Child::spawn(cmd).expect("spawn relay");
    let line = child
        .next_line()
        .expect("read")
        .expect("the relay prints its address");
    let addr = line.rsplit(' ').next().expect("address").to_owned();
    Relay { child, addr }
}

fn token(data: &Path, device: u8, read: &[&str], write: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = Claims {
        sub: format!("user{device}"),
        dev: format!("{device:02x}").repeat(16),
        ten: Some("acme".into()),
        read: read.iter().map(|s| s.to_string()).collect(),
        write: write.iter().map(|s| s.to_string()).collect(),
        exp: Some(now + 600),
        nbf: None,
        iat: Some(now),
        aud: None,
        iss: None,
    };
    admin::issue_token(data, claims).expect("token")
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

async fn connect(
    addr: &str,
    bearer: Option<&str>,
    subprotocol: Option<&str>,
) -> Result<Socket, tungstenite::Error> {
    let mut request = format!("ws://{addr}/v1/sync").into_client_request()?;
    if let Some(t) = bearer {
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    if let Some(t) = subprotocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            format!("syncline.v1, bearer.{t}").parse().expect("header"),
        );
    }
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

/// A protocol client with its own Automerge documents.
struct Device {
    socket: Socket,
    /// The device id as its Automerge actor: the relay refuses changes by other actors.
    actor: automerge::ActorId,
    docs: HashMap<DocId, Automerge>,
    states: HashMap<DocId, State>,
    received: Vec<Message>,
}

impl Device {
    async fn join(addr: &str, token: &str, device: u8) -> Self {
        let socket = connect(addr, Some(token), None).await.expect("connect");
        Self::joined(socket, device).await
    }

    /// [`Device::join`] over a socket with a tiny receive buffer, so that the relay's writes
    /// to it block as soon as it stops reading.
    async fn join_slow(addr: &str, token: &str, device: u8) -> Self {
        let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
        tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = tcp
            .connect(addr.parse().expect("address"))
            .await
            .expect("connect");
        let mut request = format!("ws://{addr}/v1/sync")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (socket, _) = tokio_tungstenite::client_async(
            request,
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("upgrade");
        Self::joined(socket, device).await
    }

    async fn joined(socket: Socket, device: u8) -> Self {
        let mut d = Self {
            socket,
            actor: automerge::ActorId::from([device; 16].as_slice()),
            docs: HashMap::new(),
            states: HashMap::new(),
            received: Vec::new(),
        };
        d.send(syncline_testkit::hello("e2e", DeviceClass::Phone))
            .await;
        assert!(matches!(d.next().await, Message::Welcome(_)));
        d.send(Message::Subscribe(Subscribe {
            collections: vec![CollectionSubscription {
                collection: Collection::new("todos").expect("valid"),
                priority: Priority::Normal,
                mode: SyncMode::Eager,
            }],
        }))
        .await;
        d
    }

    async fn send(&mut self, m: Message) {
        self.socket
            .send(Ws::Binary(frame::encode(&m).into()))
            .await
            .expect("send");
    }

    async fn next(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timely")
                .expect("open")
                .expect("ok");
            if let Ws::Binary(bytes) = frame {
                let m = frame::decode(&bytes, 1 << 24).expect("valid frame");
                self.received.push(m.clone());
                return m;
            }
        }
    }

    fn put(&mut self, d: &DocId, key: &str, value: i64) {
        let doc = self.docs.entry(d.clone()).or_default();
        doc.set_actor(self.actor.clone());
        let mut tx = doc.transaction();
        tx.put(ROOT, key, value).expect("put");
        tx.commit();
    }

    fn get(&self, d: &DocId, key: &str) -> Option<i64> {
        self.docs.get(d)?.get(ROOT, key).ok()??.0.as_i64()
    }

    async fn push(&mut self, d: &DocId) {
        let doc = self.docs.entry(d.clone()).or_default();
        let state = self.states.entry(d.clone()).or_default();
        if let Some(m) = doc.generate_sync_message(state) {
            self.send(Message::Sync(Sync {
                items: vec![SyncItem {
                    doc: d.clone(),
                    message: m.encode(),
                    priority: None,
                }],
                positions: None,
            }))
            .await;
        }
    }

    /// Handles messages (answering sync messages) until `done` holds.
    async fn until(&mut self, done: impl Fn(&Self) -> bool) {
        for _ in 0..200 {
            if done(self) {
                return;
            }
            if let Message::Sync(sync) = self.next().await {
                for item in sync.items {
                    let doc = self.docs.entry(item.doc.clone()).or_default();
                    let state = self.states.entry(item.doc.clone()).or_default();
                    let m = automerge::sync::Message::decode(&item.message).expect("sync message");
                    doc.receive_sync_message(state, m).expect("apply");
                    self.push(&item.doc).await;
                }
            }
        }
        panic!("condition not reached");
    }

    /// Writes to document `id`, pushes it, and answers the relay until it is acknowledged.
    async fn write_acknowledged(&mut self, id: &str) {
        let x: DocId = id.parse().expect("id");
        self.put(&x, "n", 1);
        self.push(&x).await;
        self.until(|d| d.acked(&x)).await;
    }

    fn acked(&self, d: &DocId) -> bool {
        self.received.iter().any(|m| matches!(m, Message::Ack(a) if a.items.iter().any(|i| &i.doc == d && i.seq.is_some())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_authentication() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = start(dir.path());
    assert_eq!(http_get(&relay.addr, "/healthz").0, 200);
    assert_eq!(http_get(&relay.addr, "/readyz").0, 200);
    for bearer in [None, Some("garbage"), Some("e30.e30.e30")] {
        match connect(&relay.addr, bearer, None).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("expected 401, got {:?}", other.map(|_| "a connection")),
        }
    }
    let t = token(dir.path(), 1, &["todos"], &["todos"]);
    let mut by_subprotocol = connect(&relay.addr, None, Some(&t))
        .await
        .expect("subprotocol token accepted");
    by_subprotocol
        .send(Ws::Binary(vec![0, 0x82, 0x18, 99, 0xa0].into()))
        .await
        .expect("send");
    let reply = tokio::time::timeout(WAIT, by_subprotocol.next())
        .await
        .expect("timely")
        .expect("open")
        .expect("ok");
    let Ws::Binary(bytes) = reply else {
        panic!("{reply:?}")
    };
    assert!(
        matches!(frame::decode(&bytes, 1 << 20), Ok(Message::Error(e)) if e.code == ErrorCode::OUT_OF_ORDER || e.code == ErrorCode::UNKNOWN_MESSAGE)
    );
    let (_, metrics) = http_get(&relay.addr, "/metrics");
    assert!(metrics.contains("syncline_connections 1"), "{metrics}");
    assert!(
        metrics.contains("syncline_auth_failures_total{reason=\"missing\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"malformed\""), "{metrics}");
    for exported in [
        "syncline_storage_full_total 0",
        "syncline_corrupt_documents_total 0",
        "syncline_failed_loads_total 0",
    ] {
        assert!(metrics.contains(exported), "{exported} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_fan_out_and_acknowledged_changes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = start(dir.path());
    let x: DocId = "todos/x".parse().expect("id");
    let mut a = Device::join(
        &relay.addr,
        &token(dir.path(), 1, &["todos"], &["todos"]),
        1,
    )
    .await;
    let mut b = Device::join(
        &relay.addr,
        &token(dir.path(), 2, &["todos"], &["todos"]),
        2,
    )
    .await;
    let mut c = Device::join(&relay.addr, &token(dir.path(), 3, &["todos"], &[]), 3).await;
    a.put(&x, "n", 42);
    a.push(&x).await;
    let x2 = x.clone();
    a.until(|d| d.acked(&x2)).await;
    let x3 = x.clone();
    b.until(|d| d.get(&x3, "n") == Some(42)).await;
    let x4 = x.clone();
    c.until(|d| d.get(&x4, "n") == Some(42)).await;
    // A second change depends on the first: it must be accepted and fanned out too.
    a.put(&x, "n", 43);
    a.push(&x).await;
    let x6 = x.clone();
    b.until(|d| d.get(&x6, "n") == Some(43)).await;

    relay.child.kill().expect("SIGKILL");
    drop((a, b, c));
    let relay = start(dir.path());
    let mut d = Device::join(&relay.addr, &token(dir.path(), 4, &["todos"], &[]), 4).await;
    d.send(Message::Reconcile(Reconcile {
        cursors: vec![],
        changed: vec![],
        fetched: None,
        acked: None,
    }))
    .await;
    let x5 = x.clone();
    d.until(|d| d.get(&x5, "n") == Some(43)).await;
    assert!(
        d.received
            .iter()
            .any(|m| matches!(m, Message::Plan(p) if p.send.iter().any(|e| e.doc == x)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_going_away_and_exits_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = start(dir.path());
    let mut a = Device::join(
        &relay.addr,
        &token(dir.path(), 1, &["todos"], &["todos"]),
        1,
    )
    .await;
    a.write_acknowledged("todos/x").await;
    relay.child.terminate().expect("SIGTERM");
    let close = loop {
        match tokio::time::timeout(WAIT, a.socket.next())
            .await
            .expect("timely")
        {
            Some(Ok(Ws::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    let status = relay.child.wait_for(WAIT).expect("exits");
    assert!(status.success(), "{status:?}");
    // The drain let the hub record the session's end (its last sync) before exiting.
    let devices = admin::devices(dir.path(), Some(&tenant("acme"))).expect("devices");
    assert!(
        devices.iter().any(|(_, d)| d.last_sync_ms.is_some()),
        "{devices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_errors_then_a_close_and_harms_no_one_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = start(dir.path());
    let mut good = Device::join(
        &relay.addr,
        &token(dir.path(), 1, &["todos"], &["todos"]),
        1,
    )
    .await;
    let mut bad = Device::join(
        &relay.addr,
        &token(dir.path(), 2, &["todos"], &["todos"]),
        2,
    )
    .await;
    let mut closed = None;
    for i in 0..20u8 {
        if bad
            .socket
            .send(Ws::Binary(vec![0, 0xff, i, 0x13].into()))
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(WAIT, bad.socket.next())
            .await
            .expect("timely")
        {
            Some(Ok(Ws::Close(frame))) => {
                closed = frame;
                break;
            }
            Some(Ok(Ws::Binary(bytes))) => {
                assert!(
                    matches!(frame::decode(&bytes, 1 << 20), Ok(Message::Error(e)) if e.code == ErrorCode::BAD_FRAME)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        closed.map(|f| u16::from(f.code)),
        Some(1002),
        "closed after repeated bad frames"
    );
    good.write_acknowledged("todos/still-fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_close_the_connection_however_fragmented_and_harm_no_one() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("relay.toml"), "max_frame_bytes = 4096\n").expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncline-relay"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("relay.toml"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn,automerge=off");
    let mut child = Child::spawn(cmd).expect("spawn relay");
    let line = child.next_line().expect("read").expect("address");
    let addr = line.rsplit(' ').next().expect("address").to_owned();
    async fn ends(d: &mut Device) -> bool {
        tokio::time::timeout(WAIT, async {
            loop {
                match d.socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Ws::Close(_))) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .is_ok()
    }
    // Over the limit in one message: the WebSocket layer refuses it before buffering it.
    let mut d = Device::join(&addr, &token(dir.path(), 1, &["todos"], &["todos"]), 1).await;
    let _ = d.socket.send(Ws::Binary(vec![0u8; 5000].into())).await;
    assert!(ends(&mut d).await, "the connection ends");
    // Over the limit in fragments, each under it: the same bound holds for what is buffered.
    let mut d = Device::join(&addr, &token(dir.path(), 2, &["todos"], &["todos"]), 2).await;
    let first = Frame::message(vec![0u8; 3000], OpCode::Data(Data::Binary), false);
    let rest = Frame::message(vec![0u8; 3000], OpCode::Data(Data::Continue), false);
    let _ = d.socket.send(Ws::Frame(first)).await;
    let _ = d.socket.send(Ws::Frame(rest)).await;
    assert!(ends(&mut d).await, "the connection ends");
    assert_eq!(http_get(&addr, "/healthz").0, 200, "the relay lives on");
    // Another device syncs as before.
    let mut ok = Device::join(&addr, &token(dir.path(), 3, &["todos"], &["todos"]), 3).await;
    ok.write_acknowledged("todos/fine").await;
}

/// A device that stops reading is closed with SLOW_CONSUMER (4009) once its outbox holds more
/// bytes than allowed, instead of the relay buffering without bound (fan-out batches many
/// documents per message, so a bound in messages alone would not do); it then resyncs from
/// storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_resyncs_from_storage() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A 1 MiB outbox: the 7 MB the writer sends cannot all wait for the slow device.
    // No rate limits: the writer pushes as fast as it can, and rates are not what this tests.
    let relay = start_with(
        dir.path(),
        Some("outbox_bytes = 1048576\nmax_frames_per_s = 0\nmax_bytes_per_s = 0\n"),
    );
    let mut slow = Device::join_slow(
        &relay.addr,
        &token(dir.path(), 1, &["todos"], &["todos"]),
        1,
    )
    .await;
    let mut writer = Device::join(
        &relay.addr,
        &token(dir.path(), 2, &["todos"], &["todos"]),
        2,
    )
    .await;
    // One frame per change (each fans out as one message to the slow device), paced under the
    // relay's frame rate; 8 KB each, so the socket buffers fill and the outbox behind them.
    // Incompressible (Automerge deflates its columns): pseudo-random hex, ~8 KB deflated.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let payload: String = (0..16 << 10)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b"0123456789abcdef"[(seed % 16) as usize])
        })
        .collect();
    let docs: Vec<DocId> = (0..900)
        .map(|i| format!("todos/d{i}").parse().expect("valid"))
        .collect();
    for d in &docs {
        let doc = writer.docs.entry(d.clone()).or_default();
        doc.set_actor(writer.actor.clone());
        let mut tx = doc.transaction();
        tx.put(ROOT, "text", payload.as_str()).expect("put");
        tx.commit();
        // Primed: the first message carries the change, so no reply is needed to store it.
        writer
            .states
            .insert(d.clone(), syncline_protocol::sync_state::primed(Vec::new()));
        writer.push(d).await;
    }
    // The writer's own frames were all acknowledged (the relay kept up with it).
    let last = docs.last().expect("docs").clone();
    for _ in 0..10_000 {
        if writer.acked(&last) {
            break;
        }
        match tokio::time::timeout(WAIT, writer.socket.next()).await {
            Ok(Some(Ok(Ws::Binary(bytes)))) => {
                let m = frame::decode(&bytes, 1 << 24).expect("valid frame");
                writer.received.push(m);
            }
            Ok(Some(Ok(_))) => {}
            other => {
                let acks = writer
                    .received
                    .iter()
                    .filter(|m| matches!(m, Message::Ack(_)))
                    .count();
                let errors: Vec<_> = writer
                    .received
                    .iter()
                    .filter(|m| matches!(m, Message::Error(_)))
                    .take(3)
                    .collect();
                panic!("writer stopped hearing after {acks} acks: {other:?}, errors {errors:?}");
            }
        }
    }
    assert!(
        writer.acked(&last),
        "the writer's changes were acknowledged"
    );
    // The slow device finds its connection closed once it reads again: with 4009 when the
    // close frame still fit, or reset when the socket stayed full past the send timeout.
    let mut ended = None;
    for _ in 0..20_000 {
        match tokio::time::timeout(WAIT, slow.socket.next()).await {
            Ok(Some(Ok(Ws::Close(frame)))) => {
                ended = Some(frame.map(|f| u16::from(f.code)));
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => {
                ended = Some(None);
                break;
            }
            Err(_) => break,
        }
    }
    match ended {
        Some(Some(code)) => assert_eq!(code, syncline_protocol::close_code::SLOW_CONSUMER),
        Some(None) => {}
        None => panic!("the slow consumer's connection stayed open"),
    }
    // Reconnected, it gets everything from storage.
    let mut again = Device::join(
        &relay.addr,
        &token(dir.path(), 1, &["todos"], &["todos"]),
        1,
    )
    .await;
    again
        .send(Message::Reconcile(Reconcile {
            cursors: Vec::new(),
            changed: Vec::new(),
            fetched: None,
            acked: None,
        }))
        .await;
    // Everything arrives from storage, whole documents batched many to a frame.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        if seen.len() == docs.len() {
            break;
        }
        if let Message::Sync(sync) = again.next().await {
            for item in sync.items {
                let doc = again.docs.entry(item.doc.clone()).or_default();
                let m = automerge::sync::Message::decode(&item.message).expect("sync message");
                doc.receive_sync_message(&mut State::new(), m)
                    .expect("apply");
                assert!(doc.get(ROOT, "text").expect("read").is_some());
                seen.insert(item.doc);
            }
        }
    }
    assert_eq!(
        seen.len(),
        docs.len(),
        "the reconnected device got every document"
    );
}

/// The frame rate and the idle timeout, over real sockets: a device that floods gets
/// `RATE_LIMITED` with a retry delay, then a close with `LIMITS` if it keeps on; a silent one
/// is closed with `IDLE`; one that only sends WebSocket pings (heartbeats) stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_and_the_idle_timeout_are_enforced_over_real_sockets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = start_with(
        dir.path(),
        Some("idle_timeout_secs = 2\nmax_frames_per_s = 20\n"),
    );
    let tok = |n| token(dir.path(), n, &["todos"], &["todos"]);
    let mut flooder = Device::join(&relay.addr, &tok(1), 1).await;
    let mut silent = Device::join(&relay.addr, &tok(2), 2).await;
    let silent_since = std::time::Instant::now();
    let mut beating = Device::join(&relay.addr, &tok(3), 3).await;
    let mut pinging = Device::join(&relay.addr, &tok(4), 4).await;

    // Flood: far more frames at once than 20 per second allow.
    let presence = Message::Ephemeral(Ephemeral {
        doc: "todos/x".parse().expect("id"),
        payload: b"cursor".as_slice().into(),
        from: None,
    });
    let mut rate_limited = None;
    let mut closed = None;
    for _ in 0..200 {
        if flooder
            .socket
            .send(Ws::Binary(frame::encode(&presence).into()))
            .await
            .is_err()
        {
            break;
        }
    }
    while closed.is_none() {
        match tokio::time::timeout(WAIT, flooder.socket.next())
            .await
            .expect("timely")
        {
            Some(Ok(Ws::Binary(bytes))) => {
                if let Ok(Message::Error(e)) = frame::decode(&bytes, 1 << 20)
                    && e.code == ErrorCode::RATE_LIMITED
                {
                    rate_limited.get_or_insert(e.retry_after_ms);
                }
            }
            Some(Ok(Ws::Close(frame))) => closed = Some(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        matches!(rate_limited, Some(Some(ms)) if ms > 0),
        "RATE_LIMITED with a retry delay: {rate_limited:?}"
    );
    assert_eq!(closed, Some(Some(4008)), "closed for persisting");

    // Idle: the silent device is closed after about 2 s, and so is one that only pings (only
    // protocol frames count); the SDK's keepalive (an empty Sync) keeps the other open.
    let started = std::time::Instant::now();
    let mut silent_closed = None;
    let keepalive = Message::Sync(Sync {
        items: Vec::new(),
        positions: None,
    });
    // (The flood's presence messages reach both devices first; they do not count as the
    // silent device's activity.)
    while started.elapsed() < Duration::from_secs(8) {
        beating.send(keepalive.clone()).await;
        let _ = pinging.socket.send(Ws::Ping(Vec::new().into())).await;
        match tokio::time::timeout(Duration::from_millis(400), silent.socket.next()).await {
            Ok(Some(Ok(Ws::Close(frame)))) => {
                silent_closed = Some(frame.map(|f| u16::from(f.code)));
                break;
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("silent: {other:?} after {:?}", started.elapsed()),
        }
    }
    assert_eq!(
        silent_closed,
        Some(Some(4002)),
        "the silent device closed as idle"
    );
    assert!(
        silent_since.elapsed() >= Duration::from_millis(1500),
        "not before its time"
    );
    let pinged_closed = tokio::time::timeout(WAIT, async {
        loop {
            match pinging.socket.next().await {
                Some(Ok(Ws::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        }
    })
    .await
    .expect("timely");
    assert_eq!(pinged_closed, Some(4002), "pings are not activity");
    // Still open after more than the idle timeout, thanks to its keepalives: it gets answers.
    beating.send(presence.clone()).await;
    beating.write_acknowledged("todos/heartbeat").await;
}

/// Sockets that send nothing (or trickle headers) are closed after the header timeout; past
/// the socket cap new sockets are closed at once; past the per-device cap a device's extra
/// WebSocket gets HTTP 429. None of it stops an honest device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_time_out_and_connections_are_capped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = start_with(
        dir.path(),
        Some("header_timeout_secs = 1\nmax_connections = 3\nmax_connections_per_device = 1\n"),
    );
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&relay.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fourth socket is over the cap: closed before anything is read.
    let mut over = TcpStream::connect(&relay.addr).expect("connect");
    over.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(
        matches!(over.read(&mut buf), Ok(0) | Err(_)),
        "closed at once"
    );
    // The silent ones are closed after the header timeout (1 s), trickling or not.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.write_all(b"GET /healthz HT");
        let started = std::time::Instant::now();
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut first = Device::join(
        &relay.addr,
        &token(dir.path(), 1, &["todos"], &["todos"]),
        1,
    )
    .await;
    let again = connect(
        &relay.addr,
        Some(&token(dir.path(), 1, &["todos"], &["todos"])),
        None,
    )
    .await;
    assert!(
        matches!(&again, Err(tungstenite::Error::Http(r)) if r.status() == 429),
        "{again:?}"
    );
    first.write_acknowledged("todos/capped").await;
}
