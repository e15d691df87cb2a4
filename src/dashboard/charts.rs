//! Charts, drawn on the server as inline SVG: no script, no CDN, no build
//! step, and nothing a Content-Security-Policy without inline scripts
//! refuses (colours and strokes are classes in `static/app.css`).
//!
//! Both read [`Series`] from the store's per-minute counts
//! (`ChartStore::attempt_series`): the endpoint page's attempts by outcome
//! and latency percentiles, the application page's success rate per
//! endpoint as small multiples.

use maud::{Markup, html};

use crate::domain::attempt_stats::{AttemptStats, Series, Window};
use crate::domain::time::Timestamp;

const W: f64 = 720.0;
const H: f64 = 150.0;
/// Room for the y-axis labels on the left, the top one, and the time
/// labels below.
const LEFT: f64 = 48.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 18.0;

/// `?window=` on the chart pages.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ChartQuery {
    pub window: Option<String>,
}

impl ChartQuery {
    pub fn window(&self, default: Window) -> Window {
        self.window.as_deref().and_then(Window::parse).unwrap_or(default)
    }
}

/// Links to the other windows; the current one is marked.
pub fn window_picker(base: &str, current: Window) -> Markup {
    html! {
        nav.windows aria-label="Time window" {
            @for w in Window::ALL {
                @if w == current { span.current { "last " (w.name()) } }
                @else { a href={(base) "?window=" (w.name())} { "last " (w.name()) } }
            }
        }
    }
}

/// The endpoint page's charts: attempts per interval by outcome, stacked,
/// and latency p50/p95.
pub fn endpoint_charts(series: &Series, window: Window) -> Markup {
    let total = series.total();
    if total.total() == 0 {
        // Two empty charts would push the endpoint's settings off the screen.
        return html! {
            figure.chart #attempts-chart data-window=(window.name()) data-total="0" data-success="0"
                data-failure="0" data-timeout="0" {
                figcaption.muted { "No attempts in the last " (window.name()) "." }
            }
        };
    }
    let max = series.intervals.iter().map(AttemptStats::total).max().unwrap_or(0);
    let top = nice_ceiling(max as f64);
    let n = series.intervals.len() as f64;
    let slot = (W - LEFT) / n;
    let y = |v: f64| TOP + (H - BOTTOM - TOP) * (1.0 - v / top);
    let rate = total.success_rate().map(|r| format!("{:.1} %", 100.0 * r)).unwrap_or_else(|| "—".into());
    html! {
        figure.chart #attempts-chart data-window=(window.name()) data-total=(total.total())
            data-success=(total.success) data-failure=(total.failure) data-timeout=(total.timeout) {
            figcaption {
                b { "Attempts" } " in the last " (window.name()) ": "
                span.total { (total.total()) } " — "
                span.legend.ok { (total.success) " succeeded" } ", "
                span.legend.bad { (total.failure) " failed" } ", "
                span.legend.slow { (total.timeout) " timed out" }
                " (success rate " (rate) ")"
            }
            svg viewBox={"0 0 " (W) " " (H)} role="img" aria-label={"Attempts per " (interval_name(series)) " by outcome"} {
                (y_axis(top, "", y))
                @for (i, s) in series.intervals.iter().enumerate() {
                    @if s.total() > 0 {
                        @let x = LEFT + i as f64 * slot;
                        @let stacks = [("ok", s.success), ("bad", s.failure), ("slow", s.timeout)];
                        g {
                            title { (when(series, i)) ": " (s.success) " succeeded, " (s.failure) " failed, " (s.timeout) " timed out" }
                            @for (class, from, to) in stacked(&stacks) {
                                rect class={"bar " (class)} x=(px(x + slot * 0.1)) width=(px(slot * 0.8))
                                    y=(px(y(to as f64))) height=(px(y(from as f64) - y(to as f64))) {}
                            }
                        }
                    }
                }
                (time_axis(series, window))
            }
        }
        (latency_chart(series, window))
    }
}

