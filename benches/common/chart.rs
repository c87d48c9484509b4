#![allow(dead_code)]

//! SVG charts of a benchmark run, for docs/BENCHMARKS.md: grouped bars
//! (each workload's figure per target) and lines (a value over time per
//! series). Hand-written: a few dozen lines of SVG text, where a plotting
//! crate would bring a font and raster stack the benches do not need.

use std::fmt::Write;

/// Colours of the series, in order (Tableau 10: one per target of the
/// workloads bench, and more to spare before they repeat).
const COLOURS: &[&str] = &[
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#ff9da7",
    "#9c755f", "#bab0ac",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn legend(out: &mut String, series: &[&str], x: f64, y: f64) {
    for (i, name) in series.iter().enumerate() {
        let yy = y + i as f64 * 16.0;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            yy - 9.0,
            COLOURS[i % COLOURS.len()],
            x + 14.0,
            yy,
            escape(name)
        );
    }
}

/// The SVG element with `title`, `width` × `height`.
fn open(title: &str, width: f64, height: f64, left: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif"><text x="{left}" y="22" font-size="14">{}</text>"#,
        escape(title)
    )
}

/// Five horizontal grid lines from 0 to `top_value`, labelled, between
/// `left` and `right`, placed by `y`.
fn y_grid(out: &mut String, left: f64, right: f64, top_value: f64, y: impl Fn(f64) -> f64) {
    for i in 0..=4 {
        let v = top_value * i as f64 / 4.0;
        let _ = write!(
            out,
            r##"<line x1="{left}" x2="{right}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" font-size="10" text-anchor="end">{v:.2}</text>"##,
            left - 4.0,
            y(v) + 3.0,
            yy = y(v)
        );
    }
}

/// Grouped bars: per group (a workload), one bar per series (a target)
/// with `values[group][series]` (`None`: not measured); a dashed line at
/// `reference` (1.0: native) when given.
pub fn bars(
    title: &str,
    unit: &str,
    groups: &[&str],
    series: &[&str],
    values: &[Vec<Option<f64>>],
    reference: Option<f64>,
) -> String {
    let (left, top, height) = (70.0, 40.0, 260.0);
    let group_w = 24.0 * series.len() as f64 + 24.0;
    let width = left + group_w * groups.len() as f64 + 170.0;
    let max = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .chain(reference)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let y = |v: f64| top + height - v / max * height;
    let mut out = open(title, width, top + height + 60.0, left);
    y_grid(
        &mut out,
        left,
        left + group_w * groups.len() as f64,
        max / 1.1,
        y,
    );
    let _ = write!(
        out,
        r#"<text x="14" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        top + height / 2.0,
        top + height / 2.0,
        escape(unit)
    );
    for (g, name) in groups.iter().enumerate() {
        let x0 = left + g as f64 * group_w + 12.0;
        for (s, v) in values[g].iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    r#"<rect x="{}" y="{}" width="20" height="{}" fill="{}"><title>{}: {v:.3}</title></rect>"#,
                    x0 + s as f64 * 24.0,
                    y(*v),
                    top + height - y(*v),
                    COLOURS[s % COLOURS.len()],
                    escape(series[s])
                );
            }
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x0 + 12.0 * series.len() as f64,
            top + height + 16.0,
            escape(name)
        );
    }
    if let Some(r) = reference {
        let _ = write!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#333" stroke-dasharray="4 3"/>"##,
            left + group_w * groups.len() as f64,
            yy = y(r)
        );
    }
    legend(
        &mut out,
        series,
        left + group_w * groups.len() as f64 + 16.0,
        top + 10.0,
    );
    out.push_str("</svg>\n");
    out
}

/// Lines: per series, `points` (x, y), on shared axes from 0.
pub fn lines(
    title: &str,
    x_unit: &str,
    y_unit: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let (left, top, width, height) = (60.0, 40.0, 560.0, 240.0);
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let max_x = all()
        .map(|p| p.0)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let max_y = all()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let px = |x: f64| left + x / max_x * width;
    let py = |y: f64| top + height - y / max_y * height;
    let mut out = open(title, left + width + 170.0, top + height + 50.0, left);
    y_grid(&mut out, left, left + width, max_y / 1.1, py);
    for i in 0..=4 {
        let v = max_x * i as f64 / 4.0;
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{v:.0}</text>"#,
            px(v),
            top + height + 14.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text><text x="14" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        left + width / 2.0,
        top + height + 32.0,
        escape(x_unit),
        top + height / 2.0,
        top + height / 2.0,
        escape(y_unit)
    );
    for (i, (_, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLOURS[i % COLOURS.len()],
            path.join(" ")
        );
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut out, &names, left + width + 16.0, top + 10.0);
    out.push_str("</svg>\n");
    out
}
