//! Relay configuration: defaults that need no setup, overridden by a TOML file and then by
//! `SYNCLINE_*` environment variables (flags, parsed by the binary, override both).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use syncline_protocol::PayloadLimits;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration the relay refuses to run with.
    #[error("unsafe configuration: {0}")]
    Unsafe(String),
    /// Settings that do not go together, or a value that means nothing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML file does not parse, or has an unknown key or a bad value.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error, with its position.
        source: toml::de::Error,
    },
    /// An environment variable has a bad value.
    #[error("invalid {name}={value:?}: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything the relay needs to start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Address to listen on. Default `127.0.0.1:7878`.
    pub listen: SocketAddr,
    /// Directory for the embedded database and the development key. Default `./syncline-data`.
    pub data_dir: PathBuf,
    /// Largest accepted frame, in bytes. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Seconds without any frame before a connection is closed. Default 60.
    pub idle_timeout_secs: u64,
    /// Frames per second one connection may send (0: unlimited). Default 1000.
    pub max_frames_per_s: u32,
    /// Bytes per second one connection may send (0: unlimited). Default 64 MiB.
    pub max_bytes_per_s: u64,
    /// A JWKS file of RS256 / ES256 / EdDSA public keys, re-read when it changes. Without one,
    /// the relay signs and accepts HS256 tokens with a development key kept in the data
    /// directory (and says so loudly).
    pub jwks_file: Option<PathBuf>,
    /// The `aud` every token must carry, if set.
    pub audience: Option<String>,
    /// The `iss` every token must carry, if set.
    pub issuer: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`. Default 30.
    pub leeway_secs: u64,
    /// Seconds a draining relay waits for connections to close. Default 10.
    pub drain_secs: u64,
    /// Accept changes written by another device (another Automerge actor) that the relay does
    /// not hold yet. Off by default: a device can then only add changes under its own id, so
    /// history's "who wrote what" cannot be forged. A relay restored from an older backup
    /// needs no setting: devices that prove it showed them what it lost send it back
    /// (`docs/PROTOCOL.md`, "Epochs"). Turn it on to relay between independent relays.
    pub allow_foreign_changes: bool,
    /// Bytes a connection's outbox may hold before the relay closes it as a slow consumer
    /// (close code 4009; it resyncs from storage on reconnect). Default 64 MiB.
    pub outbox_bytes: usize,
    /// Compress frames with zstd for clients that offer it, where that saves bytes. On by
    /// default; turn it off to spend no CPU on it (clients then get uncompressed frames).
    pub compression: bool,
    /// On a metered network, documents whose transfer is larger than this many bytes are
    /// announced and deferred, for devices whose profile sets no threshold. Default 64 KiB.
    pub metered_max_doc_bytes: u64,
    /// Bytes the compressed Automerge chunks and columns of one frame may inflate to, in all
    /// (checked before Automerge inflates them). Default 32 MiB, at most 128 MiB.
    pub max_inflated_bytes: usize,
    /// Operations (values of any column) the Automerge payloads of one frame may declare, in
    /// all (checked before Automerge walks them). Default 2,000,000, at most 16,000,000.
    pub max_ops_per_frame: u64,
    /// Sockets open at once, in all (counted from accept, before any byte is read); past it,
    /// new sockets are closed at once. Default 10,000.
    pub max_connections: usize,
    /// WebSocket connections one device may hold open at once (HTTP 429 past it). Default 4.
    pub max_connections_per_device: usize,
    /// WebSocket connections one tenant may hold open at once (HTTP 429 past it). Default 5,000.
    pub max_connections_per_tenant: usize,
    /// Seconds a new socket may take to send its HTTP request headers. Default 10.
    pub header_timeout_secs: u64,
    /// Where the relay stores its data: unset, the embedded SQLite database in `data_dir` (no
    /// setup); `postgres://USER@HOST:PORT/DB` (or `postgresql://`), a PostgreSQL database
    /// (`docs/OPERATIONS.md`). One relay per database for now: relays sharing one do not yet
    /// tell each other what changed. `data_dir` still holds the development key.
    pub storage: Option<String>,
    /// Caps the embedded database at about this many bytes (default: none, the disk is the
    /// cap). Past it, as on a full disk, the relay refuses new changes with `STORAGE_FULL`
    /// (devices keep them and retry) and goes on serving reads.
    pub max_database_bytes: Option<u64>,
    /// A development relay: without `jwks_file` it accepts tokens signed with the development
    /// key even when listening beyond loopback. Off by default: a relay reachable from other
    /// machines refuses to start without a key set (`RelayConfig::check`).
    pub development: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("./syncline-data"),
            max_frame_bytes: 16 << 20,
            idle_timeout_secs: 60,
            max_frames_per_s: 1000,
            max_bytes_per_s: 64 << 20,
            jwks_file: None,
            audience: None,
            issuer: None,
            leeway_secs: 30,
            drain_secs: 10,
            allow_foreign_changes: false,
            outbox_bytes: 64 << 20,
            compression: true,
            metered_max_doc_bytes:
                syncline_protocol::messages::Profile::DEFAULT_METERED_MAX_DOC_BYTES,
            max_inflated_bytes: PayloadLimits::DEFAULT.max_inflated_bytes,
            max_ops_per_frame: PayloadLimits::DEFAULT.max_ops,
            max_connections: 10_000,
            max_connections_per_device: 4,
            max_connections_per_tenant: 5_000,
            header_timeout_secs: 10,
            storage: None,
            max_database_bytes: None,
            development: false,
        }
    }
}

