//! Reports over prmsync's state, computed and rendered without I/O: `attribution.rs` (the
//! figures), `render.rs` (table, CSV, JSON), `html.rs` (one self-contained page with SVG charts
//! from `svg.rs`). The store read and the file writing are in `report_cli.rs`.

pub mod attribution;
pub mod html;
pub mod render;
pub mod svg;

/// Cents as money: `12345.60`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    let whole = (c / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}{grouped}.{:02}", c % 100)
}

/// A share as a percentage with one decimal, or `-`.
pub fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// Days with one decimal, or `-`.
pub fn days(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

/// An instant as `YYYY-MM-DD HH:MM:SS UTC`, or `-`.
pub fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || "-".to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

#[cfg(test)]
mod tests;
