//! Authentication: who is connecting, and what they may touch.
//!
//! A client presents a JWT on the WebSocket upgrade. [`Authenticator::verify`] checks it
//! against the configured keys and the current time (passed in, so the check is deterministic
//! and testable) and returns the [`Identity`] and [`Grants`] it carries, or an [`AuthError`]
//! whose [`AuthError::reason`] labels the failure in logs and metrics.
//!
//! Keys: a development HS256 secret ([`dev_key`]), and RS256 / ES256 / EdDSA public keys from
//! a JWKS file selected by `kid` ([`keys::KeyFile`], reloaded when the file changes). The
//! algorithm a key may be used with is fixed by the key itself, never by the token, so
//! `alg: none` and algorithm confusion (an HS256 token "signed" with a public key) are refused.

pub mod claims;
pub mod dev_key;
pub mod keys;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

pub use claims::{Audience, Claims, CollectionSet, Grants, Identity};
pub use keys::{KeyError, KeyFile};

/// The `kid` of tokens signed with the development secret.
pub const DEV_KID: &str = "dev";

/// Why a token was refused. Tells the client little (always HTTP 401 / `UNAUTHORIZED`); the
/// variant goes to the log and the `reason` label of the auth-failure metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// Not three base64url segments with a JSON header.
    #[error("malformed token")]
    Malformed,
    /// The header says `alg: none`.
    #[error("unsigned token (alg none)")]
    AlgNone,
    /// An algorithm this relay does not accept (HS384, PS256, ...), or HS256 with no
    /// development key configured.
    #[error("algorithm not accepted: {0}")]
    AlgNotAccepted(String),
    /// No key with the token's `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKey(Option<String>),
    /// The token's `alg` is not the algorithm of the key its `kid` names.
    #[error("algorithm {token} does not match key {kid} ({key})")]
    AlgMismatch {
        /// The key id.
        kid: String,
        /// The algorithm the token claims.
        token: String,
        /// The key's algorithm.
        key: String,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway), or missing.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is missing or not this relay's audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is missing or not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// The claims are missing or invalid (device id, tenant, collection names).
    #[error("bad claims: {0}")]
    BadClaims(String),
}

impl AuthError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::AlgNone => "alg_none",
            Self::AlgNotAccepted(_) => "alg_not_accepted",
            Self::UnknownKey(_) => "unknown_key",
            Self::AlgMismatch { .. } => "alg_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::BadClaims(_) => "bad_claims",
        }
    }
}

/// A verified token: who, what they may do, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// User, device and tenant.
    pub identity: Identity,
    /// Read and write grants per collection.
    pub grants: Grants,
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// `exp` plus the clock-skew leeway: until when a live connection may use the token.
    pub valid_until: u64,
}

/// Checks tokens. Cheap to share between connections.
pub struct Authenticator {
    dev_secret: Option<Vec<u8>>,
    key_file: Option<KeyFile>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
}

impl Authenticator {
    /// An authenticator with the given keys. `audience` and `issuer`, when set, are required
    /// in every token. `leeway_secs` absorbs clock skew on `exp` and `nbf`.
    pub fn new(
        dev_secret: Option<Vec<u8>>,
        key_file: Option<KeyFile>,
        audience: Option<String>,
        issuer: Option<String>,
        leeway_secs: u64,
    ) -> Self {
        Self {
            dev_secret,
            key_file,
            audience,
            issuer,
            leeway_secs,
        }
    }

    /// Verifies `token` at time `now_secs` (seconds since the Unix epoch).
    ///
    /// # Errors
    /// The [`AuthError`] naming the first check that failed.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Verified, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        refuse_alg_none(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let key = self.key_for(&header)?;
        let mut validation = Validation::new(header.alg);
        // Time is checked below against `now_secs`, not the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
            ErrorKind::Json(e) => AuthError::BadClaims(e.to_string()),
            ErrorKind::InvalidAlgorithm => AuthError::AlgNotAccepted(format!("{:?}", header.alg)),
            _ => AuthError::Malformed,
        })?;
        let claims = data.claims;
        let exp = claims.exp.ok_or(AuthError::Expired)?;
        if now_secs > exp.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now_secs.saturating_add(self.leeway_secs) < nbf)
        {
            return Err(AuthError::NotYetValid);
        }
        let (identity, grants) = claims.validate().map_err(AuthError::BadClaims)?;
        Ok(Verified {
            identity,
            grants,
            expires_at: exp,
            valid_until: exp.saturating_add(self.leeway_secs),
        })
    }

    fn key_for(&self, header: &Header) -> Result<DecodingKey, AuthError> {
        match header.alg {
            Algorithm::HS256 => {
                let secret = self.dev_secret.as_ref().ok_or_else(|| {
                    AuthError::AlgNotAccepted("HS256 (no development key configured)".into())
                })?;
                match header.kid.as_deref() {
                    None | Some(DEV_KID) => Ok(DecodingKey::from_secret(secret)),
                    // An HS256 token naming a public key: the classic algorithm confusion.
                    Some(kid) => Err(AuthError::AlgMismatch {
                        kid: kid.to_owned(),
                        token: "HS256".into(),
                        key: self
                            .key_file
                            .as_ref()
                            .and_then(|f| f.keys().get(kid).map(|(alg, _)| format!("{alg:?}")))
                            .unwrap_or_else(|| "unknown".into()),
                    }),
                }
            }
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let kid = header.kid.clone().ok_or(AuthError::UnknownKey(None))?;
                let keys = self.key_file.as_ref().map(KeyFile::keys);
                let (alg, key) = keys
                    .as_ref()
                    .and_then(|k| k.get(&kid))
                    .ok_or_else(|| AuthError::UnknownKey(Some(kid.clone())))?;
                if *alg != header.alg {
                    return Err(AuthError::AlgMismatch {
                        kid,
                        token: format!("{:?}", header.alg),
                        key: format!("{alg:?}"),
                    });
                }
                Ok(key.clone())
            }
            other => Err(AuthError::AlgNotAccepted(format!("{other:?}"))),
        }
    }
}

/// Refuses `alg: none` explicitly (in any letter case), before any other parsing, so that it
/// is reported as what it is.
fn refuse_alg_none(token: &str) -> Result<(), AuthError> {
    let header = token.split('.').next().ok_or(AuthError::Malformed)?;
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    match value.get("alg").and_then(|a| a.as_str()) {
        Some(alg) if alg.eq_ignore_ascii_case("none") => Err(AuthError::AlgNone),
        Some(_) => Ok(()),
        None => Err(AuthError::Malformed),
    }
}

/// Signs `claims` with the development secret (HS256, `kid: dev`), for `syncline-relay token`
/// and tests.
///
/// # Panics
/// Never: HS256 signing with a byte secret cannot fail.
pub fn issue_dev_token(secret: &[u8], claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(DEV_KID.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
        .expect("HS256 signing with a byte secret cannot fail")
}