impl RelayConfig {
    /// Refuses configurations that would expose the relay: the development key (used when no
    /// `jwks_file` is set) on an address beyond loopback, unless `development` is set.
    /// Returns warnings for what is allowed but weak (tokens' `aud` or `iss` not checked).
    ///
    /// # Errors
    /// [`ConfigError::Unsafe`] naming what to set; [`ConfigError::Invalid`] for a `storage`
    /// that is not a PostgreSQL URL, or one set together with `max_database_bytes`.
    pub fn check(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        let largest_change = syncline_protocol::messages::MAX_CHANGE_BYTES
            + syncline_protocol::messages::CHANGE_ENVELOPE_BYTES;
        if self.max_frame_bytes < largest_change {
            warnings.push(format!(
                "max_frame_bytes = {} is below the {largest_change} bytes the largest change a \
                 device may make needs: a device holding a larger change keeps it pending, \
                 with a TooLarge sync error, until the limit is raised",
                self.max_frame_bytes
            ));
        }
        if let Some(url) = &self.storage {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(format!(
                    "storage = {url:?} is not a PostgreSQL URL (postgres://USER@HOST:PORT/DB); \
                     leave it unset for the embedded SQLite database in data_dir"
                )));
            }
            if self.max_database_bytes.is_some() {
                return Err(ConfigError::Invalid(
                    "max_database_bytes caps the embedded SQLite database; with PostgreSQL \
                     storage the database server's own limits apply: unset it"
                        .into(),
                ));
            }
        }
        if self.jwks_file.is_none() {
            if !self.listen.ip().is_loopback() && !self.development {
                return Err(ConfigError::Unsafe(format!(
                    "listening on {} without jwks_file would accept tokens signed with the \
                     development key; set jwks_file, or development = true \
                     (SYNCLINE_DEVELOPMENT=true, --development) for a development relay",
                    self.listen
                )));
            }
            return Ok(warnings);
        }
        if self.audience.is_none() {
            warnings.push(
                "tokens' aud is not checked: set audience so that tokens issued for another \
                 service are refused"
                    .into(),
            );
        }
        if self.issuer.is_none() {
            warnings.push(
                "tokens' iss is not checked: set issuer so that only your issuer's tokens are \
                 accepted"
                    .into(),
            );
        }
        Ok(warnings)
    }

    /// What one frame's Automerge payloads may cost, capped where stored chunks are too
    /// (`DocGraph::load`, and what a device accepts per document): a relay cannot be
    /// configured to accept what it could not reload or its devices would refuse.
    pub fn payload_limits(&self) -> PayloadLimits {
        let cap = crate::hub::STORED_CHUNK_LIMITS;
        PayloadLimits {
            max_inflated_bytes: self.max_inflated_bytes.min(cap.max_inflated_bytes),
            max_ops: self.max_ops_per_frame.min(cap.max_ops),
        }
    }

    /// Reads a TOML file; keys it leaves out keep their defaults.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Applies `SYNCLINE_LISTEN`, `SYNCLINE_DATA_DIR`, `SYNCLINE_STORAGE`,
    /// `SYNCLINE_MAX_FRAME_BYTES`,
    /// `SYNCLINE_IDLE_TIMEOUT_SECS`, `SYNCLINE_JWKS_FILE`, `SYNCLINE_AUDIENCE` and
    /// `SYNCLINE_ISSUER`, `SYNCLINE_COMPRESSION` (`true`/`false`) and
    /// `SYNCLINE_METERED_MAX_DOC_BYTES`, `SYNCLINE_MAX_INFLATED_BYTES`,
    /// `SYNCLINE_MAX_OPS_PER_FRAME`, `SYNCLINE_MAX_CONNECTIONS` (and `_PER_DEVICE`,
    /// `_PER_TENANT`), `SYNCLINE_MAX_DATABASE_BYTES` and `SYNCLINE_DEVELOPMENT` from `vars`
    /// (pass `std::env::vars()`).
    ///
    /// # Errors
    /// [`ConfigError::Env`] for a value that does not parse.
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        for (name, value) in vars {
            match name.as_str() {
                "SYNCLINE_LISTEN" => self.listen = parse("SYNCLINE_LISTEN", &value)?,
                "SYNCLINE_DATA_DIR" => self.data_dir = PathBuf::from(value),
                "SYNCLINE_STORAGE" => self.storage = Some(value),
                "SYNCLINE_MAX_FRAME_BYTES" => {
                    self.max_frame_bytes = parse("SYNCLINE_MAX_FRAME_BYTES", &value)?;
                }
                "SYNCLINE_IDLE_TIMEOUT_SECS" => {
                    self.idle_timeout_secs = parse("SYNCLINE_IDLE_TIMEOUT_SECS", &value)?;
                }
                "SYNCLINE_JWKS_FILE" => self.jwks_file = Some(PathBuf::from(value)),
                "SYNCLINE_AUDIENCE" => self.audience = Some(value),
                "SYNCLINE_ISSUER" => self.issuer = Some(value),
                "SYNCLINE_COMPRESSION" => {
                    self.compression = parse("SYNCLINE_COMPRESSION", &value)?;
                }
                "SYNCLINE_METERED_MAX_DOC_BYTES" => {
                    self.metered_max_doc_bytes = parse("SYNCLINE_METERED_MAX_DOC_BYTES", &value)?;
                }
                "SYNCLINE_MAX_INFLATED_BYTES" => {
                    self.max_inflated_bytes = parse("SYNCLINE_MAX_INFLATED_BYTES", &value)?;
                }
                "SYNCLINE_MAX_OPS_PER_FRAME" => {
                    self.max_ops_per_frame = parse("SYNCLINE_MAX_OPS_PER_FRAME", &value)?;
                }
                "SYNCLINE_DEVELOPMENT" => {
                    self.development = parse("SYNCLINE_DEVELOPMENT", &value)?;
                }
                "SYNCLINE_MAX_CONNECTIONS" => {
                    self.max_connections = parse("SYNCLINE_MAX_CONNECTIONS", &value)?;
                }
                "SYNCLINE_MAX_CONNECTIONS_PER_DEVICE" => {
                    self.max_connections_per_device =
                        parse("SYNCLINE_MAX_CONNECTIONS_PER_DEVICE", &value)?;
                }
                "SYNCLINE_MAX_CONNECTIONS_PER_TENANT" => {
                    self.max_connections_per_tenant =
                        parse("SYNCLINE_MAX_CONNECTIONS_PER_TENANT", &value)?;
                }
                "SYNCLINE_MAX_DATABASE_BYTES" => {
                    self.max_database_bytes = Some(parse("SYNCLINE_MAX_DATABASE_BYTES", &value)?);
                }
                _ => {}
            }
        }
        Ok(self)
    }
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_key_beyond_loopback_needs_saying_so() {
        let public = RelayConfig {
            listen: "0.0.0.0:7878".parse().expect("address"),
            ..RelayConfig::default()
        };
        assert!(matches!(public.check(), Err(ConfigError::Unsafe(_))));
        let dev = RelayConfig {
            development: true,
            ..public.clone()
        };
        assert_eq!(dev.check().expect("allowed"), Vec::<String>::new());
        let keyed = RelayConfig {
            jwks_file: Some("keys.json".into()),
            ..public
        };
        let warnings = keyed.check().expect("allowed");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(RelayConfig::default().check().is_ok(), "loopback is fine");
    }

    #[test]
    fn a_frame_limit_below_the_largest_change_is_warned_of() {
        assert!(
            RelayConfig::default().check().expect("allowed").is_empty(),
            "the default frame takes the largest change"
        );
        let small = RelayConfig {
            max_frame_bytes: 1 << 20,
            ..RelayConfig::default()
        };
        let warnings = small.check().expect("allowed");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("TooLarge"), "{warnings:?}");
    }

    #[test]
    fn defaults_need_no_setup() {
        let c = RelayConfig::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(c.data_dir, PathBuf::from("./syncline-data"));
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nidle_timeout_secs = 5\ncompression = false\n\
             max_database_bytes = 1000000\n",
        )
        .expect("write");
        let c = RelayConfig::from_file(&path)
            .and_then(|c| c.with_env([("SYNCLINE_IDLE_TIMEOUT_SECS".into(), "7".into())]))
            .expect("config");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.idle_timeout_secs, 7);
        assert_eq!(c.max_frame_bytes, 16 << 20);
        assert!(!c.compression);
        assert_eq!(c.max_database_bytes, Some(1_000_000));
        let c = c
            .with_env([
                ("SYNCLINE_COMPRESSION".into(), "true".into()),
                ("SYNCLINE_MAX_DATABASE_BYTES".into(), "2000000".into()),
            ])
            .expect("config");
        assert!(c.compression);
        assert_eq!(c.max_database_bytes, Some(2_000_000));
    }

    /// Issue 17: PostgreSQL storage from the file or `SYNCLINE_STORAGE`; a URL of another
    /// kind, or the SQLite-only cap alongside it, is refused before the relay starts.
    #[test]
    fn storage_is_sqlite_by_default_or_a_postgres_url() {
        assert_eq!(RelayConfig::default().storage, None);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "storage = \"postgres://relay@db:5432/syncline\"\n").expect("write");
        let c = RelayConfig::from_file(&path).expect("config");
        assert_eq!(
            c.storage.as_deref(),
            Some("postgres://relay@db:5432/syncline")
        );
        c.check().expect("a PostgreSQL URL is fine");
        let c = c
            .with_env([("SYNCLINE_STORAGE".into(), "postgresql://other@db2/s".into())])
            .expect("config");
        assert_eq!(c.storage.as_deref(), Some("postgresql://other@db2/s"));
        let mysql = RelayConfig {
            storage: Some("mysql://db/s".into()),
            ..RelayConfig::default()
        };
        assert!(matches!(mysql.check(), Err(ConfigError::Invalid(_))));
        let capped = RelayConfig {
            max_database_bytes: Some(1 << 30),
            ..c
        };
        assert!(matches!(capped.check(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "listn = \"x\"\n").expect("write");
        assert!(matches!(
            RelayConfig::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            RelayConfig::from_file(&dir.path().join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
        let env = RelayConfig::default().with_env([("SYNCLINE_LISTEN".into(), "nope".into())]);
        assert!(matches!(
            env,
            Err(ConfigError::Env {
                name: "SYNCLINE_LISTEN",
                ..
            })
        ));
    }
}
