//! A real `syncline-relay` process for end-to-end tests and benchmarks: built on demand,
//! started on `127.0.0.1` with a port the OS picks, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Child;

/// The path of a binary of this workspace in the same target profile as the running
/// executable, built with `cargo build -p PACKAGE --bin NAME` if it is not there yet.
///
/// # Panics
/// If the binary cannot be built: nothing a test could do about it.
pub fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable has a path");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("in a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "-q", "-p", package, "--bin", name]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// A running relay with its own data directory.
pub struct Relay {
    child: Child,
    /// Its address, `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data directory (holding the development key).
    pub data_dir: PathBuf,
}

impl Relay {
    /// Starts `syncline-relay serve` on `data_dir` and waits until it listens.
    ///
    /// # Errors
    /// If it cannot be spawned or exits before listening.
    pub fn start(data_dir: &Path) -> std::io::Result<Self> {
        Self::start_at(data_dir, "127.0.0.1:0")
    }

    /// [`Relay::start`] on a given address (to restart a relay where its clients expect it).
    ///
    /// # Errors
    /// As [`Relay::start`].
    pub fn start_at(data_dir: &Path, listen: &str) -> std::io::Result<Self> {
        Self::start_with(data_dir, listen, None)
    }

    /// [`Relay::start_at`] with a TOML configuration (written to the data directory).
    ///
    /// # Errors
    /// As [`Relay::start`], or if the file cannot be written.
    pub fn start_with(data_dir: &Path, listen: &str, toml: Option<&str>) -> std::io::Result<Self> {
        let mut cmd = Command::new(workspace_binary("syncline-relay", "syncline-relay"));
        cmd.args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn,automerge=off");
        if let Some(toml) = toml {
            std::fs::create_dir_all(data_dir)?;
            let path = data_dir.join("relay.toml");
            std::fs::write(&path, toml)?;
            cmd.arg("--config").arg(path);
        }
        let mut child = Child::spawn(cmd)?;
        for _ in 0..20 {
            match child.next_line()? {
                Some(line) => {
                    if let Some(addr) = line.strip_prefix("syncline-relay listening on ") {
                        return Ok(Self {
                            child,
                            addr: addr.trim().to_owned(),
                            data_dir: data_dir.to_owned(),
                        });
                    }
                }
                None => break,
            }
        }
        Err(std::io::Error::other("the relay exited before listening"))
    }

    /// The WebSocket URL of the relay.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A development token for `device` (a device id in hex or any string the relay accepts)
    /// with read and write grants on `collections` (comma-separated), valid `ttl_secs`.
    ///
    /// # Errors
    /// If the token command fails.
    pub fn token(
        &self,
        user: &str,
        device: &str,
        read: &str,
        write: &str,
        ttl_secs: u64,
    ) -> std::io::Result<String> {
        token(&self.data_dir, user, device, read, write, ttl_secs)
    }

    /// Writes a backup of the running relay's database to `to` with `syncline-relay backup`.
    ///
    /// # Errors
    /// If the backup command fails.
    pub fn backup(&self, to: &Path) -> std::io::Result<()> {
        let output = Command::new(workspace_binary("syncline-relay", "syncline-relay"))
            .args(["backup", "--data-dir"])
            .arg(&self.data_dir)
            .arg("--to")
            .arg(to)
            .output()?;
        if !output.status.success() {
            return Err(std::io::Error::other(format!(
                "syncline-relay backup failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// The HTTP status of `GET path` on the relay (`/readyz`, `/healthz`).
    ///
    /// # Errors
    /// If the relay cannot be reached or does not answer HTTP.
    pub fn http_status(&self, path: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))
    }

    /// Kills the relay with SIGKILL.
    ///
    /// # Errors
    /// The wait error.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill().map(|_| ())
    }

    /// The process, for graceful stops.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// Copies the development key of `from` (a relay's data directory, where it made one) to
/// `to`: relays given the same key accept each other's tokens, as relays sharing a database do.
///
/// # Errors
/// The copy's.
pub fn share_dev_key(from: &Path, to: &Path) -> std::io::Result<()> {
    use syncline_relay::auth::dev_key;
    std::fs::create_dir_all(to)?;
    std::fs::copy(dev_key::path(from), dev_key::path(to)).map(|_| ())
}

/// A development token signed with `data_dir`'s key (see [`Relay::token`]).
///
/// # Errors
/// If the token command fails.
pub fn token(
    data_dir: &Path,
    user: &str,
    device: &str,
    read: &str,
    write: &str,
    ttl_secs: u64,
) -> std::io::Result<String> {
    let output = Command::new(workspace_binary("syncline-relay", "syncline-relay"))
        .args(["token", "--data-dir"])
        .arg(data_dir)
        .args([
            "--user", user, "--device", device, "--read", read, "--write", write,
        ])
        .args(["--ttl", &ttl_secs.to_string()])
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "syncline-relay token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
