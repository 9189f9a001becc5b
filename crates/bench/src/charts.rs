//! SVG charts of a comparison: end-to-end latency percentiles against offered rate, and server
//! memory against idle sessions, one line per server and protocol.

use crate::compare::{E2E_P99_TARGET_MS, IdleOutcome, SweepOutcome, Target};
use anyhow::Context;
use plotters::prelude::*;
use std::path::Path;

fn color(target: Target) -> RGBColor {
    match target {
        Target::TidingsWs => RGBColor(0x1f, 0x77, 0xb4),
        Target::TidingsXmpp => RGBColor(0x17, 0xbe, 0xcf),
        Target::TidingsMqtt => RGBColor(0x2c, 0xa0, 0x2c),
        Target::Ejabberd => RGBColor(0xd6, 0x27, 0x28),
        Target::Prosody => RGBColor(0x94, 0x67, 0xbd),
        Target::Mosquitto => RGBColor(0xff, 0x7f, 0x0e),
    }
}

fn err(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

/// End-to-end p50 (dashed) and p99 (solid) against offered rate, both axes logarithmic, with
/// the 50 ms line; failed steps are drawn as hollow points.
pub fn latency(path: &Path, sweeps: &[SweepOutcome], title: &str) -> anyhow::Result<()> {
    let steps: Vec<_> = sweeps.iter().flat_map(|s| &s.steps).collect();
    if steps.is_empty() {
        return Ok(());
    }
    let max_rate = steps.iter().map(|s| s.rate).max().unwrap_or(1) as f64 * 1.5;
    let min_rate = steps.iter().map(|s| s.rate).min().unwrap_or(1).max(1) as f64 / 1.5;
    let max_ms = steps
        .iter()
        .map(|s| s.e2e_latency.p99_ms)
        .fold(E2E_P99_TARGET_MS, f64::max)
        * 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (min_rate..max_rate).log_scale(),
            (0.1f64..max_ms).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered messages per second (hollow points: the rate failed)")
        .y_desc("end-to-end latency, ms (p99 solid, p50 dashed)")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(min_rate, E2E_P99_TARGET_MS), (max_rate, E2E_P99_TARGET_MS)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(err)?
        .label("50 ms")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.4)));
    for sweep in sweeps {
        let c = color(sweep.target);
        let p99: Vec<(f64, f64)> = sweep
            .steps
            .iter()
            .map(|s| (s.rate as f64, s.e2e_latency.p99_ms.max(0.1)))
            .collect();
        let p50: Vec<(f64, f64)> = sweep
            .steps
            .iter()
            .map(|s| (s.rate as f64, s.e2e_latency.p50_ms.max(0.1)))
            .collect();
        chart
            .draw_series(LineSeries::new(p99.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(sweep.target.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(p50, 4, 4, c.stroke_width(1)))
            .map_err(err)?;
        chart
            .draw_series(sweep.steps.iter().map(|s| {
                let style = if s.passed {
                    c.filled()
                } else {
                    c.stroke_width(1)
                };
                Circle::new((s.rate as f64, s.e2e_latency.p99_ms.max(0.1)), 4, style)
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Server RSS (MiB) against idle sessions.
pub fn memory(path: &Path, idle: &[IdleOutcome], title: &str) -> anyhow::Result<()> {
    let points: Vec<_> = idle.iter().flat_map(|i| &i.points).collect();
    if points.is_empty() {
        return Ok(());
    }
    let max_x = points.iter().map(|p| p.sessions).max().unwrap_or(1) as f64 * 1.05;
    let max_y = points
        .iter()
        .map(|p| p.server_rss_kib as f64 / 1024.0)
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("idle authenticated sessions")
        .y_desc("server resident memory, MiB")
        .draw()
        .map_err(err)?;
    for i in idle {
        let c = color(i.target);
        let mut line: Vec<(f64, f64)> = vec![(0.0, i.baseline_rss_kib as f64 / 1024.0)];
        line.extend(
            i.points
                .iter()
                .map(|p| (p.sessions as f64, p.server_rss_kib as f64 / 1024.0)),
        );
        let label = match i.fit {
            Some(f) => format!("{} ({:.1} KiB/session)", i.target.name(), f.slope),
            None => i.target.name().to_string(),
        };
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Draws both charts into `dir` as `compare-latency.svg` and `compare-memory.svg`.
pub fn draw(
    dir: &Path,
    sweeps: &[SweepOutcome],
    idle: &[IdleOutcome],
    note: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    latency(
        &dir.join("compare-latency.svg"),
        sweeps,
        &format!("1:1 durable messaging, end-to-end latency ({note})"),
    )?;
    memory(
        &dir.join("compare-memory.svg"),
        idle,
        &format!("Server memory with idle sessions ({note})"),
    )?;
    Ok(())
}

/// Draws the charts from a results file: every `compare*` entry of `commit` (the smoke profile
/// aside), so separate runs (for example one per target) make one chart; for a target measured
/// more than once, the latest entry counts.
pub fn from_results(path: &Path, commit: &str, dir: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let root: serde_json::Value = serde_json::from_str(&text)?;
    let entry = root
        .get(commit)
        .and_then(|e| e.as_object())
        .with_context(|| format!("no results for {commit} in {}", path.display()))?;
    let mut runs: Vec<(u64, &serde_json::Value)> = entry
        .iter()
        .filter(|(k, _)| k.starts_with("compare") && *k != "compare_smoke")
        .map(|(_, v)| (v["recorded_at_unix"].as_u64().unwrap_or(0), &v["result"]))
        .collect();
    runs.sort_by_key(|r| r.0);
    let mut idle: Vec<IdleOutcome> = Vec::new();
    let mut sweeps: Vec<SweepOutcome> = Vec::new();
    let mut load = String::new();
    for (_, run) in runs {
        for i in serde_json::from_value::<Vec<IdleOutcome>>(run["idle"].clone())? {
            idle.retain(|o| o.target != i.target);
            idle.push(i);
        }
        for s in serde_json::from_value::<Vec<SweepOutcome>>(run["sweeps"].clone())? {
            sweeps.retain(|o| o.target != s.target);
            sweeps.push(s);
        }
        if let Some(u) = run["uptime_before"].as_str()
            && let Some((_, l)) = u.split_once("load average:")
        {
            load = l.trim().to_string();
        }
    }
    idle.sort_by_key(|o| o.target);
    sweeps.sort_by_key(|o| o.target);
    let short: String = commit.chars().take(7).collect();
    draw(dir, &sweeps, &idle, &format!("commit {short}, load {load}"))
}
