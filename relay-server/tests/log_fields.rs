//! What a connection logs carries its session, device and tenant, on whichever worker thread
//! polls it: the connection task runs under its span with `Instrument`, never holding a span
//! guard across an `.await`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use syncline_protocol::messages::DeviceClass;
use syncline_protocol::{Message, frame};
use syncline_relay::auth::Claims;
use syncline_relay::embedded::EmbeddedRelay;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Everything logged in this test process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_logs_its_session_device_and_tenant() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_owned();
    let relay = tokio::task::spawn_blocking(move || EmbeddedRelay::start(&data))
        .await
        .expect("join")
        .expect("relay");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let device = "ab".repeat(16);
    let token = relay
        .token(Claims {
            sub: "alice".into(),
            dev: device.clone(),
            ten: Some("acme".into()),
            read: vec!["todos".into()],
            write: vec!["todos".into()],
            exp: Some(now + 600),
            nbf: None,
            iat: Some(now),
            aud: None,
            iss: None,
        })
        .expect("token");
    let mut request = format!("{}/v1/sync", relay.url())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    let hello = syncline_testkit::hello("log-fields", DeviceClass::Phone);
    socket
        .send(Ws::Binary(frame::encode(&hello).into()))
        .await
        .expect("send");
    let session = loop {
        let next = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("timely")
            .expect("open")
            .expect("ok");
        if let Ws::Binary(bytes) = next
            && let Ok(Message::Welcome(welcome)) = frame::decode(&bytes, usize::MAX)
        {
            break welcome.session;
        }
    };
    // Garbage until the session closes the connection: the shell logs the close.
    for _ in 0..64 {
        if socket.send(Ws::Binary(vec![0xff; 3].into())).await.is_err() {
            break;
        }
    }
    let mut closing = None;
    for _ in 0..1500 {
        closing = captured
            .lines()
            .into_iter()
            .find(|l| l.contains("closing") && l.contains("code="));
        if closing.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closing = closing.expect("the relay logged the close within 30 s");
    assert!(closing.contains(&format!("session={session}")), "{closing}");
    assert!(closing.contains(&format!("device={device}")), "{closing}");
    assert!(closing.contains("tenant=acme"), "{closing}");
    drop(socket);
    tokio::task::spawn_blocking(move || relay.stop())
        .await
        .expect("stopped");
}
