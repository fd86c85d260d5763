//! Draws `docs/bench.png` from the benchmark results written by `bench/run.sh`:
//! throughput (decisions/s) on x, p99 latency (µs, log scale) on y, one series per system; and,
//! given a third argument, `docs/bench-series.png`: decisions/s and p99 latency second by second
//! through each scenario's measured run (the `series` of `ringlimit bench --json`).
//!
//! ```text
//! cargo run --release --example bench_plot -- [bench/results/latest.json] [docs/bench.png] \
//!     [docs/bench-series.png]
//! ```
//!
//! The input is the object `bench/run.sh` writes; this reads only:
//!
//! ```json
//! {
//!   "machine": { "cpu": "...", "nproc": 2, ... },
//!   "scenarios": [ { "name": "single_1", "system": "ringlimit single node",
//!                    "decisions_per_sec": 1.0, "p99_us": 1.0, ... } ],
//!   "curves": [ { "system": "ringlimit single node",
//!                 "points": [ { "offered": 1.0, "decisions_per_sec": 1.0, "p99_us": 1.0 } ] } ]
//! }
//! ```
//!
//! and for the time series each scenario's `raw.series`
//! (`[{ "t": 1, "decisions": 1, "p99_us": 1, ... }]`); scenarios without one (Redis) are left out.
//!
//! Each curve is drawn as a line through its points (sorted by throughput); a curve with
//! `"closed_loop": true` (Redis: redis-benchmark has no rate setting, so its points are client
//! counts) keeps its points' order and says so in its legend. A file without
//! curves is drawn from its scenarios, as points. Text uses DejaVu Sans embedded at build time, so no
//! system fonts are needed.

use std::error::Error;

use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

struct Series {
    system: String,
    points: Vec<(f64, f64)>,
    line: bool,
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x > 0.0)
}

