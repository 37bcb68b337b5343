//! The change feed of a PostgreSQL storage shared by several relays: a task on the relay's
//! runtime that `LISTEN`s on [`CHANGES_CHANNEL`] and tells the hub which collections other
//! relays committed in, as (tenant, collection, sequence), never the change
//! ([`crate::hub::Hub::remote_changes`]).
//!
//! Each time the feed connects (the first time too) it `LISTEN`s first and only then asks the
//! hub to compare every collection's sequence with what it has seen
//! ([`crate::hub::Hub::remote_resync`]): whatever was committed while it was away is caught up
//! on, and nothing falls between. A resync that meets the storage away is asked for again
//! (with pauses) until it works. The feed also checks the connection every [`FEED_CHECK`] (a
//! dead network sends no error), and asks for a resync every [`FEED_RESYNC`] whether it is
//! connected or not (a lost notification, a feed that cannot connect while the storage
//! connection works). While it is disconnected, `/readyz` answers 503.
//!
//! Notifications are drained as they come, whatever the hub is doing, and coalesced per
//! collection (the highest sequence), so a flood of commits costs one bounded map and one hub
//! turn, and PostgreSQL's notification queue never fills because of this relay.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use parking_lot::Mutex;
use syncline_protocol::Collection;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::HubCommand;
use crate::storage::{CHANGES_CHANNEL, Health, parse_notification};
use crate::tenant::Tenant;

/// How often the feed checks that its connection still answers.
pub const FEED_CHECK: Duration = Duration::from_secs(5);

/// How often the feed asks the hub to compare every collection anyway (a lost notification
/// is then caught up on within this time).
pub const FEED_RESYNC: Duration = Duration::from_secs(60);

/// The feed connection's `application_name` in `pg_stat_activity`.
pub const FEED_APPLICATION_NAME: &str = "syncline-relay feed";

/// How long the feed waits for its connection to answer a check before it reconnects.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Collections announced and not yet handed to the hub, with a wake-up for the forwarder.
#[derive(Default)]
struct Announced {
    moved: Mutex<HashMap<(Tenant, Collection), u64>>,
    wake: Notify,
}

