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
use std::time::SystemTime;

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

/// A JWKS file, re-read whenever its modification time or size changes.
pub struct KeyFile {
    path: PathBuf,
    state: parking_lot::RwLock<(Option<Stamp>, Arc<KeySet>)>,
}

type Stamp = (SystemTime, u64);

impl KeyFile {
    /// Loads the file now.
    ///
    /// # Errors
    /// [`KeyError`] if it cannot be read or parsed: at start-up a bad key file is fatal.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let stamp = stamp(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        let keys = load(path)?;
        tracing::info!(path = %path.display(), keys = keys.len(), "loaded key set");
        Ok(Self {
            path: path.into(),
            state: parking_lot::RwLock::new((Some(stamp), Arc::new(keys))),
        })
    }

    /// The current keys, reloading the file first if it changed since the last load.
    pub fn keys(&self) -> Arc<KeySet> {
        let now = stamp(&self.path).ok();
        {
            let state = self.state.read();
            if state.0 == now {
                return Arc::clone(&state.1);
            }
        }
        let mut state = self.state.write();
        if state.0 != now {
            match load(&self.path) {
                Ok(keys) => {
                    tracing::info!(path = %self.path.display(), keys = keys.len(), "reloaded key set");
                    *state = (now, Arc::new(keys));
                }
                Err(e) => {
                    tracing::error!(error = %e, "key set reload failed; keeping the previous keys");
                    state.0 = now;
                }
            }
        }
        Arc::clone(&state.1)
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

fn load(path: &Path) -> Result<KeySet, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    KeySet::parse(&text).map_err(|reason| KeyError::Parse {
        path: path.into(),
        reason,
    })
}
