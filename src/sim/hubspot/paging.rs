//! HubSpot `after` paging tokens as the simulator issues them: opaque strings, like the
//! documented example `NTI1Cg%3D%3D` (base64 of the position and a newline, padding
//! URL-escaped), so a client that parses them as numbers fails here as it would on HubSpot. Only
//! tokens of this form are read back; any other is a 400.

use base64::Engine as _;

/// The token for the page that starts at `position`.
pub fn token(position: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{position}\n"))
        .replace('=', "%3D")
}

/// The position a token names; no token is the first page.
pub fn position(token: Option<&str>) -> Result<u64, String> {
    let Some(t) = token.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let bad = || format!("Invalid after: {t:?} is not a paging token this API issued");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(t.replace("%3D", "="))
        .map_err(|_| bad())?;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_hubspots_and_numbers_are_refused() {
        assert_eq!(token(525), "NTI1Cg%3D%3D", "the documented example");
        assert_eq!(position(Some(&token(10_000))), Ok(10_000));
        assert_eq!(position(Some("NTI1Cg==")), Ok(525));
        assert_eq!(position(None), Ok(0));
        assert!(
            position(Some("200")).is_err(),
            "a bare offset is not a token"
        );
    }
}
