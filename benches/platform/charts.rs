//! The bench's pictures, drawn from the rows once the table is printed (plotters, SVG, text
//! as SVG `<text>`: no font files): the freshness distribution at each rate and setting,
//! throughput ours vs baseline per row, and scaling with relays and projection consumers.
//! Written next to report.json; copied into `docs/bench/` when `BENCH_PICTURES_TO_DOCS=1`.
//! A picture whose section did not run is not drawn (and an older one beside the report is
//! removed, so that the directory never mixes runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::row::{quantile, Row};

/// Ok(false) when the rows the picture is drawn from are not in the report.
type Drawn = Result<bool, Box<dyn std::error::Error>>;
/// A picture: its file name and what draws it from the rows into a path.
type Picture = (&'static str, fn(&[Row], &Path) -> Drawn);

const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const MET: RGBColor = RGBColor(44, 160, 44);
const MISSED: RGBColor = RGBColor(214, 39, 40);
const NO_GOAL: RGBColor = RGBColor(150, 150, 150);

/// Draws every picture whose rows are in `rows` into `dir`; returns the files written.
pub(super) fn draw(rows: &[Row], dir: &Path) -> Vec<PathBuf> {
    let pictures: [Picture; 3] = [
        ("freshness.svg", freshness),
        ("throughput.svg", throughput),
        ("scaling.svg", scaling),
    ];
    let mut written = Vec::new();
    for (name, picture) in pictures {
        let path = dir.join(name);
        match picture(rows, &path) {
            Ok(true) => written.push(path),
            Ok(false) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => eprintln!("picture {}: {e}", path.display()),
        }
    }
    if std::env::var("BENCH_PICTURES_TO_DOCS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bench");
        let _ = std::fs::create_dir_all(&docs);
        for p in &written {
            if let Some(name) = p.file_name() {
                if let Err(e) = std::fs::copy(p, docs.join(name)) {
                    eprintln!("copying {} into {}: {e}", p.display(), docs.display());
                }
            }
        }
    }
    written
}

/// At most `max` chars of `s`, with an ellipsis when cut.
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

/// The number a goal such as ">= 0.8" or "> 1 (partitions in parallel)" holds the ratio to.
fn goal_ratio(goal: &str) -> Option<f64> {
    let g = goal.trim();
    let rest = g.strip_prefix(">=").or_else(|| g.strip_prefix('>'))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The largest of 1, 2, 5 x 10^k at most `v` (> 0): where a log axis starts.
fn down_125(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * p)
        .find(|x| *x <= v)
        .unwrap_or(p)
}

/// The 1, 2, 5 x 10^k in `lo..=hi`: the log axis' ticks.
fn ticks_125(lo: f64, hi: f64) -> Vec<f64> {
    let mut p = 10f64.powf(lo.log10().floor());
    let mut ticks = Vec::new();
    while p <= hi {
        ticks.extend([p, 2.0 * p, 5.0 * p].into_iter().filter(|t| (lo..=hi).contains(t)));
        p *= 10.0;
    }
    ticks
}

