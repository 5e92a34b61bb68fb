//! The suite's results: named figures per scenario, the target each is held to, a text table and
//! the JSON written with `--json` so runs can be compared.

use serde::Serialize;

use super::Size;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    /// The target from issue 9, in words.
    pub target: String,
    /// Whether the figures meet the target (`None` when the size is too small to judge).
    pub met: Option<bool>,
    pub seconds: f64,
    pub metrics: Vec<Metric>,
    /// What the figures do not say by themselves (e.g. a deadline hit before the end).
    pub notes: Vec<String>,
}

impl ScenarioResult {
    pub fn new(name: &str, target: &str) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            target: target.into(),
            met: None,
            seconds: 0.0,
            metrics: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &str) {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Records the verdict, judged only at full size.
    pub fn judge(&mut self, size: Size, met: bool) {
        if size == Size::Full {
            self.met = Some(met);
        }
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub size: &'static str,
    pub started_at: String,
    pub cores: usize,
    pub scenarios: Vec<ScenarioResult>,
}

impl Report {
    pub fn new(size: Size) -> Report {
        Report {
            version: env!("CARGO_PKG_VERSION"),
            size: size.name(),
            started_at: jiff::Timestamp::now().to_string(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            scenarios: Vec::new(),
        }
    }
}

/// A figure as the table prints it: integers without decimals, small numbers with some.
fn figure(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The report as a Markdown table (one row per scenario), then the notes.
pub fn render_table(r: &Report) -> String {
    let mut out = format!(
        "prmsync bench ({} size, {} cores, {})\n\n| scenario | figures | target | met |\n|---|---|---|---|\n",
        r.size, r.cores, r.started_at
    );
    for s in &r.scenarios {
        let figures: Vec<String> = s
            .metrics
            .iter()
            .map(|m| {
                format!("{} {} {}", m.name, figure(m.value), m.unit)
                    .trim_end()
                    .to_owned()
            })
            .collect();
        let met = match s.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            s.name,
            figures.join("; "),
            s.target,
            met
        ));
    }
    for s in &r.scenarios {
        for n in &s.notes {
            out.push_str(&format!("\n{}: {n}", s.name));
        }
    }
    out.push('\n');
    out
}
