//! The token accept/reject matrix of the relay's authenticator.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use syncline_protocol::Collection;
use syncline_relay::auth::{self, Audience, AuthError, Authenticator, Claims, KeyFile, dev_key};

const NOW: u64 = 1_800_000_000;
const DEV_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/keys")
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        dev: "00112233445566778899aabbccddeeff".into(),
        ten: Some("acme".into()),
        read: vec!["todos".into(), "notes".into()],
        write: vec!["todos".into()],
        exp: Some(NOW + 3600),
        nbf: None,
        iat: Some(NOW),
        aud: Some("syncline".into()),
        iss: Some("https://id.example".into()),
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Claims) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn private(name: &str) -> Vec<u8> {
    std::fs::read(keys_dir().join(name)).expect("fixture key")
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&private(name)).expect("rsa key")
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&private("ec-1.key")).expect("ec key")
}

fn authenticator(dev: bool) -> Authenticator {
    let keys = KeyFile::open(&keys_dir().join("jwks.json")).expect("jwks");
    Authenticator::new(
        dev.then(|| DEV_SECRET.to_vec()),
        Some(keys),
        Some("syncline".into()),
        Some("https://id.example".into()),
        30,
    )
}

fn unsigned(header: &str, claims: &Claims) -> String {
    let payload = serde_json::to_vec(claims).expect("json");
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

fn jwks_with(kids: &[&str]) -> String {
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys_dir().join("jwks.json")).expect("jwks"))
            .expect("json");
    let keys: Vec<_> = all["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().expect("kid")))
        .cloned()
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

#[test]
fn accepts_every_supported_algorithm_and_reads_the_claims() {
    let auth = authenticator(true);
    let c = claims();
    let ed = EncodingKey::from_ed_pem(&private("ed-1.key")).expect("ed key");
    let tokens = [
        auth::issue_dev_token(DEV_SECRET, &c),
        sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1.key"), &c),
        sign(Algorithm::ES256, Some("ec-1"), &ec(), &c),
        sign(Algorithm::EdDSA, Some("ed-1"), &ed, &c),
    ];
    let todos = Collection::new("todos").expect("valid");
    let notes = Collection::new("notes").expect("valid");
    let secret = Collection::new("secret").expect("valid");
    for token in tokens {
        let verified = auth.verify(&token, NOW).expect("accepted");
        assert_eq!(verified.identity.user, "alice");
        assert_eq!(verified.identity.tenant, "acme");
        assert_eq!(verified.identity.device.to_string(), c.dev);
        assert_eq!(verified.expires_at, NOW + 3600);
        assert_eq!(verified.valid_until, NOW + 3600 + 30, "exp plus the leeway");
        assert!(verified.grants.can_read(&todos) && verified.grants.can_write(&todos));
        assert!(verified.grants.can_read(&notes) && !verified.grants.can_write(&notes));
        assert!(!verified.grants.can_read(&secret) && !verified.grants.can_write(&secret));
    }
}

#[test]
fn refuses_forged_and_confused_tokens() {
    let auth = authenticator(true);
    let c = claims();
    let refused = |token: String, what: &str| auth.verify(&token, NOW).expect_err(what);

    let wrong_secret = b"another-secret-another-secret-xx";
    assert_eq!(
        refused(auth::issue_dev_token(wrong_secret, &c), "wrong key"),
        AuthError::BadSignature
    );
    for none in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"alg":"None","kid":"rsa-1"}"#,
    ] {
        assert_eq!(refused(unsigned(none, &c), none), AuthError::AlgNone);
    }
    // HS256 "signed" with the RSA public key as the secret: the classic confusion attack.
    let public_pem = std::fs::read(keys_dir().join("rsa-1.pub.pem")).expect("pem");
    let confused = EncodingKey::from_secret(&public_pem);
    assert!(matches!(
        refused(
            sign(Algorithm::HS256, Some("rsa-1"), &confused, &c),
            "confusion with kid"
        ),
        AuthError::AlgMismatch { .. }
    ));
    assert_eq!(
        refused(
            sign(Algorithm::HS256, None, &confused, &c),
            "confusion without kid"
        ),
        AuthError::BadSignature
    );
    assert_eq!(
        refused(
            sign(
                Algorithm::RS256,
                Some("rsa-1"),
                &rsa("attacker-rsa.key"),
                &c
            ),
            "attacker"
        ),
        AuthError::BadSignature
    );
    assert!(matches!(
        refused(
            sign(Algorithm::RS256, Some("ec-1"), &rsa("rsa-1.key"), &c),
            "RS256 on an EC kid"
        ),
        AuthError::AlgMismatch { .. }
    ));
    assert_eq!(
        refused(
            sign(Algorithm::RS256, Some("nope"), &rsa("rsa-1.key"), &c),
            "unknown kid"
        ),
        AuthError::UnknownKey(Some("nope".into()))
    );
    assert_eq!(
        refused(
            sign(Algorithm::RS256, None, &rsa("rsa-1.key"), &c),
            "no kid"
        ),
        AuthError::UnknownKey(None)
    );
    let hs512 = sign(
        Algorithm::HS512,
        None,
        &EncodingKey::from_secret(DEV_SECRET),
        &c,
    );
    assert!(matches!(
        refused(hs512, "HS512"),
        AuthError::AlgNotAccepted(_)
    ));
    let ps256 = sign(Algorithm::PS256, Some("rsa-1"), &rsa("rsa-1.key"), &c);
    assert!(matches!(
        refused(ps256, "PS256"),
        AuthError::AlgNotAccepted(_)
    ));

    // Tampered claims: another payload under the original signature.
    let good = auth::issue_dev_token(DEV_SECRET, &c);
    let parts: Vec<&str> = good.split('.').collect();
    let evil = Claims {
        write: vec!["*".into()],
        ..c.clone()
    };
    let evil_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).expect("json"));
    let tampered = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
    assert_eq!(refused(tampered, "tampered"), AuthError::BadSignature);

    assert_eq!(refused(String::new(), "empty"), AuthError::Missing);
    for bad in [
        "abc",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.!!!.sig",
    ] {
        let err = refused(bad.into(), bad);
        assert!(
            matches!(err, AuthError::Malformed | AuthError::BadSignature),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn hs256_needs_a_development_key() {
    let auth = authenticator(false);
    let err = auth
        .verify(&auth::issue_dev_token(DEV_SECRET, &claims()), NOW)
        .expect_err("refused");
    assert!(matches!(err, AuthError::AlgNotAccepted(_)), "{err:?}");
}

#[test]
fn enforces_time_audience_issuer_and_claims() {
    let auth = authenticator(true);
    let verify = |c: Claims| auth.verify(&auth::issue_dev_token(DEV_SECRET, &c), NOW);
    let c = claims();
    assert_eq!(
        verify(Claims {
            exp: Some(NOW - 31),
            ..c.clone()
        }),
        Err(AuthError::Expired)
    );
    assert!(
        verify(Claims {
            exp: Some(NOW - 29),
            ..c.clone()
        })
        .is_ok(),
        "within leeway"
    );
    assert_eq!(
        verify(Claims {
            exp: None,
            ..c.clone()
        }),
        Err(AuthError::Expired)
    );
    assert_eq!(
        verify(Claims {
            nbf: Some(NOW + 31),
            ..c.clone()
        }),
        Err(AuthError::NotYetValid)
    );
    assert!(
        verify(Claims {
            nbf: Some(NOW + 29),
            ..c.clone()
        })
        .is_ok(),
        "within leeway"
    );
    assert_eq!(
        verify(Claims {
            aud: Some("other".into()),
            ..c.clone()
        }),
        Err(AuthError::WrongAudience)
    );
    assert_eq!(
        verify(Claims {
            aud: None,
            ..c.clone()
        }),
        Err(AuthError::WrongAudience)
    );
    // An array of audiences (RFC 7519) is accepted when it names ours, refused when not.
    assert!(
        verify(Claims {
            aud: Some(Audience::Many(vec!["api".into(), "syncline".into()])),
            ..c.clone()
        })
        .is_ok()
    );
    assert_eq!(
        verify(Claims {
            aud: Some(Audience::Many(vec!["api".into()])),
            ..c.clone()
        }),
        Err(AuthError::WrongAudience)
    );
    assert_eq!(
        verify(Claims {
            iss: Some("https://evil".into()),
            ..c.clone()
        }),
        Err(AuthError::WrongIssuer)
    );
    assert_eq!(
        verify(Claims {
            iss: None,
            ..c.clone()
        }),
        Err(AuthError::WrongIssuer)
    );
    for bad in [
        Claims {
            dev: "xyz".into(),
            ..c.clone()
        },
        Claims {
            sub: String::new(),
            ..c.clone()
        },
        Claims {
            ten: Some("bad tenant".into()),
            ..c.clone()
        },
        Claims {
            read: vec!["Not/Valid".into()],
            ..c.clone()
        },
    ] {
        assert!(matches!(verify(bad), Err(AuthError::BadClaims(_))));
    }
    let all = verify(Claims {
        read: vec!["*".into()],
        ..c
    })
    .expect("wildcard");
    assert!(
        all.grants
            .can_read(&Collection::new("anything").expect("valid"))
    );
}

#[test]
fn key_rotation_takes_effect_without_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_with(&["rsa-1"])).expect("write");
    let auth = Authenticator::new(
        None,
        Some(KeyFile::open(&path).expect("open")),
        None,
        None,
        0,
    );
    let ec_token = sign(Algorithm::ES256, Some("ec-1"), &ec(), &claims());
    assert_eq!(
        auth.verify(&ec_token, NOW),
        Err(AuthError::UnknownKey(Some("ec-1".into())))
    );

    std::fs::write(&path, jwks_with(&["rsa-1", "ec-1"])).expect("rotate in");
    assert!(
        auth.verify(&ec_token, NOW).is_ok(),
        "the new key is used without a restart"
    );

    std::fs::write(&path, "{ half-written").expect("corrupt");
    assert!(
        auth.verify(&ec_token, NOW).is_ok(),
        "a broken file keeps the previous keys"
    );

    std::fs::write(&path, jwks_with(&["rsa-1"])).expect("rotate out");
    assert_eq!(
        auth.verify(&ec_token, NOW),
        Err(AuthError::UnknownKey(Some("ec-1".into())))
    );
}

