//! `syncline-relay`: the relay's command line. Today it has the operator commands on a data
//! directory; `serve` joins them with the relay's sessions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use syncline_protocol::DocId;
use syncline_relay::admin;
use syncline_relay::auth::Claims;

/// The Syncline relay.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        /// Only this tenant's devices.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a document as JSON.
    Doc {
        /// The relay's data directory.
        #[arg(long, env = "SYNCLINE_DATA_DIR", default_value = "./syncline-data")]
        data_dir: PathBuf,
        /// The tenant.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The document, as COLLECTION/ID.
        doc: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syncline-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
            tenant,
            json,
        } => {
            let devices = admin::devices(&data_dir, tenant.as_deref())?;
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
            tenant,
            doc,
        } => {
            let doc: DocId = doc.parse()?;
            let json = admin::document_json(&data_dir, &tenant, &doc)?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(())
}