/// p50 and p95 per interval, where there were attempts.
fn latency_chart(series: &Series, window: Window) -> Markup {
    let p = |q: f64| -> Vec<Option<f64>> { series.intervals.iter().map(|s| s.latency_quantile(q)).collect() };
    let (p50, p95) = (p(0.5), p(0.95));
    let max = p95.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    let top = nice_ceiling(max);
    let slot = (W - LEFT) / series.intervals.len() as f64;
    let y = |v: f64| TOP + (H - BOTTOM - TOP) * (1.0 - v / top);
    let overall = series.total();
    let fmt = |v: Option<f64>| v.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "—".into());
    html! {
        figure.chart #latency-chart data-window=(window.name()) {
            figcaption {
                b { "Latency" } " in the last " (window.name()) ": "
                span.legend.p50 { "p50 " (fmt(overall.latency_quantile(0.5))) } ", "
                span.legend.p95 { "p95 " (fmt(overall.latency_quantile(0.95))) }
            }
            svg viewBox={"0 0 " (W) " " (H)} role="img" aria-label="Latency p50 and p95" {
                (y_axis(top, " ms", y))
                @for (class, values) in [("p95", &p95), ("p50", &p50)] {
                    @for run in runs(values) {
                        @let points: Vec<String> = run.iter().map(|&(i, v)| format!("{},{}", px(LEFT + (i as f64 + 0.5) * slot), px(y(v)))).collect();
                        @if points.len() == 1 {
                            circle class={"dot " (class)} cx=(px(LEFT + (run[0].0 as f64 + 0.5) * slot)) cy=(px(y(run[0].1))) r="2.5" {}
                        } @else {
                            polyline class={"line " (class)} points=(points.join(" ")) {}
                        }
                    }
                }
                (time_axis(series, window))
            }
        }
    }
}

/// One endpoint of the application page: its success rate per interval.
pub fn success_rate_multiple(label: &str, href: &str, series: &Series) -> Markup {
    const SW: f64 = 260.0;
    const SH: f64 = 56.0;
    let total = series.total();
    let slot = SW / series.intervals.len() as f64;
    let y = |rate: f64| 4.0 + (SH - 8.0) * (1.0 - rate);
    let rates: Vec<Option<f64>> = series.intervals.iter().map(AttemptStats::success_rate).collect();
    // One line through every interval with attempts: a quiet spell is not
    // a failure, so the line bridges it.
    let points: Vec<String> = rates
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| format!("{},{}", px((i as f64 + 0.5) * slot), px(y(r)))))
        .collect();
    html! {
        figure.multiple data-total=(total.total()) data-success=(total.success) {
            figcaption {
                a href=(href) { (label) }
                div.small.muted {
                    @match total.success_rate() {
                        Some(r) => { (format!("{:.1} %", 100.0 * r)) " of " (total.total()) " attempts" }
                        None => { "no attempts" }
                    }
                }
            }
            svg viewBox={"0 0 " (SW) " " (SH)} role="img" aria-label={"Success rate of " (label)} {
                line.grid x1="0" x2=(SW) y1=(px(y(1.0))) y2=(px(y(1.0))) {}
                line.grid x1="0" x2=(SW) y1=(px(y(0.0))) y2=(px(y(0.0))) {}
                @if points.len() == 1 {
                    @let (x, y) = points[0].split_once(',').unwrap_or_default();
                    circle.dot.rate cx=(x) cy=(y) r="2" {}
                } @else if !points.is_empty() {
                    polyline.line.rate points=(points.join(" ")) {}
                }
                @for (i, r) in rates.iter().enumerate() {
                    @if let Some(r) = r { @if *r < 1.0 {
                        rect.bar.bad x=(px(i as f64 * slot)) width=(px(slot.max(1.0))) y=(px(SH - 3.0)) height="3" {
                            title { (when(series, i)) ": " (format!("{:.1} %", 100.0 * r)) }
                        }
                    } }
                }
            }
        }
    }
}

