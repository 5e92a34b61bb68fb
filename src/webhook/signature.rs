//! Webhook signature verification: HubSpot v1, v2 and v3, and prmsync's HMAC header for PRMs
//! (PartnerStack documents no signing scheme). Constant-time comparisons throughout.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// HubSpot rejects v3 requests older than this; we also reject ones this far in the future.
pub const HUBSPOT_MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a signature was refused (the message is safe to return to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("unsupported signature version {0:?}")]
    Version(String),
    #[error("timestamp is outside the 5-minute window")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// The HubSpot v3 signature: base64(HMAC-SHA256(secret, method + uri + body + timestamp)).
pub fn hubspot_v3(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies a v3 request. `uri` must be the URI exactly as HubSpot called it.
pub fn verify_hubspot_v3(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::Missing("X-HubSpot-Request-Timestamp"))?;
    let sig = signature.ok_or(SignatureError::Missing("X-HubSpot-Signature-v3"))?;
    let ts_ms: i64 = ts.trim().parse().map_err(|_| SignatureError::Stale)?;
    if (now_ms - ts_ms).abs() > HUBSPOT_MAX_SKEW_MS {
        return Err(SignatureError::Stale);
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sig.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(ts.as_bytes());
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// The HubSpot v1 (`secret + body`) and v2 (`secret + method + uri + body`) signatures: hex SHA-256.
pub fn hubspot_legacy(
    version: &str,
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
) -> Option<String> {
    let mut h = Sha256::new();
    h.update(secret);
    match version {
        "v1" => {}
        "v2" => {
            h.update(method.as_bytes());
            h.update(uri.as_bytes());
        }
        _ => return None,
    }
    h.update(body);
    Some(hex::encode(h.finalize()))
}

/// Verifies a v1 or v2 request (older apps).
pub fn verify_hubspot_legacy(
    version: &str,
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let sig = signature.ok_or(SignatureError::Missing("X-HubSpot-Signature"))?;
    let expected = hubspot_legacy(version, secret, method, uri, body)
        .ok_or_else(|| SignatureError::Version(version.to_owned()))?;
    constant_time_eq(
        expected.as_bytes(),
        sig.trim().to_ascii_lowercase().as_bytes(),
    )
}

/// prmsync's PRM webhook signature: `sha256=` + hex(HMAC-SHA256(secret, body)).
pub fn body_hmac(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies [`body_hmac`].
pub fn verify_body_hmac(
    secret: &[u8],
    body: &[u8],
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let sig = signature.ok_or(SignatureError::Missing(super::PRM_SIGNATURE_HEADER))?;
    let hex_part = sig
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Mismatch)?;
    let bytes = hex::decode(hex_part).map_err(|_| SignatureError::Mismatch)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&bytes)
        .map_err(|_| SignatureError::Mismatch)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> Result<(), SignatureError> {
    // Compare through HMAC's verify so the comparison is constant-time without a new dependency.
    let mut mac = HmacSha256::new_from_slice(b"prmsync-compare").expect("fixed key");
    mac.update(a);
    let tag = mac.finalize().into_bytes();
    let mut mac = HmacSha256::new_from_slice(b"prmsync-compare").expect("fixed key");
    mac.update(b);
    mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official test vectors from HubSpot's request-validation doc (CONTRACTS.md §1.7, §4).
    const SECRET: &[u8] = b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const V1_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

    #[test]
    fn hubspot_v1_and_v2_match_official_vectors() {
        assert_eq!(
            hubspot_legacy("v1", SECRET, "POST", "", V1_BODY.as_bytes()).unwrap(),
            "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
        );
        assert_eq!(
            hubspot_legacy(
                "v2",
                SECRET,
                "GET",
                "https://www.example.com/webhook_uri",
                b""
            )
            .unwrap(),
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
        assert!(
            verify_hubspot_legacy(
                "v1",
                SECRET,
                "POST",
                "",
                V1_BODY.as_bytes(),
                Some("232DB2615F3D666FE21A8EC971AC7B5402D33B9A925784DF3CA654D05F4817DE")
            )
            .is_ok()
        );
        assert_eq!(
            verify_hubspot_legacy("v1", SECRET, "POST", "", b"tampered", Some("232db2")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hubspot_v3_matches_official_vectors() {
        let ts = "1700000000000";
        assert_eq!(
            hubspot_v3(
                SECRET,
                "POST",
                "https://example.com/hubspot/webhook",
                V1_BODY.as_bytes(),
                ts
            ),
            "Fqv2t6K7rst3HNu8irTYQdr2fEfq2UGkHkSHHzwKu6Q="
        );
        assert_eq!(
            hubspot_v3(
                SECRET,
                "POST",
                "https://example.com/hubspot/webhook?a=1&b=2",
                b"",
                ts
            ),
            "o/VjO+8UoZ48jok+V5g0vWWobnL1rWXrCpzXtuG7CAE="
        );
    }

    #[test]
    fn hubspot_v3_verification_checks_window_and_content() {
        let ts = "1700000000000";
        let uri = "https://example.com/hubspot/webhook";
        let sig = "Fqv2t6K7rst3HNu8irTYQdr2fEfq2UGkHkSHHzwKu6Q=";
        let now = 1_700_000_000_000 + 60_000;
        let v = |body: &str, ts: Option<&str>, sig: Option<&str>, now: i64| {
            verify_hubspot_v3(SECRET, "POST", uri, body.as_bytes(), ts, sig, now)
        };
        assert_eq!(v(V1_BODY, Some(ts), Some(sig), now), Ok(()));
        assert_eq!(
            v(V1_BODY, Some(ts), Some(sig), now + HUBSPOT_MAX_SKEW_MS),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v(
                V1_BODY,
                Some(ts),
                Some(sig),
                1_700_000_000_000 - HUBSPOT_MAX_SKEW_MS - 1
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v("[]", Some(ts), Some(sig), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(V1_BODY, Some(ts), Some("not base64!"), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v(V1_BODY, None, Some(sig), now),
            Err(SignatureError::Missing("X-HubSpot-Request-Timestamp"))
        );
        assert_eq!(
            v(V1_BODY, Some(ts), None, now),
            Err(SignatureError::Missing("X-HubSpot-Signature-v3"))
        );
        // The URI is hashed exactly as received: a different query string fails.
        assert_eq!(
            verify_hubspot_v3(
                SECRET,
                "POST",
                "https://example.com/hubspot/webhook?a=1",
                V1_BODY.as_bytes(),
                Some(ts),
                Some(sig),
                now
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn body_hmac_round_trips_and_rejects_tampering() {
        let sig = body_hmac(b"k", b"{}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(verify_body_hmac(b"k", b"{}", Some(&sig)), Ok(()));
        assert_eq!(
            verify_body_hmac(b"k", b"{ }", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_body_hmac(b"other", b"{}", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_body_hmac(b"k", b"{}", Some("md5=00")),
            Err(SignatureError::Mismatch)
        );
    }
}