/// Follows other relays' commits until `shutdown`: see the module documentation. `url` is the
/// storage's; `health` is the storage's, which this feed reports into (and whose storage
/// connection's notifications it skips: they are this relay's own commits).
pub(super) async fn follow(
    url: String,
    health: Arc<Health>,
    hub: mpsc::Sender<HubCommand>,
    shutdown: CancellationToken,
) {
    let config = match tokio_postgres::Config::from_str(&url) {
        Ok(mut config) => {
            if config.get_connect_timeout().is_none() {
                config.connect_timeout(crate::storage::POSTGRES_CONNECT_TIMEOUT);
            }
            if config.get_tcp_user_timeout().is_none() {
                config.tcp_user_timeout(crate::storage::POSTGRES_DEAD_PEER);
            }
            // What an operator sees in pg_stat_activity, apart from the storage connection.
            config.application_name(FEED_APPLICATION_NAME);
            config
        }
        Err(e) => {
            tracing::error!(error = %e, "change feed: the storage URL does not parse");
            health.set_feed_up(false);
            return;
        }
    };
    // Resyncs run apart from the connection: after each connect, and every FEED_RESYNC even
    // while the feed cannot connect (the storage connection may still work).
    let resync = Arc::new(Notify::new());
    let resyncer = tokio::spawn(resyncs(Arc::clone(&resync), hub.clone(), shutdown.clone()));
    let _stop_resyncs = AbortOnDrop(resyncer.abort_handle());
    let mut backoff = pauses();
    loop {
        let started = tokio::time::Instant::now();
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            result = run_once(&config, &health, &hub, &resync, &shutdown) => result,
        };
        health.set_feed_up(false);
        match connected {
            Ok(Outcome::Stopped) => return,
            Ok(Outcome::Lost(why)) => {
                tracing::warn!(%why, "change feed: connection lost; reconnecting");
                // A connection that held a while starts the pauses over; one dropped at once
                // (a server killing it) does not, so the feed never reconnects in a tight loop.
                if started.elapsed() >= STABLE {
                    backoff = pauses();
                }
            }
            Err(e) => tracing::warn!(error = %e, "change feed: could not connect"),
        }
        let pause = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// How long a feed connection must have lasted for its loss to start the reconnect pauses
/// over.
const STABLE: Duration = Duration::from_secs(10);

/// Asks the hub to resync when `trigger` fires or every [`FEED_RESYNC`], and again (with
/// pauses) until a resync worked: one that met the storage away is not lost.
async fn resyncs(trigger: Arc<Notify>, hub: mpsc::Sender<HubCommand>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = trigger.notified() => {}
            () = tokio::time::sleep(FEED_RESYNC) => {}
        }
        let mut retry = pauses();
        loop {
            let (done, worked) = tokio::sync::oneshot::channel();
            if hub.send(HubCommand::RemoteResync(done)).await.is_err() {
                return;
            }
            if worked.await.unwrap_or(false) {
                break;
            }
            let pause = retry.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Reconnect pauses: 100 ms, doubling, at most 5 s, with jitter (relays restarting together
/// do not reconnect in step).
fn pauses() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How a connected feed ended.
enum Outcome {
    /// The relay is stopping (the hub is gone).
    Stopped,
    /// The connection broke or stopped answering.
    Lost(String),
}

/// One connection of the feed, from connect to loss.
async fn run_once(
    config: &tokio_postgres::Config,
    health: &Arc<Health>,
    hub: &mpsc::Sender<HubCommand>,
    resync: &Notify,
    shutdown: &CancellationToken,
) -> Result<Outcome, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let announced = Arc::new(Announced::default());
    // The connection must be polled for the client's queries to run; it also carries the
    // notifications, which it records as they come.
    let driver = {
        let announced = Arc::clone(&announced);
        let health = Arc::clone(health);
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        // This relay's own commits were fanned out as they were made (its
                        // storage connection's process now: it changes when it reconnects).
                        let own = health.storage_pid();
                        if own != 0 && n.process_id() == own {
                            continue;
                        }
                        if let Some((tenant, collection, seq)) = parse_notification(n.payload()) {
                            let mut moved = announced.moved.lock();
                            let reached = moved.entry((tenant, collection)).or_insert(0);
                            *reached = (*reached).max(seq);
                            drop(moved);
                            announced.wake.notify_one();
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e.to_string(),
                    None => return "the server closed the connection".to_owned(),
                }
            }
        })
    };
    let _abort = AbortOnDrop(driver.abort_handle());
    let listen = format!("LISTEN {CHANGES_CHANNEL}");
    match tokio::time::timeout(CHECK_TIMEOUT, client.batch_execute(&listen)).await {
        Ok(result) => result?,
        Err(_) => return Ok(Outcome::Lost("LISTEN did not answer".into())),
    }
    health.set_feed_up(true);
    tracing::info!("change feed: following other relays' commits");
    // Listening: whatever was committed before is caught up on by comparing every collection.
    resync.notify_one();
    let mut check = tokio::time::interval(FEED_CHECK);
    check.tick().await;
    let mut driver = driver;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(Outcome::Stopped),
            ended = &mut driver => {
                return Ok(Outcome::Lost(ended.unwrap_or_else(|e| e.to_string())));
            }
            () = announced.wake.notified() => {
                let moved: Vec<(Tenant, Collection, u64)> = announced
                    .moved
                    .lock()
                    .drain()
                    .map(|((tenant, collection), seq)| (tenant, collection, seq))
                    .collect();
                if !moved.is_empty() && hub.send(HubCommand::RemoteChanges(moved)).await.is_err() {
                    return Ok(Outcome::Stopped);
                }
            }
            _ = check.tick() => {
                match tokio::time::timeout(CHECK_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Ok(Outcome::Lost(e.to_string())),
                    Err(_) => return Ok(Outcome::Lost("the connection stopped answering".into())),
                }
            }
        }
    }
}

/// Aborts the connection's driver when the feed leaves it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
