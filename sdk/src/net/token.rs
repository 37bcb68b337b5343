//! When to refresh a token: read (not verified; the relay verifies) from its `exp` and `iat`
//! claims, a fifth of its lifetime (at least 30 s) before it expires.

use std::time::Duration;

use base64::Engine as _;

/// How long to wait before asking for a new token, given the current one at `now_ms`.
pub(crate) fn refresh_in(token: &str, now_ms: u64) -> Duration {
    let Some((iat, exp)) = claims(token) else {
        // Not a JWT we can read: the relay's close on expiry triggers a reconnect anyway.
        return Duration::from_secs(3600);
    };
    let lifetime = exp.saturating_sub(iat.unwrap_or(exp.saturating_sub(300)));
    let margin = (lifetime / 5).max(30);
    let refresh_at_ms = exp.saturating_sub(margin).saturating_mul(1000);
    Duration::from_millis(refresh_at_ms.saturating_sub(now_ms).max(1000))
}

fn claims(token: &str) -> Option<(Option<u64>, u64)> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = json.get("exp")?.as_u64()?;
    let iat = json.get("iat").and_then(serde_json::Value::as_u64);
    Some((iat, exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims))
    }

    #[test]
    fn refreshes_a_fifth_of_the_lifetime_before_expiry() {
        let token = jwt(r#"{"iat":1000,"exp":2000}"#);
        assert_eq!(refresh_in(&token, 1_000_000), Duration::from_secs(800));
    }

    #[test]
    fn refreshes_at_least_thirty_seconds_early_and_never_in_a_tight_loop() {
        let token = jwt(r#"{"iat":1000,"exp":1060}"#);
        assert_eq!(refresh_in(&token, 1_000_000), Duration::from_secs(30));
        assert_eq!(refresh_in(&token, 1_059_000), Duration::from_secs(1));
        assert_eq!(refresh_in("opaque", 0), Duration::from_secs(3600));
    }
}
