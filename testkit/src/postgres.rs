//! A PostgreSQL server of a test's own: `initdb` into a temporary directory, listening on
//! 127.0.0.1 at a free port (and a socket in that directory), stopped when dropped.
//!
//! The binaries come from `$SYNCLINE_PG_BIN`, else the directory `pg_ctl` on `PATH` links to
//! if it holds them all, else the newest `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package). PostgreSQL
//! refuses to run as root: as root, every command runs as the `postgres` user through
//! `runuser`. The server trusts local connections (user `syncline`, no password) and runs
//! with `fsync=off`: a test outlives neither its server nor an operating-system crash. When
//! PostgreSQL cannot start, [`PostgresServer::start`] says why: the suite fails, it is never
//! skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// PostgreSQL's programs these servers run.
const PROGRAMS: [&str; 5] = ["initdb", "pg_ctl", "createdb", "pg_dump", "psql"];

/// The database user every test server creates.
pub const USER: &str = "syncline";

/// A running PostgreSQL server, stopped (immediately) and deleted on drop.
pub struct PostgresServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
    /// Whether it flushes commits to disk (benchmarks; tests need not).
    durable: bool,
}

impl PostgresServer {
    /// Creates a cluster and starts it.
    ///
    /// # Errors
    /// Why PostgreSQL cannot run here (no binaries, `initdb` or `pg_ctl` failed), with what
    /// to install.
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// [`PostgresServer::start`] with `fsync` on, as a production server runs: for benchmarks
    /// that compare it with the relay's SQLite (which flushes every commit).
    ///
    /// # Errors
    /// As [`PostgresServer::start`].
    pub fn start_durable() -> Result<Self, String> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, String> {
        let bin = binaries()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("syncline-pg")
            .tempdir()
            .map_err(|e| format!("a temporary directory for PostgreSQL: {e}"))?;
        if as_postgres {
            run(Command::new("chown").args(["postgres:", &path_str(dir.path())]))?;
        }
        let port = free_port()?;
        let mut server = Self {
            dir,
            bin,
            port,
            as_postgres,
            running: false,
            durable,
        };
        let data = server.data_dir();
        server.pg(
            "initdb",
            &[
                "-D",
                &path_str(&data),
                "-U",
                USER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates the database `name` and returns its URL.
    ///
    /// # Errors
    /// `createdb`'s error.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.pg(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                name,
            ],
        )?;
        Ok(self.url(name))
    }

    /// A backup of database `from` restored as database `to` (`pg_dump` to a file, then
    /// `psql` into a new database): what an operator does. Returns the copy's URL.
    ///
    /// # Errors
    /// `pg_dump`'s, `createdb`'s or `psql`'s error.
    pub fn copy_database(&self, from: &str, to: &str) -> Result<String, String> {
        let dump = path_str(&self.dir.path().join(format!("{from}.sql")));
        let port = self.port.to_string();
        let at = ["-h", "127.0.0.1", "-p", &port, "-U", USER];
        self.pg("pg_dump", &[&at[..], &["-f", &dump, from]].concat())?;
        self.create_database(to)?;
        self.pg(
            "psql",
            &[&at[..], &["-v", "ON_ERROR_STOP=1", "-q", "-f", &dump, to]].concat(),
        )?;
        Ok(self.url(to))
    }

    /// The result of `sql` run by `psql` on `database`, unaligned, without headers.
    ///
    /// # Errors
    /// `psql`'s error.
    pub fn query(&self, database: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let output = self.pg(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                USER,
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                database,
            ],
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: like a crash, nothing flushed
    /// beyond what committed), keeping its data.
    ///
    /// # Errors
    /// `pg_ctl`'s error.
    pub fn stop(&mut self) -> Result<(), String> {
        if self.running {
            self.running = false;
            self.pg(
                "pg_ctl",
                &[
                    "-D",
                    &path_str(&self.data_dir()),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, with the same data.
    ///
    /// # Errors
    /// `pg_ctl`'s error, with the server's log.
    pub fn start_again(&mut self) -> Result<(), String> {
        let flush = if self.durable {
            ""
        } else {
            "-c fsync=off -c full_page_writes=off "
        };
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} {flush}-c max_connections=200",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("server.log");
        match self.pg(
            "pg_ctl",
            &[
                "-D",
                &path_str(&self.data_dir()),
                "-l",
                &path_str(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ) {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(e) => Err(format!(
                "{e}\nserver log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs PostgreSQL's program `name` (as `postgres` when this process is root).
    fn pg(&self, name: &str, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        // Its working directory must be readable by the user it runs as.
        command.args(args).current_dir(self.dir.path());
        run(&mut command)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the test's PostgreSQL server: {e}");
        }
    }
}

/// Runs `command`; its output, or what went wrong with its stderr.
fn run(command: &mut Command) -> Result<Output, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Where PostgreSQL's programs are.
fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SYNCLINE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    // A directory with every program these tests run (a `pg_ctl` linked alone into
    // /usr/local/bin is not one), after resolving links.
    let complete = |dir: &Path| PROGRAMS.iter().all(|p| dir.join(p).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        let found = std::env::split_paths(&path)
            .filter_map(|d| std::fs::canonicalize(d.join("pg_ctl")).ok())
            .filter_map(|p| p.parent().map(Path::to_owned))
            .find(|d| complete(d));
        if let Some(dir) = found {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    complete(&bin).then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL is not installed: these tests start a server of their own. Install it \
         (Debian: `apt-get install postgresql`) or set SYNCLINE_PG_BIN to the directory of \
         initdb and pg_ctl."
            .to_owned()
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A port nothing listens on at 127.0.0.1 now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("a free port: {e}"))
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
