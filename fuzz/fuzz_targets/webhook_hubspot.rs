//! Fuzz target: any body a caller can send to `/webhooks/hubspot` parses or is refused, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(changes) = prmsync::connector::hubspot::webhook::parse_events(body) {
        for c in changes {
            assert!(!c.event_id.is_empty());
        }
    }
});
