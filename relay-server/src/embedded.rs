//! A relay inside another process: the same server as `syncline-relay serve`, on its own
//! runtime thread, for demos, examples and tests that want a relay without a second binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use syncline_protocol::messages::Limits;

use crate::admin::{self, AdminError};
use crate::auth::{Authenticator, Claims, dev_key};
use crate::config::RelayConfig;
use crate::server::{self, AppState, Metrics};

/// A running in-process relay on `127.0.0.1` with embedded SQLite storage and the data
/// directory's development key. Stopped (drained) when dropped.
pub struct EmbeddedRelay {
    addr: SocketAddr,
    data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why an embedded relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The data directory, its key or its database.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The runtime, thread or socket.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl EmbeddedRelay {
    /// Starts a relay on `127.0.0.1` (a port the OS picks) over `data_dir`.
    ///
    /// # Errors
    /// [`EmbeddedError`] if the data directory, the key or the socket cannot be used.
    pub fn start(data_dir: &Path) -> Result<Self, EmbeddedError> {
        let cfg = RelayConfig::default();
        let storage = Arc::new(admin::open_storage(data_dir)?);
        let (secret, _) = dev_key::load_or_create(data_dir)?;
        let auth = Authenticator::new(Some(secret), None, None, None, cfg.leeway_secs);
        let limits = Limits {
            max_frame_bytes: cfg.max_frame_bytes as u64,
            max_frames_per_s: cfg.max_frames_per_s,
            max_bytes_per_s: cfg.max_bytes_per_s,
            max_docs_per_subscription: 100_000,
            idle_timeout_ms: cfg.idle_timeout_secs.saturating_mul(1000),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("syncline-relay")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let state = {
            let _guard = runtime.enter();
            AppState::start(
                storage,
                auth,
                limits,
                Arc::new(Metrics::new()),
                server::ServerOptions::from(&cfg),
            )?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("syncline-relay".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    if let Err(e) =
                        server::serve(listener, state, shutdown, Duration::from_secs(5)).await
                    {
                        tracing::error!(error = %e, "the embedded relay failed");
                    }
                });
            })?;
        Ok(Self {
            addr,
            data_dir: data_dir.to_owned(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its WebSocket URL, `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A development token for `claims`, signed with the data directory's key.
    ///
    /// # Errors
    /// [`AdminError`] for claims the relay would refuse.
    pub fn token(&self, claims: Claims) -> Result<String, AdminError> {
        admin::issue_token(&self.data_dir, claims)
    }

    /// Drains the connections and stops.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}
