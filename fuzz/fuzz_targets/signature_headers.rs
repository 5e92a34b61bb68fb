//! Fuzz target: signature checks on arbitrary headers, URIs and bodies refuse or accept, never
//! panic, and a forged v3 signature for other content never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prmsync::webhook::signature::{
    hubspot_v3, verify_body_hmac, verify_hubspot_legacy, verify_hubspot_v3,
};

fuzz_target!(|input: (&str, &str, &str, &[u8], &str)| {
    let (uri, timestamp, signature, body, version) = input;
    let secret = b"fuzz-secret";
    let now = 1_700_000_000_000;
    let _v3 = verify_hubspot_v3(
        secret,
        "POST",
        uri,
        body,
        Some(timestamp),
        Some(signature),
        now,
    );
    let _legacy = verify_hubspot_legacy(version, secret, "POST", uri, body, Some(signature));
    let _hmac = verify_body_hmac(secret, body, Some(signature));
    // A real signature over this content verifies; over other content it does not.
    let ts = now.to_string();
    let good = hubspot_v3(secret, "POST", uri, body, &ts);
    assert!(verify_hubspot_v3(secret, "POST", uri, body, Some(&ts), Some(&good), now).is_ok());
    let mut other = body.to_vec();
    other.push(b'!');
    assert!(verify_hubspot_v3(secret, "POST", uri, &other, Some(&ts), Some(&good), now).is_err());
});
