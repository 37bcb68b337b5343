//! `syncline-relay`: the relay's command line: `serve`, and the operator commands on a data
//! directory (`token`, `devices`, `doc`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use syncline_protocol::DocId;
use syncline_relay::auth::Claims;
use syncline_relay::{Tenant, admin};

/// The Syncline relay.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (WebSocket `/v1/sync`, `/healthz`, `/readyz`, `/metrics`).
    Serve {
        /// Address to listen on (default 127.0.0.1:7878; port 0 picks a free one).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Data directory (default ./syncline-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Storage: a PostgreSQL URL (postgres://USER@HOST:PORT/DB), which several relays may
        /// share; unset, the embedded SQLite database in the data directory.
        #[arg(long)]
        storage: Option<String>,
        /// A TOML configuration file; `SYNCLINE_*` variables and flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A development relay: accept development-key tokens even beyond loopback.
        #[arg(long)]
        development: bool,
    },
    /// Print a development token signed with the data directory's key.
    Token {
        /// The relay's data directory.
        #[arg(long, env = "SYNCLINE_DATA_DIR", default_value = "./syncline-data")]
        data_dir: PathBuf,
        /// The user (`sub`).
        #[arg(long)]
        user: String,
        /// The device id (32 hex digits).
        #[arg(long)]
        device: String,
        /// Collections the device may read, comma-separated (`*` for all).
        #[arg(long, value_delimiter = ',')]
        read: Vec<String>,
        /// Collections the device may write, comma-separated (`*` for all).
        #[arg(long, value_delimiter = ',')]
        write: Vec<String>,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
    /// List the registered devices with their profile and last sync.
    Devices {
        /// The relay's data directory.
        #[arg(long, env = "SYNCLINE_DATA_DIR", default_value = "./syncline-data")]
        data_dir: PathBuf,
        /// The relays' PostgreSQL database instead (read only: nothing is written).
        #[arg(long, env = "SYNCLINE_STORAGE")]
        storage: Option<String>,
        /// Only this tenant's devices.
        #[arg(long)]
        tenant: Option<Tenant>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a document as JSON.
    Doc {
        /// The relay's data directory.
        #[arg(long, env = "SYNCLINE_DATA_DIR", default_value = "./syncline-data")]
        data_dir: PathBuf,
        /// The relays' PostgreSQL database instead (read only: nothing is written).
        #[arg(long, env = "SYNCLINE_STORAGE")]
        storage: Option<String>,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: Tenant,
        /// The document, as COLLECTION/ID.
        doc: String,
    },
    /// Write a consistent copy of the embedded database, safe while the relay runs. To
    /// restore: stop the relay, put the copy in place of `relay.db` (removing `relay.db-wal`
    /// and `relay.db-shm`), start it; devices re-send what the copy lacks.
    Backup {
        /// The relay's data directory.
        #[arg(long, env = "SYNCLINE_DATA_DIR", default_value = "./syncline-data")]
        data_dir: PathBuf,
        /// The file to write (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
}

/// mimalloc instead of the system allocator: the hub allocates and frees many small buffers per
/// change, and glibc's trimming (madvise, TLB shootdowns) showed in profiles. The workspace
/// builds it with `override`, so SQLite's C allocations go to mimalloc too: glibc trimming the
/// hub thread's arena after each commit cost a third of the relay's throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncline-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cfg: syncline_relay::RelayConfig) -> anyhow::Result<()> {
    use std::sync::Arc;
    use syncline_relay::storage::Storage as _;

    tracing_subscriber::fmt()
        .with_env_filter(
            // Automerge's own instrumentation logs every strict load that reports missing
            // dependencies (routine when validating incoming changes) as an error; the relay
            // logs what matters itself. RUST_LOG overrides this default.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,automerge=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Every connection is a file descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    for warning in cfg.check()? {
        tracing::warn!("{warning}");
    }
    match &cfg.storage {
        Some(url) => {
            let storage = syncline_relay::storage::PostgresStorage::open(url)
                .map_err(|e| anyhow::anyhow!("opening the PostgreSQL storage: {e}"))?;
            tracing::info!(epoch = storage.epoch(), "storage: PostgreSQL");
            let feed = (url.clone(), storage.health());
            serve_on(cfg, Arc::new(storage), Some(feed))
        }
        None => {
            let storage = admin::open_storage(&cfg.data_dir)?;
            storage.set_max_bytes(cfg.max_database_bytes)?;
            tracing::info!(epoch = storage.epoch(), "storage: embedded SQLite");
            serve_on(cfg, Arc::new(storage), None)
        }
    }
}

/// The relays' PostgreSQL database, for reading only.
fn read_only_postgres(url: &str) -> anyhow::Result<syncline_relay::storage::PostgresStorage> {
    syncline_relay::storage::PostgresStorage::open_read_only(url)
        .map_err(|e| anyhow::anyhow!("opening the PostgreSQL storage: {e}"))
}

/// Runs the relay on `storage` until SIGTERM or Ctrl-C, then drains. `feed`: the PostgreSQL
/// URL and health of a storage other relays share, whose change feed the relay follows.
fn serve_on<S: syncline_relay::storage::Storage>(
    cfg: syncline_relay::RelayConfig,
    storage: std::sync::Arc<S>,
    feed: Option<(String, std::sync::Arc<syncline_relay::storage::Health>)>,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::sync::Arc;
    use syncline_relay::auth::{Authenticator, KeyFile, dev_key};
    use syncline_relay::server::{self, AppState, Metrics};

    let (dev_secret, key_file) = match &cfg.jwks_file {
        Some(path) => (None, Some(KeyFile::open(path)?)),
        None => {
            let (secret, created) = dev_key::load_or_create(&cfg.data_dir)?;
            tracing::warn!(
                path = %dev_key::path(&cfg.data_dir).display(),
                created,
                "NO KEY CONFIGURED: accepting HS256 tokens signed with the DEVELOPMENT key; \
                 anyone who can read that file can connect as anyone. Set jwks_file in production."
            );
            (Some(secret), None)
        }
    };
    let auth = Authenticator::new(
        dev_secret,
        key_file,
        cfg.audience.clone(),
        cfg.issuer.clone(),
        cfg.leeway_secs,
    );
    let limits = syncline_protocol::messages::Limits {
        max_frame_bytes: cfg.max_frame_bytes as u64,
        max_frames_per_s: cfg.max_frames_per_s,
        max_bytes_per_s: cfg.max_bytes_per_s,
        max_docs_per_subscription: 100_000,
        idle_timeout_ms: cfg.idle_timeout_secs.saturating_mul(1000),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let state = AppState::start(
            storage,
            auth,
            limits,
            Arc::new(Metrics::new()),
            server::ServerOptions::from(&cfg),
        )?;
        let state = match feed {
            Some((url, health)) => state.follow_postgres(&url, health),
            None => state,
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        println!("{}", server::listening_line(addr));
        std::io::stdout().flush()?;
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "listening");
        let grace = std::time::Duration::from_secs(cfg.drain_secs);
        server::serve(listener, state, shutdown_signal(), grace).await?;
        tracing::info!("drained; exiting");
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            storage,
            config,
            development,
        } => {
            let mut cfg = match config {
                Some(path) => syncline_relay::RelayConfig::from_file(&path)?,
                None => syncline_relay::RelayConfig::default(),
            }
            .with_env(std::env::vars())?;
            if let Some(listen) = listen {
                cfg.listen = listen;
            }
            if let Some(dir) = data_dir {
                cfg.data_dir = dir;
            }
            if storage.is_some() {
                cfg.storage = storage;
            }
            cfg.development |= development;
            serve(cfg)?;
        }
        Command::Token {
            data_dir,
            user,
            device,
            read,
            write,
            tenant,
            ttl,
        } => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let claims = Claims {
                sub: user,
                dev: device,
                ten: Some(tenant),
                read,
                write,
                exp: Some(now + ttl),
                nbf: None,
                iat: Some(now),
                aud: None,
                iss: None,
            };
            println!("{}", admin::issue_token(&data_dir, claims)?);
        }
        Command::Devices {
            data_dir,
            storage,
            tenant,
            json,
        } => {
            let devices = match storage {
                Some(url) => syncline_relay::storage::Storage::devices(
                    &read_only_postgres(&url)?,
                    tenant.as_ref(),
                )?,
                None => admin::devices(&data_dir, tenant.as_ref())?,
            };
            if json {
                let list: Vec<_> = devices
                    .iter()
                    .map(|(t, d)| admin::device_json(t, d))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for (t, d) in &devices {
                    let subs: Vec<&str> = d
                        .subscriptions
                        .iter()
                        .map(|s| s.collection.as_str())
                        .collect();
                    println!(
                        "{t}  {}  {}  {:?}{}  subscribed: {}  last sync: {}",
                        d.device,
                        d.user,
                        d.profile.class,
                        if d.profile.metered { " metered" } else { "" },
                        if subs.is_empty() {
                            "-".into()
                        } else {
                            subs.join(",")
                        },
                        d.last_sync_ms
                            .map_or("never".into(), |ms| format!("{ms} ms")),
                    );
                }
            }
        }
        Command::Doc {
            data_dir,
            storage,
            tenant,
            doc,
        } => {
            let doc: DocId = doc.parse()?;
            let json = match storage {
                Some(url) => admin::document_json_in(&read_only_postgres(&url)?, &tenant, &doc)?,
                None => admin::document_json(&data_dir, &tenant, &doc)?,
            };
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Command::Backup { data_dir, to } => {
            admin::backup(&data_dir, &to)?;
            println!("{}", to.display());
        }
    }
    Ok(())
}
