//! Public keys for RS256, ES256 and EdDSA tokens, from a JWKS file reloaded when it changes.
//!
//! Each key's algorithm is fixed by the key (RSA → RS256, EC P-256 → ES256, OKP Ed25519 →
//! EdDSA); a key whose JWK `alg` says otherwise is refused. Keys of other types in the file
//! (encryption keys, other curves) are skipped with a warning. A file that fails to load while
//! the relay runs leaves the previous keys in force, so a half-written file never locks every
//! device out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Why a key file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a JWKS document.
    #[error("key file {path} is not a JWKS document: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The usable keys of a key set, by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl KeySet {
    /// Parses a JWKS document.
    ///
    /// # Errors
    /// A description of what is wrong with the document.
    pub fn parse(json: &str) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                tracing::warn!("skipping a key without kid");
                continue;
            };
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                _ => {
                    tracing::warn!(kid, "skipping a key of an unsupported type or curve");
                    continue;
                }
            };
            if let Some(declared) = jwk.common.key_algorithm {
                let declared = format!("{declared:?}");
                if declared != format!("{alg:?}") {
                    return Err(format!(
                        "key {kid} declares alg {declared} but is a {alg:?} key"
                    ));
                }
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
            if keys.insert(kid.clone(), (alg, key)).is_some() {
                return Err(format!("duplicate kid {kid}"));
            }
        }
        Ok(Self { keys })
    }

    /// The algorithm and key for `kid`.
    pub fn get(&self, kid: &str) -> Option<&(Algorithm, DecodingKey)> {
        self.keys.get(kid)
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A JWKS file, re-read whenever its modification time or size changes, and compared by
/// content every [`KeyFile::RECHECK`] (a rotation that keeps both, as an editor or a deploy
/// tool can within the clock's granularity, is still seen).
pub struct KeyFile {
    path: PathBuf,
    recheck: Duration,
    state: parking_lot::RwLock<Loaded>,
}

struct Loaded {
    stamp: Option<Stamp>,
    /// The file's bytes as last read.
    content: Vec<u8>,
    checked: Instant,
    keys: Arc<KeySet>,
}

type Stamp = (SystemTime, u64);

impl KeyFile {
    /// How often the file's content is compared when its stamp has not changed.
    pub const RECHECK: Duration = Duration::from_secs(5);

    /// Loads the file now.
    ///
    /// # Errors
    /// [`KeyError`] if it cannot be read or parsed: at start-up a bad key file is fatal.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        Self::open_with(path, Self::RECHECK)
    }

    /// [`KeyFile::open`], comparing the content every `recheck`.
    ///
    /// # Errors
    /// As [`KeyFile::open`].
    pub fn open_with(path: &Path, recheck: Duration) -> Result<Self, KeyError> {
        let read_error = |source| KeyError::Read {
            path: path.into(),
            source,
        };
        let stamp = stamp(path).map_err(read_error)?;
        let content = std::fs::read(path).map_err(read_error)?;
        let keys = parse(path, &content)?;
        tracing::info!(path = %path.display(), keys = keys.len(), "loaded key set");
        Ok(Self {
            path: path.into(),
            recheck,
            state: parking_lot::RwLock::new(Loaded {
                stamp: Some(stamp),
                content,
                checked: Instant::now(),
                keys: Arc::new(keys),
            }),
        })
    }

    /// The current keys, reloading the file first if it changed since the last load.
    pub fn keys(&self) -> Arc<KeySet> {
        let now = stamp(&self.path).ok();
        let due = |loaded: &Loaded| loaded.stamp != now || loaded.checked.elapsed() >= self.recheck;
        {
            let loaded = self.state.read();
            if !due(&loaded) {
                return Arc::clone(&loaded.keys);
            }
        }
        let mut loaded = self.state.write();
        if due(&loaded) {
            loaded.stamp = now;
            loaded.checked = Instant::now();
            match std::fs::read(&self.path) {
                Ok(content) if content == loaded.content => {}
                Ok(content) => match parse(&self.path, &content) {
                    Ok(keys) => {
                        tracing::info!(path = %self.path.display(), keys = keys.len(), "reloaded key set");
                        loaded.keys = Arc::new(keys);
                        loaded.content = content;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "key set reload failed; keeping the previous keys");
                        loaded.content = content;
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "key set unreadable; keeping the previous keys");
                }
            }
        }
        Arc::clone(&loaded.keys)
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

fn parse(path: &Path, content: &[u8]) -> Result<KeySet, KeyError> {
    let text = std::str::from_utf8(content).map_err(|e| KeyError::Parse {
        path: path.into(),
        reason: format!("not UTF-8: {e}"),
    })?;
    KeySet::parse(text).map_err(|reason| KeyError::Parse {
        path: path.into(),
        reason,
    })
}
