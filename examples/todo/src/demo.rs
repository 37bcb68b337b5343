//! `syncline-todo demo`: the README's main job. A relay on a temporary data directory (the
//! real server, embedded SQLite), two devices with their own stores, offline edits on both
//! (one todo edited on both sides), reconnection, and what came out.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use syncline::{Collection, DeviceClass, Document, Store, SyncClient, SyncOptions, Value};
use syncline_relay::auth::Claims;
use syncline_relay::embedded::EmbeddedRelay;

const WAIT: Duration = Duration::from_secs(30);

struct Device {
    name: &'static str,
    store: Store,
    options: SyncOptions,
    token: String,
}

impl Device {
    fn open(
        name: &'static str,
        class: DeviceClass,
        dir: &std::path::Path,
        relay: &EmbeddedRelay,
    ) -> anyhow::Result<Self> {
        let store = super::open_store(&dir.join(name))?;
        let todos = Collection::new("todos")?;
        let mut options = SyncOptions::new(relay.url(), &[todos]);
        options.profile.class = class;
        options.client = format!("syncline-todo-demo/{name}");
        let token = relay.token(Claims {
            sub: "alice".into(),
            dev: store.device_id().to_string(),
            ten: None,
            read: vec!["todos".into()],
            write: vec!["todos".into()],
            exp: Some(now_secs() + 3600),
            nbf: None,
            iat: Some(now_secs()),
            aud: None,
            iss: None,
        })?;
        Ok(Self {
            name,
            store,
            options,
            token,
        })
    }

    /// Connects, syncs until nothing is pending either way, disconnects; prints the figures.
    fn sync(&self) -> anyhow::Result<()> {
        let token = self.token.clone();
        let client =
            SyncClient::start(&self.store, self.options.clone(), move || Ok(token.clone()))?;
        let started = Instant::now();
        let stats = client
            .wait_synced(WAIT, true)
            .with_context(|| format!("{} did not sync", self.name))?;
        client.stop();
        println!(
            "  {:<7} {}",
            self.name,
            super::summary(&stats, started.elapsed())
        );
        Ok(())
    }

    fn add(&self, title: &str) -> anyhow::Result<Document> {
        let todos = Collection::new("todos")?;
        let initial = Value::from_json(&serde_json::json!({"title": title, "done": false}));
        Ok(self
            .store
            .create_with(&todos, initial, Default::default())?)
    }

    fn doc(&self, of: &Document) -> anyhow::Result<Document> {
        Ok(self.store.document(of.id())?)
    }

    fn print_list(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let todos = Collection::new("todos")?;
        let items = super::list(&self.store, &todos)?;
        println!("  {}:", self.name);
        for item in &items {
            let mark = if item["done"] == true { "x" } else { " " };
            println!("    [{mark}] {}", item["title"].as_str().unwrap_or(""));
        }
        Ok(items)
    }
}

/// Runs the demo.
pub(crate) fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let relay = EmbeddedRelay::start(&dir.path().join("relay"))?;
    println!(
        "relay: listening on {} (embedded SQLite in a temporary directory)",
        relay.url()
    );
    let phone = Device::open("phone", DeviceClass::Phone, dir.path(), &relay)?;
    let laptop = Device::open("laptop", DeviceClass::Desktop, dir.path(), &relay)?;

    println!("\n1. The phone adds two todos and syncs; the laptop syncs and gets them.");
    let milk = phone.add("Buy milk")?;
    let dog = phone.add("Walk the dog")?;
    phone.sync()?;
    laptop.sync()?;

    println!("\n2. Both go offline and edit; the same todo is renamed on both.");
    phone.doc(&milk)?.put("title", "Buy oat milk")?;
    phone.add("Call mom")?;
    laptop.doc(&milk)?.put("title", "Buy almond milk")?;
    laptop.doc(&dog)?.put("done", true)?;
    laptop.add("Book dentist")?;
    println!(
        "  phone: {} pending document(s); laptop: {} pending document(s)",
        phone.store.pending_documents()?.len(),
        laptop.store.pending_documents()?.len()
    );

    println!("\n3. Both reconnect and sync.");
    phone.sync()?;
    laptop.sync()?;
    // The phone has not seen the laptop's edits yet: one more sync brings them.
    phone.sync()?;

    println!("\n4. The converged lists:");
    let on_phone = phone.print_list()?;
    let on_laptop = laptop.print_list()?;
    if on_phone != on_laptop {
        bail!("the devices did not converge");
    }
    let heads_phone = phone.doc(&milk)?.heads()?;
    let heads_laptop = laptop.doc(&milk)?.heads()?;
    if heads_phone != heads_laptop {
        bail!("the shared todo has different heads on the two devices");
    }
    println!("  identical on both devices ({} todos)", on_phone.len());

    println!("\n5. The conflict that was merged (the same field written on both devices):");
    let merged = laptop.doc(&milk)?;
    let values = merged.conflicts("title")?;
    for value in &values {
        println!("  concurrent value: {}", value.to_json());
    }
    println!(
        "  both devices show {} (Automerge picks the same winner everywhere); \
         `resolve` would settle it",
        merged
            .get("title")?
            .map(|v| v.to_json())
            .unwrap_or_default()
    );
    if values.len() != 2 {
        bail!("expected two concurrent titles, found {}", values.len());
    }
    relay.stop();
    Ok(())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
