//! Timing statistics, progress bars, and the report: a table on stdout and
//! the same figures as JSON.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| {
            samples.get(((samples.len() as f64 - 1.0) * q).round() as usize).copied().map(ms).unwrap_or(0.0)
        };
        Latency { samples: samples.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }

    pub fn brief(&self) -> String {
        format!("p50 {:.2} / p99 {:.2} / max {:.2} ms", self.p50_ms, self.p99_ms, self.max_ms)
    }
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("  {msg:24} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

struct Row {
    scenario: String,
    metric: String,
    value: String,
    target: String,
    verdict: Option<bool>,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    data: Map<String, Value>,
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// One line of the table; `verdict` is whether it meets its target.
    pub fn add(&mut self, scenario: &str, metric: &str, value: String, target: &str, verdict: Option<bool>) {
        eprintln!("  {scenario}: {metric} = {value}");
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            target: target.into(),
            verdict,
        });
    }

    /// Raw figures for the JSON output.
    pub fn data(&mut self, key: &str, value: Value) {
        self.data.insert(key.into(), value);
    }

    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let verdict = match r.verdict {
                    Some(true) => "ok",
                    Some(false) => "MISSED",
                    None => "",
                };
                vec![r.scenario.clone(), r.metric.clone(), r.value.clone(), r.target.clone(), verdict.into()]
            })
            .collect();
        table(&["scenario", "metric", "value", "target", ""], &rows)
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| json!({"scenario": r.scenario, "metric": r.metric, "value": r.value, "target": r.target, "met": r.verdict}))
            .collect();
        json!({"results": rows, "data": self.data})
    }
}

/// Rows of columns printed as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let l = Latency::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms, l.samples), (51.0, 99.0, 100.0, 100));
        assert_eq!(Latency::of(vec![]).max_ms, 0.0);
    }

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "a    bb\n---  --\nxxx  y");
    }
}