/// Lower and upper bounds of each non-empty stack, bottom first.
fn stacked<'a>(stacks: &'a [(&'a str, u64)]) -> Vec<(&'a str, u64, u64)> {
    let mut at = 0;
    let mut out = Vec::new();
    for &(class, n) in stacks {
        if n > 0 {
            out.push((class, at, at + n));
            at += n;
        }
    }
    out
}

/// Consecutive intervals that have a value, as (index, value) runs.
fn runs(values: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut out: Vec<Vec<(usize, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => current.push((i, *v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn y_axis(top: f64, unit: &str, y: impl Fn(f64) -> f64) -> Markup {
    html! {
        @for v in [0.0, top / 2.0, top] {
            line.grid x1=(LEFT) x2=(W) y1=(px(y(v))) y2=(px(y(v))) {}
            text.axis x=(LEFT - 4.0) y=(px(y(v) + 4.0)) text-anchor="end" { (format_value(v)) (unit) }
        }
    }
}

fn time_axis(series: &Series, window: Window) -> Markup {
    let n = series.intervals.len();
    let slot = (W - LEFT) / n as f64;
    let end = series.start_of(n);
    html! {
        @for i in [0, n / 2] {
            text.axis x=(px(LEFT + i as f64 * slot)) y=(H - 4.0) text-anchor="start" { (clock(series.start_of(i), window)) }
        }
        text.axis x=(W) y=(H - 4.0) text-anchor="end" { (clock(end, window)) " UTC" }
    }
}

fn interval_name(series: &Series) -> String {
    match series.step_minutes {
        1 => "minute".into(),
        m if m % 60 == 0 => format!("{} hours", m / 60),
        m => format!("{m} minutes"),
    }
}

fn when(series: &Series, i: usize) -> String {
    let (from, to) = (series.start_of(i), series.start_of(i + 1));
    format!("{}–{} UTC", from.to_datetime().format("%b %d %H:%M"), to.to_datetime().format("%H:%M"))
}

fn clock(t: Timestamp, window: Window) -> String {
    let f = if window == Window::Week { "%b %d %H:%M" } else { "%H:%M" };
    t.to_datetime().format(f).to_string()
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v`
/// (and at least 1): a y axis a person reads at a glance.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&c| c >= v).unwrap_or(10.0 * magnitude)
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// SVG coordinates: a tenth of a pixel is plenty, and keeps pages small.
fn px(v: f64) -> String {
    format!("{:.1}", v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attempt_stats::minute_start;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(730.0), 1000.0);
    }

    #[test]
    fn stacks_skip_empty_outcomes() {
        assert_eq!(stacked(&[("ok", 2), ("bad", 0), ("slow", 1)]), vec![("ok", 0, 2), ("slow", 2, 3)]);
    }

    #[test]
    fn lines_break_where_there_is_no_data() {
        let runs = runs(&[Some(1.0), Some(2.0), None, None, Some(3.0)]);
        assert_eq!(runs, vec![vec![(0, 1.0), (1, 2.0)], vec![(4, 3.0)]]);
    }

    #[test]
    fn an_endpoint_without_attempts_gets_a_line_not_two_empty_charts() {
        let html =
            endpoint_charts(&Series::empty(Window::Day, minute_start(1_000_000)), Window::Day).into_string();
        assert!(
            html.contains("No attempts in the last day.") && html.contains(r#"data-total="0""#),
            "{html}"
        );
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn the_endpoint_chart_shows_the_totals_and_one_group_per_busy_interval() {
        let now = minute_start(1_000_000);
        let mut series = Series::empty(Window::Hour, now);
        let mut s = AttemptStats { success: 3, failure: 1, ..Default::default() };
        s.latency[2] = 4;
        series.add(series.first_minute + 10, &s);
        series.add(series.first_minute + 59, &AttemptStats { timeout: 2, ..Default::default() });
        let html = endpoint_charts(&series, Window::Hour).into_string();
        assert!(
            html.contains(r#"data-total="6" data-success="3" data-failure="1" data-timeout="2""#),
            "{html}"
        );
        assert_eq!(html.matches("<g>").count(), 2);
        assert_eq!(html.matches(r#"class="bar ok""#).count(), 1);
        assert!(!html.contains("<script"), "charts are markup only");
    }
}