#[test]
fn key_files_that_lie_or_do_not_parse_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    let mut set: serde_json::Value = serde_json::from_str(&jwks_with(&["rsa-1"])).expect("json");
    set["keys"][0]["alg"] = "HS256".into();
    std::fs::write(&path, set.to_string()).expect("write");
    assert!(KeyFile::open(&path).is_err(), "an RSA key declared HS256");
    std::fs::write(&path, "not json").expect("write");
    assert!(KeyFile::open(&path).is_err());
    assert!(KeyFile::open(&dir.path().join("missing.json")).is_err());
}

#[test]
fn the_development_key_is_created_once_and_private() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let (first, created) = dev_key::load_or_create(&data).expect("create");
    assert!(created);
    assert_eq!(first.len(), 32);
    let (again, created) = dev_key::load_or_create(&data).expect("load");
    assert!(!created);
    assert_eq!(first, again);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dev_key::path(&data))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "readable by the owner only");
    }
    std::fs::write(dev_key::path(&data), b"short").expect("truncate");
    assert!(dev_key::load_or_create(&data).is_err());
}

#[test]
fn a_rotation_that_keeps_the_files_time_and_size_is_still_seen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("jwks.json");
    let ec_1 = jwks_with(&["rsa-1", "ec-1"]);
    std::fs::write(&path, &ec_1).expect("write");
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let auth = Authenticator::new(
        None,
        Some(KeyFile::open_with(&path, std::time::Duration::ZERO).expect("open")),
        None,
        None,
        0,
    );
    let ec_token = sign(Algorithm::ES256, Some("ec-1"), &ec(), &claims());
    assert!(auth.verify(&ec_token, NOW).is_ok());
    // The same bytes but for the key id (same length), and the old modification time.
    let ec_2 = ec_1.replace("\"ec-1\"", "\"ec-2\"");
    assert_eq!(ec_1.len(), ec_2.len());
    std::fs::write(&path, &ec_2).expect("rotate");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(modified))
        .expect("keep the time");
    assert_eq!(
        auth.verify(&ec_token, NOW),
        Err(AuthError::UnknownKey(Some("ec-1".into()))),
        "the rotated-out key is refused"
    );
}
