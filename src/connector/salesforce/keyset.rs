//! Reading on from a keyset position instead of a query locator: Salesforce expires locators
//! (15 minutes idle, 10 open per user), and its `SystemModstamp` has whole seconds, so a read
//! that starts again from the cursor's second would read that second's records again from the
//! first, and never get past a second holding more records than a locator lives for. A keyset
//! token `keyset:{ms}:{id}` asks for `SystemModstamp >= T AND (SystemModstamp > T OR Id > 'id')`.

const PREFIX: &str = "keyset:";

/// The page token that reads on after the record (`modified_ms`, `id`).
pub fn token(modified_ms: i64, id: &str) -> String {
    format!("{PREFIX}{modified_ms}:{id}")
}

/// The position a keyset token names.
pub fn parse(token: &str) -> Option<(i64, &str)> {
    let (ms, id) = token.strip_prefix(PREFIX)?.split_once(':')?;
    if id.is_empty() {
        return None;
    }
    Some((ms.parse().ok()?, id))
}

/// The condition after the record (`modified_ms`, `id`), with `id` checked as a Salesforce id.
pub fn condition(modified_ms: i64, id: &str) -> Option<String> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let t = super::api::soql_datetime(modified_ms);
    let m = super::api::MODSTAMP;
    Some(format!("({m} > {t} OR Id > '{id}')"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_only_ids_are_quoted() {
        let t = token(1_700_000_000_000, "006SIM000000000001AAA");
        assert_eq!(
            parse(&t),
            Some((1_700_000_000_000, "006SIM000000000001AAA"))
        );
        assert_eq!(parse("/services/data/v62.0/query/x-2"), None);
        assert_eq!(parse("keyset:1:"), None);
        assert!(condition(0, "006' OR Name != '").is_none());
        assert!(condition(1_700_000_000_000, "006A").is_some_and(|c| c.contains("Id > '006A'")));
    }
}
