//! Test support shared by Syncline's end-to-end tests and benchmarks.
//!
//! [`Child`], a spawned process that is killed when dropped and whose stdout is read line by
//! line, so a test never leaves a process behind however it fails; protocol fixtures
//! ([`profile`], [`hello`]) shared by the relay's tests and benchmarks; a real relay process
//! ([`relay`]); the fault proxy between real processes ([`proxy`]); the deterministic
//! simulation ([`sim`]); the engine's port in memory ([`memory`]); the fuzz targets' bodies
//! ([`fuzz`]); a PostgreSQL server of a test's own ([`postgres`]).

pub mod fuzz;
pub mod memory;
pub mod postgres;
pub mod proxy;
pub mod relay;
pub mod sim;

use std::io::{BufRead, BufReader, Lines};
use std::process::{ChildStdout, Command, Stdio};

use syncline_protocol::Message;
use syncline_protocol::messages::{DeviceClass, Hello, Profile};

/// A child process with piped stdout, killed (SIGKILL) and reaped on drop.
pub struct Child {
    inner: std::process::Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Child {
    /// Spawns `command` with stdout piped (stderr inherited, so failures show in test output).
    ///
    /// # Errors
    /// The spawn error.
    pub fn spawn(mut command: Command) -> std::io::Result<Self> {
        let mut inner = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = inner.stdout.take().expect("stdout was piped above");
        Ok(Self {
            inner,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line the child printed, or `None` once its stdout is closed.
    ///
    /// # Errors
    /// A read error (including invalid UTF-8).
    pub fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.lines.next().transpose()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Asks the child to stop (SIGTERM on Unix), without waiting.
    ///
    /// # Errors
    /// The error of sending the signal.
    pub fn terminate(&self) -> std::io::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.id().to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -TERM failed: {status}"
            )))
        }
    }

    /// Waits for the child to exit, at most `timeout`; kills it if it does not.
    ///
    /// # Errors
    /// `TimedOut` if it had to be killed, or the wait error.
    pub fn wait_for(
        &mut self,
        timeout: std::time::Duration,
    ) -> std::io::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.inner.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.kill();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "child did not exit",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Kills the child with SIGKILL and waits for it; the child gets no chance to clean up.
    ///
    /// # Errors
    /// The wait error.
    pub fn kill(&mut self) -> std::io::Result<std::process::ExitStatus> {
        // Killing an already exited child fails harmlessly; waiting reaps it either way.
        let _ = self.inner.kill();
        self.inner.wait()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// `n` random lowercase letters from `seed`: text that does not compress away (Automerge
/// deflates large columns, and frames are compressed), for tests whose sizes must hold.
pub fn noise(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| char::from(b'a' + rng.u8(0..26))).collect()
}

/// A capability profile of `class`: unmetered, realtime, no declared budget or bandwidth.
pub fn profile(class: DeviceClass) -> Profile {
    Profile::new(class)
}

/// A version-1 `Hello` from `client` with [`profile`]`(class)`, no compression and no optional
/// feature (as a client older than the features sends it).
pub fn hello(client: &str, class: DeviceClass) -> Message {
    hello_with(client, class, Vec::new())
}

/// [`hello`] offering the optional `features` (their codes).
pub fn hello_with(client: &str, class: DeviceClass, features: Vec<u32>) -> Message {
    Message::Hello(Hello {
        versions: vec![syncline_protocol::PROTOCOL_VERSION],
        compression: vec![0],
        profile: profile(class),
        client: client.to_owned(),
        features,
    })
}

/// An engine configuration for a phone of [`profile`] syncing `subscriptions` through
/// `relay`, with short backoffs (50 ms to 2 s) and a 5 s stall timeout.
pub fn engine_config(
    relay: &str,
    subscriptions: Vec<syncline_protocol::messages::CollectionSubscription>,
) -> syncline::engine::EngineConfig {
    syncline::engine::EngineConfig {
        relay: relay.into(),
        profile: profile(DeviceClass::Phone),
        subscriptions,
        client: relay.into(),
        backoff: syncline::engine::Backoff {
            min_ms: 50,
            max_ms: 2_000,
        },
        stall_timeout_ms: 5_000,
        sync_interval_ms: 60_000,
        defer_metered_uploads: true,
    }
}

/// A fresh temporary directory, removed when dropped.
///
/// # Panics
/// If the system temp directory is unusable: nothing a test could do about it.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("the system temp directory is writable")
}

/// A temporary directory in memory (under `/dev/shm`, a tmpfs on Linux) where the system has
/// one, else [`temp_dir`]: for the simulation's many small, short-lived stores, whose files
/// must outlive a simulated crash but not the process. A tmpfs makes SQLite's `fsync` free,
/// which was a sixth of the simulation's time on disk.
pub fn memory_temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("syncline-sim")
            .tempdir_in(shm)
    {
        return dir;
    }
    temp_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_and_kills_on_drop() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two; sleep 60"]);
        let mut child = Child::spawn(cmd).expect("spawn sh");
        assert_eq!(child.next_line().expect("read").as_deref(), Some("one"));
        assert_eq!(child.next_line().expect("read").as_deref(), Some("two"));
        let status = child.kill().expect("kill");
        assert!(!status.success(), "a killed child does not exit cleanly");
    }
}