/// (a) The distribution of write due -> searchable, one panel per rate, one CDF per setting
/// (all runs' samples of the freshness rows; log time axis).
fn freshness(rows: &[Row], path: &Path) -> Drawn {
    // rate -> [(setting, sorted samples)]
    let mut by_rate: BTreeMap<u64, Vec<(String, &[f64])>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.unit == "ms" && !r.samples.is_empty()) {
        let Some(rest) = r.what.strip_prefix("freshness @") else {
            continue;
        };
        let Some((rate, rest)) = rest.split_once(" writes/s, ") else {
            continue;
        };
        let setting = rest.split(':').next().unwrap_or(rest).to_owned();
        if let Ok(rate) = rate.parse::<u64>() {
            by_rate.entry(rate).or_default().push((setting, &r.samples));
        }
    }
    if by_rate.is_empty() {
        return Ok(false);
    }
    let most = by_rate.values().map(Vec::len).max().unwrap_or(0) as u32;
    let legend_h = 14 + 18 * most;
    let root = SVGBackend::new(path, (620 * by_rate.len() as u32, 470 + legend_h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(36);
    title.titled(
        "write due -> searchable: share of writes visible in the index within x ms (all runs)",
        (FONT, 18),
    )?;
    let panels = body.split_evenly((1, by_rate.len()));
    for (panel, (rate, series)) in panels.iter().zip(&by_rate) {
        let (plot, legend) = panel.split_vertically(434);
        let min = series.iter().map(|(_, s)| s[0]).fold(f64::INFINITY, f64::min).max(1.0);
        let lo = down_125(min);
        let hi = series
            .iter()
            .map(|(_, s)| s[s.len() - 1])
            .fold(0.0, f64::max)
            .max(lo * 2.0)
            * 1.1;
        let mut chart = ChartBuilder::on(&plot)
            .caption(format!("{rate} writes/s"), (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale().with_key_points(ticks_125(lo, hi)), 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("ms from when the write was due (log)")
            .y_desc("% of writes searchable")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for y in [50.0, 99.0] {
            chart.draw_series(DashedLineSeries::new(
                [(lo, y), (hi, y)],
                4,
                4,
                RGBColor(160, 160, 160).stroke_width(1),
            ))?;
        }
        for (i, (setting, s)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let n = s.len();
            let points: Vec<(f64, f64)> = (0..=400)
                .map(|k| {
                    let q = k as f64 / 400.0;
                    (
                        quantile(s, q).max(lo),
                        100.0 * ((q * (n - 1) as f64).round() + 1.0) / n as f64,
                    )
                })
                .collect();
            chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
            // The legend under the plot: the curves fill the plot's corners.
            let y = 8 + 18 * i as i32;
            legend.draw(&PathElement::new(vec![(62, y), (82, y)], color.stroke_width(2)))?;
            legend.draw(&Text::new(
                format!(
                    "{setting}: p50 {:.0}, p99 {:.0}, max {:.0} ms ({n} writes)",
                    quantile(s, 0.5),
                    quantile(s, 0.99),
                    s[n - 1]
                ),
                (88, y),
                TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
    }
    root.present()?;
    Ok(true)
}

/// (b) Ours / baseline per row that has a throughput baseline: a horizontal bar per row, green
/// when the goal is met, red when not, grey when the row has no numeric goal; the goal as a
/// black tick and parity as a dashed line.
fn throughput(rows: &[Row], path: &Path) -> Drawn {
    let bars: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| r.ratio().filter(|x| x.is_finite()).map(|x| (r, x)))
        .collect();
    if bars.is_empty() {
        return Ok(false);
    }
    let n = bars.len();
    let labels: Vec<String> = bars.iter().map(|(r, _)| short(&r.what, 78)).collect();
    let xmax = bars
        .iter()
        .map(|(r, x)| x.max(goal_ratio(r.goal).unwrap_or(0.0)))
        .fold(1.0, f64::max)
        * 1.45;
    let root = SVGBackend::new(path, (1400, 90 + 30 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "throughput: ours / baseline (median of the interleaved runs; | goal, green met, red missed)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(470)
        // An integer range holds its end: 0..n - 1 is n segments.
        .build_cartesian_2d(0f64..xmax, (0usize..n - 1).into_segmented())?;
    // Row i is drawn in segment n - 1 - i: the table's order, top down.
    let seg = |i: usize| n - 1 - i;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_style((FONT, 12))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(s) if *s < n => labels[n - 1 - *s].clone(),
            _ => String::new(),
        })
        .x_desc("ours / baseline")
        .x_label_formatter(&|v| format!("{v:.1}"))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (i, (r, x)) in bars.iter().enumerate() {
        let goal = goal_ratio(r.goal);
        let color = match goal {
            Some(g) if *x >= g => MET,
            Some(_) => MISSED,
            None => NO_GOAL,
        };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(seg(i))),
                (*x, SegmentValue::Exact(seg(i) + 1)),
            ],
            color.mix(0.8).filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(bar))?;
        if let Some(g) = goal {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(g, SegmentValue::Exact(seg(i))), (g, SegmentValue::Exact(seg(i) + 1))],
                BLACK.stroke_width(2),
            )))?;
        }
        chart.draw_series(std::iter::once(Text::new(
            format!(
                "{x:.2}  ({:.0} / {:.0} {}; goal {})",
                r.ours, r.baseline, r.unit, r.goal
            ),
            (x + xmax * 0.008, SegmentValue::CenterOf(seg(i))),
            TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        )))?;
    }
    chart.draw_series(DashedLineSeries::new(
        [(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
        5,
        4,
        RGBColor(90, 90, 90).stroke_width(1),
    ))?;
    root.present()?;
    Ok(true)
}

/// One scaling panel's data: (processes, measured median, (min, max)), and one process's rate.
struct Scaling {
    title: &'static str,
    what: &'static str,
    points: Vec<(f64, f64, (f64, f64))>,
}

/// The scaling rows whose name starts with `prefix` followed by the process count (`x2`):
/// their baseline is k times one process's rate, so one process's point comes back from it.
fn scaling_points(rows: &[Row], prefix: &str) -> Vec<(f64, f64, (f64, f64))> {
    let mut points: Vec<(f64, f64, (f64, f64))> = Vec::new();
    for r in rows.iter().filter(|r| r.baseline > 0.0) {
        let Some(rest) = r.what.strip_prefix(prefix) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(k) = digits.parse::<f64>() else {
            continue;
        };
        if points.iter().all(|p| p.0 != 1.0) {
            let (lo, hi) = r.baseline_range;
            points.push((1.0, r.baseline / k, (lo / k, hi / k)));
        }
        points.push((k, r.ours, r.ours_range));
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// (c) Events/s against the number of processes, measured and the linear model (k times one
/// process), for the relay-scaling and projection-scaling rows.
fn scaling(rows: &[Row], path: &Path) -> Drawn {
    let panels: Vec<Scaling> = [
        Scaling {
            title: "outbox relays (100 ms modelled per batch)",
            what: "relays",
            points: scaling_points(rows, "outbox relays x"),
        },
        Scaling {
            title: "projection consumers (200 ms modelled per bulk)",
            what: "projection consumers",
            points: scaling_points(rows, "projection consumers x"),
        },
    ]
    .into_iter()
    .filter(|p| p.points.len() > 1)
    .collect();
    if panels.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (560 * panels.len() as u32, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(36);
    title.titled(
        "scaling: events/s with k processes vs k x one process (median, min-max)",
        (FONT, 18),
    )?;
    for (area, p) in body.split_evenly((1, panels.len())).iter().zip(&panels) {
        let one = p.points[0].1;
        let kmax = p.points.iter().map(|q| q.0).fold(1.0, f64::max);
        let ymax = p.points.iter().map(|q| q.2 .1.max(q.0 * one)).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(p.title, (FONT, 15))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..kmax + 0.5, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc(format!("{} (processes)", p.what))
            .y_desc("events/s")
            .x_labels(kmax as usize + 2)
            .x_label_formatter(&|v| {
                if v.fract() == 0.0 && *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(TRANSPARENT)
            .draw()?;
        let model = COLORS[1];
        chart
            .draw_series(DashedLineSeries::new(
                p.points.iter().map(|q| (q.0, q.0 * one)),
                6,
                4,
                model.stroke_width(2),
            ))?
            .label(format!("linear model: k x {one:.0} events/s"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], model.stroke_width(2)));
        let ours = COLORS[0];
        chart
            .draw_series(LineSeries::new(
                p.points.iter().map(|q| (q.0, q.1)),
                ours.stroke_width(2),
            ))?
            .label("measured")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ours.stroke_width(2)));
        for &(k, v, (lo, hi)) in &p.points {
            chart.draw_series([PathElement::new(vec![(k, lo), (k, hi)], ours.stroke_width(1))])?;
            chart.draw_series([Circle::new((k, v), 4, ours.filled())])?;
            chart.draw_series([Text::new(
                format!("{v:.0} ({:.2})", v / (k * one)),
                (k, v),
                TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Bottom)),
            )])?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(true)
}