fn series_of(results: &Value) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for curve in results["curves"].as_array().into_iter().flatten() {
        let Some(system) = curve["system"].as_str() else {
            continue;
        };
        let mut points: Vec<(f64, f64)> = curve["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((num(p, "decisions_per_sec")?, num(p, "p99_us")?)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let closed_loop = curve["closed_loop"].as_bool() == Some(true);
        if !closed_loop {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let system = if closed_loop {
            format!("{system} (closed loop, 1 to N clients)")
        } else {
            system.to_string()
        };
        out.push(Series {
            system,
            points,
            line: true,
        });
    }
    if !out.is_empty() {
        return out;
    }
    // No curves (an older or partial results file): the closed-loop scenarios as single points.
    for s in results["scenarios"].as_array().into_iter().flatten() {
        let (Some(system), Some(x), Some(y)) = (
            s["system"].as_str(),
            num(s, "decisions_per_sec"),
            num(s, "p99_us"),
        ) else {
            continue;
        };
        match out.iter_mut().find(|c| c.system == system) {
            Some(c) => c.points.push((x, y)),
            None => out.push(Series {
                system: system.to_string(),
                points: vec![(x, y)],
                line: false,
            }),
        }
    }
    out
}

const PALETTE: [RGBColor; 7] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// One scenario's run, second by second.
struct Run {
    label: String,
    /// (second, decisions in it).
    decisions: Vec<(f64, f64)>,
    /// (second, p99 µs), for the seconds with an answered call.
    p99: Vec<(f64, f64)>,
}

/// The scenarios that carry `raw.series` (or `series`), in their order.
fn time_series_of(results: &Value) -> Vec<Run> {
    let mut out = Vec::new();
    for s in results["scenarios"].as_array().into_iter().flatten() {
        let Some(points) = s["raw"]["series"].as_array().or(s["series"].as_array()) else {
            continue;
        };
        let label = s["description"]
            .as_str()
            .or(s["name"].as_str())
            .unwrap_or("?")
            .to_string();
        let mut run = Run {
            label,
            decisions: Vec::new(),
            p99: Vec::new(),
        };
        for p in points {
            let Some(t) = p["t"].as_f64() else { continue };
            if let Some(decisions) = num(p, "decisions") {
                run.decisions.push((t, decisions));
            }
            if let Some(p99) = num(p, "p99_us") {
                run.p99.push((t, p99));
            }
        }
        if !run.decisions.is_empty() {
            out.push(run);
        }
    }
    out
}

/// Draws decisions/s (top) and p99 latency (bottom, log scale) per second of each run.
fn draw_time_series(results: &Value, runs: &[Run], output: &str) -> Result<(), Box<dyn Error>> {
    let t_max = runs
        .iter()
        .flat_map(|r| r.decisions.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    // Decisions/s differ a hundredfold between 1 and 100 items per call: a log scale too.
    let decisions = || runs.iter().flat_map(|r| r.decisions.iter().map(|p| p.1));
    let d_lo = 10f64
        .powf(
            decisions()
                .filter(|d| *d > 0.0)
                .fold(f64::INFINITY, f64::min)
                .log10()
                .floor(),
        )
        .max(1.0);
    let d_hi = 10f64
        .powf(decisions().fold(1.0, f64::max).log10().ceil())
        .max(d_lo * 10.0);
    let x_range = 0.5..t_max + 0.5;
    let x_labels = (t_max as usize).clamp(1, 20);
    let whole = |x: &f64| {
        if (x - x.round()).abs() < 1e-6 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    let p99s = || runs.iter().flat_map(|r| r.p99.iter().map(|p| p.1));
    let y_lo = 10f64
        .powf(p99s().fold(f64::INFINITY, f64::min).log10().floor())
        .max(1.0);
    let y_hi = 10f64
        .powf(p99s().fold(1.0, f64::max).log10().ceil())
        .max(y_lo * 10.0);

    if let Some(dir) = std::path::Path::new(output).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(output, (1000, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let machine = &results["machine"];
    let caption = match (machine["cpu"].as_str(), machine["nproc"].as_u64()) {
        (Some(cpu), Some(n)) => format!("Second by second through each run ({n} × {cpu})"),
        _ => "Second by second through each run".to_string(),
    };
    let root = root.titled(
        &caption,
        ("sans-serif", 20).into_font().style(FontStyle::Bold),
    )?;
    let (top, bottom) = root.split_vertically(450);
    let thousands = |x: &f64| {
        if *x >= 1e6 {
            format!("{:.1}M", x / 1e6)
        } else if *x >= 1e3 {
            format!("{:.0}k", x / 1e3)
        } else {
            format!("{x:.0}")
        }
    };

    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range.clone(), (d_lo..d_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("second of the measured run")
        .y_desc("decisions in the second")
        .y_label_formatter(&thousands)
        .x_labels(x_labels)
        .x_label_formatter(&whole)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(run.decisions.clone(), style))?
            .label(run.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    ShapeStyle::from(&color).stroke_width(2),
                )
            });
        chart.draw_series(
            run.decisions
                .iter()
                .map(|p| Circle::new(*p, 3, style.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("second of the measured run")
        .y_desc("p99 latency in the second (µs)")
        .x_labels(x_labels)
        .x_label_formatter(&whole)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;
    for (i, run) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart.draw_series(LineSeries::new(run.p99.clone(), style))?;
        chart.draw_series(run.p99.iter().map(|p| Circle::new(*p, 3, style.filled())))?;
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let input = args
        .next()
        .unwrap_or_else(|| "bench/results/latest.json".to_string());
    let output = args.next().unwrap_or_else(|| "docs/bench.png".to_string());
    let series_output = args.next();

    let text = std::fs::read_to_string(&input).map_err(|e| format!("{input}: {e}"))?;
    let results: Value = serde_json::from_str(&text).map_err(|e| format!("{input}: {e}"))?;
    let series = series_of(&results);
    if series.is_empty() {
        return Err(
            format!("{input}: no curve or scenario with decisions_per_sec and p99_us").into(),
        );
    }

    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the embedded DejaVu Sans font did not load")?;
    plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold())
        .map_err(|_| "the embedded DejaVu Sans Bold font did not load")?;
    if let Some(series_output) = series_output {
        let runs = time_series_of(&results);
        if runs.is_empty() {
            // An older results file: bench/report.sh then leaves the figure out too.
            eprintln!("{input}: no scenario with a per-second series; {series_output} not drawn");
        } else {
            draw_time_series(&results, &runs, &series_output)?;
            println!("{series_output}");
        }
    }

    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max) * 1.1;
    let y_min = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max);
    // Whole decades around the data, so the log axis labels are round.
    let y_lo = 10f64.powf(y_min.log10().floor()).max(1.0);
    let y_hi = 10f64.powf(y_max.log10().ceil()).max(y_lo * 10.0);

    if let Some(dir) = std::path::Path::new(&output).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(&output, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;

    let machine = &results["machine"];
    let caption = match (machine["cpu"].as_str(), machine["nproc"].as_u64()) {
        (Some(cpu), Some(n)) => format!("Throughput vs p99 latency ({n} × {cpu})"),
        _ => "Throughput vs p99 latency".to_string(),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            caption,
            ("sans-serif", 20).into_font().style(FontStyle::Bold),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, (y_lo..y_hi).log_scale())?;

    chart
        .configure_mesh()
        .x_desc("decisions per second")
        .y_desc("p99 latency (µs)")
        .x_label_formatter(&|x| {
            if *x >= 1e6 {
                format!("{:.1}M", x / 1e6)
            } else if *x >= 1e3 {
                format!("{:.0}k", x / 1e3)
            } else {
                format!("{x:.0}")
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    let palette = PALETTE;
    for (i, s) in series.iter().enumerate() {
        let color = palette[i % palette.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let label = if s.line {
            s.system.clone()
        } else {
            format!("{} (closed loop)", s.system)
        };
        let points = s.points.clone();
        if s.line {
            chart.draw_series(LineSeries::new(points.clone(), style))?;
        }
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, style.filled())),
            )?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    ShapeStyle::from(&color).stroke_width(2),
                )
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    root.present()?;
    println!("{output}");
    Ok(())
}
