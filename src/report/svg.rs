//! Grouped bar charts as inline SVG text, for the HTML report: axes with round ticks, one bar per
//! series in each category, a legend, and every label escaped. Pure and deterministic.

use std::fmt::Write as _;

/// One series of a bar chart: its name, colour and one value per category.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub values: Vec<f64>,
}

/// Text for XML: `& < > " '` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A short axis label: 1.2k, 3.4M.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Cuts a label to `n` characters with an ellipsis.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// A vertical grouped bar chart `width` pixels wide; `None` when there is nothing to draw.
pub fn bar_chart(
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[Series],
    width: u32,
) -> Option<String> {
    if categories.is_empty() || series.is_empty() {
        return None;
    }
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max);
    let step = tick_step(max);
    let top = (max / step).ceil().max(1.0) * step;
    let (w, h) = (f64::from(width), 320.0);
    let (left, right, head, foot) = (64.0, 16.0, 56.0, 84.0);
    let plot_w = w - left - right;
    let plot_h = h - head - foot;
    let slot = plot_w / categories.len() as f64;
    let bar = (slot * 0.8 / series.len() as f64).min(48.0);
    let y = |v: f64| head + plot_h - v / top * plot_h;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}" font-family="Helvetica, Arial, sans-serif" font-size="12">"##,
        t = escape(title)
    );
    let _ = write!(
        out,
        r##"<rect width="{w}" height="{h}" fill="#ffffff"/><text x="{left}" y="20" font-size="15" font-weight="bold" fill="#1f2933">{}</text>"##,
        escape(title)
    );
    // Legend.
    let mut lx = left;
    for s in series {
        let _ = write!(
            out,
            r##"<rect x="{lx}" y="32" width="12" height="12" fill="{}"/><text x="{}" y="42" fill="#3e4c59">{}</text>"##,
            s.color,
            lx + 16.0,
            escape(&s.name)
        );
        lx += 24.0 + 7.0 * s.name.chars().count() as f64;
    }
    // Grid and axis labels.
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let yy = y(v);
        let _ = write!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e7eb"/><text x="{}" y="{:.1}" text-anchor="end" fill="#616e7c">{}</text>"##,
            w - right,
            left - 6.0,
            yy + 4.0,
            escape(&short(v))
        );
        v += step;
    }
    let _ = write!(
        out,
        r##"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle" fill="#616e7c">{}</text>"##,
        head + plot_h / 2.0,
        head + plot_h / 2.0,
        escape(unit)
    );
    // Bars.
    for (i, c) in categories.iter().enumerate() {
        let x0 = left + slot * i as f64 + (slot - bar * series.len() as f64) / 2.0;
        for (j, s) in series.iter().enumerate() {
            let value = s.values.get(i).copied().unwrap_or(0.0).max(0.0);
            let (x, yy) = (x0 + bar * j as f64, y(value));
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"##,
                (bar - 2.0).max(1.0),
                head + plot_h - yy,
                s.color,
                escape(&format!("{} / {c}", s.name)),
                escape(&short(value))
            );
        }
        let cx = left + slot * i as f64 + slot / 2.0;
        let label_y = head + plot_h + 16.0;
        let _ = write!(
            out,
            r##"<text x="{cx:.1}" y="{label_y:.1}" text-anchor="end" transform="rotate(-25 {cx:.1} {label_y:.1})" fill="#3e4c59">{}</text>"##,
            escape(&cut(c, 30))
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#9aa5b1"/></svg>"##,
        w - right,
        head + plot_h,
        head + plot_h
    );
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_bars_to_scale_with_escaped_labels() {
        let svg = bar_chart(
            "Won <revenue>",
            "USD",
            &["A & B".into(), "C".into()],
            &[Series {
                name: "won".into(),
                color: "#2f80ed",
                values: vec![100.0, 50.0],
            }],
            400,
        )
        .expect("a chart");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Won &lt;revenue&gt;") && svg.contains("A &amp; B"));
        assert!(!svg.contains("A & B"));
        // Ticks are round: 0, 20, ..., 100; the taller bar is twice the other.
        assert!(svg.contains(">100<") && svg.contains(">20<"));
        let heights: Vec<f64> = svg
            .split("<rect ")
            .filter(|r| r.contains("<title>"))
            .filter_map(|r| r.split("height=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(heights.len(), 2);
        assert!((heights[0] - 2.0 * heights[1]).abs() < 0.2, "{heights:?}");
        assert!(bar_chart("t", "u", &[], &[], 400).is_none());
    }
}
