//! SVG figures of training runs (`sclstm plot`).
//!
//! Reads the JSON Lines logs the trainer writes into a run directory and draws:
//! - `dev_scores.svg`: dev score per epoch, one panel per task (F1 for chunk-scored tasks,
//!   accuracy for POS) plus the dev average over tasks (the paper's Figure 3 measure);
//! - `train_loss.svg`: mean training loss per epoch, one panel per task;
//! - `grad_conflict.svg` (only when a run has `grads.jsonl`): pairwise cosine similarity of
//!   the tasks' gradients on the shared parameters against the optimizer step, and each
//!   task's shared-gradient norm.
//!
//! Several runs are overlaid in every panel, one colour per run, labelled with the run's
//! `model` from its `config.toml` (or the directory name when there is none).
//!
//! The figures are drawn with plotters' SVG backend. Text becomes `<text>` elements that
//! the viewer renders with its own fonts, so no font files or font features are needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Per-epoch scores written by the trainer.
const METRICS_FILE: &str = "metrics.jsonl";
/// Gradient statistics written with `--log-grads N`.
const GRADS_FILE: &str = "grads.jsonl";
/// Resolved training configuration (source of the legend label).
const CONFIG_FILE: &str = "config.toml";
/// Task name of the per-epoch dev average lines.
const AVERAGE_TASK: &str = "average";
/// Split the score and loss figures are drawn from.
const PLOT_SPLIT: &str = "dev";

/// X-axis title of the per-epoch panels.
const EPOCH: &str = "epoch";

/// Pixel size of one panel; figures place their panels side by side.
const PANEL_SIZE: (u32, u32) = (480, 380);

/// Series colours (Tableau 10), cycled when there are more series than colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// What can go wrong while reading run directories or drawing figures.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The run directory has no `metrics.jsonl`.
    #[error("{run}: not a run directory (no {METRICS_FILE} in it)")]
    MissingMetrics {
        /// The run directory given with `--run`.
        run: PathBuf,
    },
    /// A log line is not a JSON object of the expected shape.
    #[error("{path}:{line}: malformed line: {message}")]
    BadLine {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the JSON parser reported.
        message: String,
    },
    /// `config.toml` exists but is not valid TOML.
    #[error("{path}: invalid TOML: {message}")]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// What the TOML parser reported.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// plotters failed to lay out or draw a figure.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The figure being drawn.
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
}

/// The outcome of [`plot_runs`]: figures written and figures skipped.
#[derive(Debug, Default)]
pub struct PlotReport {
    /// Paths of the SVG files written.
    pub written: Vec<PathBuf>,
    /// One note per figure that had nothing to draw, saying why.
    pub skipped: Vec<String>,
}

/// One line of `metrics.jsonl` (fields the figures do not use are ignored).
#[derive(Debug, Clone, Deserialize)]
struct MetricsRecord {
    epoch: u32,
    task: String,
    split: String,
    #[serde(default)]
    metric: Option<String>,
    /// `null` when the trainer logged a non-finite score; such points are left out.
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    train_loss: Option<f64>,
}

/// One line of `grads.jsonl` (fields the figures do not use are ignored).
#[derive(Debug, Clone, Deserialize)]
struct GradsRecord {
    step: u64,
    /// Values may be `null` (a non-finite norm); such points are left out.
    #[serde(default)]
    shared_norm: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    cosine: BTreeMap<String, Option<f64>>,
}

/// Everything the figures need from one run directory.
#[derive(Debug)]
struct Run {
    label: String,
    metrics: Vec<MetricsRecord>,
    grads: Option<Vec<GradsRecord>>,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stroke {
    /// A solid line through the points.
    Solid,
    /// A dashed line.
    Dashed,
    /// A dotted line.
    Dotted,
    /// Markers only, each with a whisker over its band (lo, hi).
    Markers,
}

/// One line of one panel.
#[derive(Debug)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) color: RGBColor,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) stroke: Stroke,
    /// `(x, lo, hi)`: a shaded band around a line, or whiskers of markers.
    pub(crate) band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A solid line with no band.
    pub(crate) fn line(label: String, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Series {
            label,
            color,
            points,
            stroke: Stroke::Solid,
            band: Vec::new(),
        }
    }
}

/// A horizontal reference line across a panel, labelled at its right end.
#[derive(Debug)]
pub(crate) struct HLine {
    pub(crate) y: f64,
    pub(crate) label: String,
    pub(crate) color: RGBColor,
    pub(crate) dashed: bool,
}

/// One chart of a figure.
#[derive(Debug)]
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) x_desc: &'static str,
    pub(crate) y_desc: String,
    pub(crate) series: Vec<Series>,
    /// Draw a grey line at y = 0 (the boundary between agreeing and conflicting gradients).
    pub(crate) zero_line: bool,
    /// Reference lines.
    pub(crate) hlines: Vec<HLine>,
    /// Names of the categories at x = 1, 2, … (a categorical x axis).
    pub(crate) categories: Option<Vec<String>>,
}

impl Panel {
    /// A panel of plain lines.
    pub(crate) fn lines(
        title: String,
        x_desc: &'static str,
        y_desc: String,
        series: Vec<Series>,
    ) -> Self {
        Panel {
            title,
            x_desc,
            y_desc,
            series,
            zero_line: false,
            hlines: Vec::new(),
            categories: None,
        }
    }
}

/// Reads every run directory in `runs` and writes `dev_scores.svg`, `train_loss.svg` and
/// (when some run logged gradients) `grad_conflict.svg` into `out`, creating `out` if needed.
/// A figure with nothing to draw is skipped and noted in the report.
pub fn plot_runs(runs: &[PathBuf], out: &Path) -> Result<PlotReport, PlotError> {
    let mut loaded = runs
        .iter()
        .map(|dir| load_run(dir))
        .collect::<Result<Vec<_>, _>>()?;
    disambiguate_labels(&mut loaded, runs);
    std::fs::create_dir_all(out).map_err(|source| PlotError::Io {
        path: out.to_path_buf(),
        source,
    })?;

    let mut report = PlotReport::default();
    let figures = [
        (
            "dev_scores.svg",
            dev_score_panels(&loaded),
            "no run has dev scores in metrics.jsonl",
        ),
        (
            "train_loss.svg",
            train_loss_panels(&loaded),
            "no run has train_loss in metrics.jsonl",
        ),
        (
            "grad_conflict.svg",
            grad_panels(&loaded),
            "no run has grads.jsonl (train with --log-grads N)",
        ),
    ];
    for (name, panels, why_empty) in figures {
        if panels.is_empty() {
            report.skipped.push(format!("{name} skipped: {why_empty}"));
            continue;
        }
        let path = out.join(name);
        render(&path, &panels)?;
        report.written.push(path);
    }
    Ok(report)
}

/// Loads `metrics.jsonl`, the optional `grads.jsonl` and the legend label of one run.
fn load_run(dir: &Path) -> Result<Run, PlotError> {
    let metrics_path = dir.join(METRICS_FILE);
    if !metrics_path.is_file() {
        return Err(PlotError::MissingMetrics {
            run: dir.to_path_buf(),
        });
    }
    let metrics = read_jsonl(&metrics_path)?;
    let grads_path = dir.join(GRADS_FILE);
    let grads = if grads_path.is_file() {
        Some(read_jsonl(&grads_path)?)
    } else {
        None
    };
    let label = match config_model(dir)? {
        Some(model) => model,
        None => dir_name(dir),
    };
    Ok(Run {
        label,
        metrics,
        grads,
    })
}

/// Parses a JSON Lines file; blank lines are skipped, anything else must parse as `T`.
fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|e| PlotError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// The top-level `model` key of the run's `config.toml`, if the file and key exist.
fn config_model(dir: &Path) -> Result<Option<String>, PlotError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PlotError::Io { path, source }),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| PlotError::BadConfig {
            path: path.clone(),
            message: e.to_string(),
        })?;
    Ok(table
        .get("model")
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// The last component of a run directory's path, for legends.
fn dir_name(dir: &Path) -> String {
    // `canonicalize` turns `.` or `run/` into a real name; fall back to the path as given.
    let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match resolved.file_name() {
        Some(name) => name.to_string_lossy().into_owned(),
        None => dir.display().to_string(),
    }
}

/// Appends the directory name to labels that two runs share (e.g. two `sc-lstm` runs with
/// different seeds), so that every legend entry names one run.
fn disambiguate_labels(runs: &mut [Run], dirs: &[PathBuf]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs.iter() {
        *counts.entry(run.label.clone()).or_default() += 1;
    }
    for (run, dir) in runs.iter_mut().zip(dirs) {
        let name = dir_name(dir);
        if counts[&run.label] > 1 && run.label != name {
            run.label = format!("{} ({name})", run.label);
        }
    }
}

/// Task names in order of first appearance over all runs (the trainer's task order).
fn task_order<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for name in names {
        if !order.iter().any(|t| t == name) {
            order.push(name.to_string());
        }
    }
    order
}

/// Sorts by x and keeps the last value logged for each x (a resumed run may repeat an epoch).
fn clean_points(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for p in points {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => *last = p,
            _ => out.push(p),
        }
    }
    out
}

/// The panels of `dev_scores.svg`: one per task, then the average.
fn dev_score_panels(runs: &[Run]) -> Vec<Panel> {
    let dev = |r: &MetricsRecord| r.split == PLOT_SPLIT;
    let tasks = task_order(
        runs.iter()
            .flat_map(|r| &r.metrics)
            .filter(|r| dev(r) && r.task != AVERAGE_TASK)
            .map(|r| r.task.as_str()),
    );
    let mut panels: Vec<Panel> = tasks
        .iter()
        .map(|task| {
            let metric = runs.iter().flat_map(|r| &r.metrics).find_map(|r| {
                if dev(r) && &r.task == task {
                    r.metric.clone()
                } else {
                    None
                }
            });
            let measure = match metric.as_deref() {
                Some("f1") => "F1".to_string(),
                Some(other) => other.to_string(),
                None => "score".to_string(),
            };
            Panel::lines(
                format!("{task}: dev {measure}"),
                EPOCH,
                format!("{measure} (%)"),
                run_series(runs, |r| {
                    if dev(r) && &r.task == task {
                        r.score
                    } else {
                        None
                    }
                }),
            )
        })
        .collect();
    panels.push(Panel::lines(
        "average over tasks: dev".to_string(),
        EPOCH,
        "mean dev score (%)".to_string(),
        run_series(runs, |r| {
            if dev(r) && r.task == AVERAGE_TASK {
                r.score
            } else {
                None
            }
        }),
    ));
    panels.retain(|p| !p.series.is_empty());
    panels
}

/// The panels of `train_loss.svg`: one per task.
fn train_loss_panels(runs: &[Run]) -> Vec<Panel> {
    let has_loss = |r: &MetricsRecord| r.task != AVERAGE_TASK && r.train_loss.is_some();
    let tasks = task_order(
        runs.iter()
            .flat_map(|r| &r.metrics)
            .filter(|r| has_loss(r))
            .map(|r| r.task.as_str()),
    );
    let mut panels: Vec<Panel> = tasks
        .iter()
        .map(|task| {
            Panel::lines(
                format!("{task}: training loss"),
                EPOCH,
                "mean loss per batch".to_string(),
                // The loss of an epoch is repeated on its dev and test lines; the dev line is used.
                run_series(runs, |r| {
                    if r.split == PLOT_SPLIT && &r.task == task {
                        r.train_loss
                    } else {
                        None
                    }
                }),
            )
        })
        .collect();
    panels.retain(|p| !p.series.is_empty());
    panels
}

/// One series per run from the metrics lines `value` picks, plotted against the epoch.
fn run_series(runs: &[Run], value: impl Fn(&MetricsRecord) -> Option<f64>) -> Vec<Series> {
    runs.iter()
        .enumerate()
        .map(|(i, run)| {
            Series::line(
                run.label.clone(),
                PALETTE[i % PALETTE.len()],
                clean_points(
                    run.metrics
                        .iter()
                        .filter_map(|r| value(r).map(|v| (f64::from(r.epoch), v)))
                        .collect(),
                ),
            )
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// The panels of `grad_conflict.svg`: cosine similarities, then shared-gradient norms.
fn grad_panels(runs: &[Run]) -> Vec<Panel> {
    let logged: Vec<(&Run, &[GradsRecord])> = runs
        .iter()
        .filter_map(|r| r.grads.as_deref().map(|g| (r, g)))
        .collect();
    // Name a line after its run only when several runs share the panel.
    let several = logged.len() > 1;
    let mut panels = Vec::new();
    for (title, y_desc, zero_line, pick) in [
        (
            "cosine of task gradients on shared parameters",
            "cosine similarity",
            true,
            (|g: &GradsRecord| &g.cosine) as fn(&GradsRecord) -> &BTreeMap<String, Option<f64>>,
        ),
        (
            "norm of each task's shared-parameter gradient",
            "L2 norm",
            false,
            |g: &GradsRecord| &g.shared_norm,
        ),
    ] {
        let mut series = Vec::new();
        for (run, grads) in &logged {
            for key in task_order(
                grads
                    .iter()
                    .flat_map(|g| pick(g).keys())
                    .map(String::as_str),
            ) {
                let points = grads
                    .iter()
                    .filter_map(|g| {
                        pick(g)
                            .get(&key)
                            .copied()
                            .flatten()
                            .map(|v| (g.step as f64, v))
                    })
                    .collect();
                let label = if several {
                    format!("{}: {key}", run.label)
                } else {
                    key
                };
                let color = PALETTE[series.len() % PALETTE.len()];
                series.push(Series::line(label, color, clean_points(points)));
            }
        }
        series.retain(|s| !s.points.is_empty());
        if !series.is_empty() {
            panels.push(Panel {
                zero_line,
                ..Panel::lines(
                    title.to_string(),
                    "optimizer step",
                    y_desc.to_string(),
                    series,
                )
            });
        }
    }
    panels
}

/// Smallest and largest value, widened so that a single value still spans a range.
fn padded_range(values: impl Iterator<Item = f64>, min_span: f64, pad_frac: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let span = (hi - lo).max(min_span);
    let mid = (lo + hi) / 2.0;
    let half = span / 2.0 * (1.0 + 2.0 * pad_frac);
    (mid - half, mid + half)
}

/// A legend entry: series label, colour and stroke.
type LegendEntry = (String, RGBColor, Stroke);

fn legend_entries(panel: &Panel) -> Vec<LegendEntry> {
    panel
        .series
        .iter()
        .map(|s| (s.label.clone(), s.color, s.stroke))
        .collect()
}

/// Width of a legend strip wide enough for its longest label (plotters' SVG backend leaves
/// text measurement to the viewer, so this is an estimate of about 8 px per character).
fn legend_width(entries: &[LegendEntry]) -> u32 {
    let longest = entries
        .iter()
        .map(|(label, _, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    u32::try_from(50 + 8 * longest)
        .unwrap_or(u32::MAX)
        .clamp(100, 360)
}

/// Panel grid: one row for up to three panels, otherwise two rows.
fn grid(n: usize) -> (usize, usize) {
    if n <= 3 { (1, n) } else { (2, n.div_ceil(2)) }
}

/// Draws `panels` in a grid into one SVG file. When every panel has the same series labels
/// and colours (one line per run), one legend at the right serves the whole figure;
/// otherwise each panel gets its own legend at its right. Legends sit outside the plotting
/// area so that they never hide a line.
pub(crate) fn render(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    let entries: Vec<Vec<LegendEntry>> = panels.iter().map(legend_entries).collect();
    let shared = entries.windows(2).all(|w| w[0] == w[1]);
    let legend_w = entries.iter().map(|e| legend_width(e)).max().unwrap_or(0);
    let (rows, cols) = grid(panels.len());
    let (rows_px, cols_px) = (
        u32::try_from(rows).expect("internal: few rows"),
        u32::try_from(cols).expect("internal: few columns"),
    );
    let (width, height) = if shared {
        (cols_px * PANEL_SIZE.0 + legend_w, rows_px * PANEL_SIZE.1)
    } else {
        (cols_px * (PANEL_SIZE.0 + legend_w), rows_px * PANEL_SIZE.1)
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let drawn = if shared {
            draw_with_shared_legend(&root, panels, (rows, cols), &entries[0])
        } else {
            draw_with_panel_legends(&root, panels, (rows, cols))
        };
        drawn.map_err(|e| PlotError::Draw {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    if !svg.ends_with('\n') {
        svg.push('\n');
    }
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Error type of plotters' drawing calls, boxed so one `?` covers all of them.
type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A region of the SVG canvas.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_with_shared_legend(
    root: &Area<'_>,
    panels: &[Panel],
    grid: (usize, usize),
    legend: &[LegendEntry],
) -> DrawResult {
    root.fill(&WHITE)?;
    let charts_w =
        i32::try_from(PANEL_SIZE.0 as usize * grid.1).expect("internal: figure width fits i32");
    let (charts, legend_area) = root.split_horizontally(charts_w);
    for (area, panel) in charts.split_evenly(grid).iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    draw_legend(&legend_area, legend)?;
    root.present()?;
    Ok(())
}

fn draw_with_panel_legends(root: &Area<'_>, panels: &[Panel], grid: (usize, usize)) -> DrawResult {
    root.fill(&WHITE)?;
    let chart_w = i32::try_from(PANEL_SIZE.0).expect("internal: panel width fits i32");
    for (area, panel) in root.split_evenly(grid).iter().zip(panels) {
        let (chart, legend_area) = area.split_horizontally(chart_w);
        draw_panel(&chart, panel)?;
        draw_legend(&legend_area, &legend_entries(panel))?;
    }
    root.present()?;
    Ok(())
}

/// One row per entry: a short line in the series colour, then the label.
fn draw_legend(area: &Area<'_>, entries: &[LegendEntry]) -> DrawResult {
    let font =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, color, stroke)) in entries.iter().enumerate() {
        let y = 56 + 22 * i32::try_from(i).expect("internal: few legend entries");
        match stroke {
            Stroke::Solid => area.draw(&PathElement::new(
                vec![(4, y), (30, y)],
                color.stroke_width(2),
            ))?,
            Stroke::Dashed | Stroke::Dotted => {
                let (dash, gap) = if *stroke == Stroke::Dashed {
                    (7, 4)
                } else {
                    (2, 3)
                };
                let mut x = 4;
                while x < 30 {
                    area.draw(&PathElement::new(
                        vec![(x, y), ((x + dash).min(30), y)],
                        color.stroke_width(2),
                    ))?;
                    x += dash + gap;
                }
            }
            Stroke::Markers => area.draw(&Circle::new((17, y), 4, color.filled()))?,
        }
        area.draw(&Text::new(label.as_str(), (36, y), font.clone()))?;
    }
    Ok(())
}

/// Tick label with at most as many decimals as the tick spacing needs, without trailing
/// zeros, and `0` rather than `-0` (rounding noise on a tick at zero).
fn tick_label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 10.0) as usize
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.truncate(text.trim_end_matches('0').trim_end_matches('.').len());
    }
    if text == "-0" { "0".to_string() } else { text }
}

fn draw_panel(area: &Area<'_>, panel: &Panel) -> DrawResult {
    let points = || panel.series.iter().flat_map(|s| &s.points);
    let (x0, x1) = match &panel.categories {
        Some(c) => (0.5, c.len() as f64 + 0.5),
        None => padded_range(points().map(|p| p.0), 1.0, 0.02),
    };
    let bands = panel
        .series
        .iter()
        .flat_map(|s| &s.band)
        .flat_map(|b| [b.1, b.2]);
    let ys = points()
        .map(|p| p.1)
        .chain(bands)
        .chain(panel.hlines.iter().map(|h| h.y))
        .chain(panel.zero_line.then_some(0.0));
    let (y0, y1) = padded_range(ys, 1e-3, 0.05);

    // Epochs and categories are whole numbers: at most one tick per unit so that ticks land on them.
    let x_ticks = match &panel.categories {
        Some(c) => c.len().max(1),
        None if panel.x_desc == EPOCH => ((x1 - x0).round() as usize + 1).clamp(2, 10),
        None => 8,
    };
    let category = |x: f64| -> String {
        let i = x.round();
        match &panel.categories {
            Some(c) if (x - i).abs() < 1e-6 && i >= 1.0 && (i as usize) <= c.len() => {
                c[i as usize - 1].clone()
            }
            Some(_) => String::new(),
            None => tick_label(x, (x1 - x0) / x_ticks as f64),
        }
    };
    let y_ticks = 10;
    // plotters picks round tick steps no finer than span / count; label them at that precision.
    let y_step = (y1 - y0) / f64::from(y_ticks);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .x_labels(x_ticks)
        .x_label_formatter(&|x| category(*x))
        .y_desc(&panel.y_desc)
        .y_labels(y_ticks as usize)
        .y_label_formatter(&|y| tick_label(*y, y_step))
        .light_line_style(WHITE)
        .draw()?;
    if panel.zero_line {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x0, 0.0), (x1, 0.0)],
            RGBColor(160, 160, 160),
        )))?;
    }
    for h in &panel.hlines {
        let style = h.color.stroke_width(1);
        if h.dashed {
            chart.draw_series(DashedLineSeries::new([(x0, h.y), (x1, h.y)], 6, 4, style))?;
        } else {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x0, h.y), (x1, h.y)],
                style,
            )))?;
        }
        let font = TextStyle::from(("sans-serif", 12).into_font())
            .color(&h.color)
            .pos(Pos::new(HPos::Right, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(h.label.clone(), (x1, h.y), font)))?;
    }
    for s in &panel.series {
        let style = s.color.stroke_width(2);
        let pts = s.points.iter().copied();
        if s.stroke != Stroke::Markers && !s.band.is_empty() {
            let upper = s.band.iter().map(|&(x, _, hi)| (x, hi));
            let lower = s.band.iter().rev().map(|&(x, lo, _)| (x, lo));
            chart.draw_series(std::iter::once(Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                s.color.mix(0.18).filled(),
            )))?;
        }
        match s.stroke {
            Stroke::Solid => {
                chart.draw_series(LineSeries::new(pts, style).point_size(2))?;
            }
            Stroke::Dashed => {
                chart.draw_series(DashedLineSeries::new(pts, 7, 4, style))?;
            }
            Stroke::Dotted => {
                chart.draw_series(DashedLineSeries::new(pts, 2, 3, style))?;
            }
            Stroke::Markers => {
                for &(x, lo, hi) in &s.band {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, lo), (x, hi)],
                        s.color.stroke_width(1),
                    )))?;
                }
                chart.draw_series(pts.map(|p| Circle::new(p, 4, s.color.filled())))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// A fresh, empty folder under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sclstm-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes a run directory with `epochs` epochs of metrics for ner, chunk and pos.
    fn write_run(dir: &Path, epochs: u32, offset: f64, model: Option<&str>) {
        std::fs::create_dir_all(dir).unwrap();
        let mut text = String::new();
        for e in 1..=epochs {
            let x = f64::from(e);
            for (task, metric, base) in [
                ("ner", "f1", 80.0),
                ("chunk", "f1", 90.0),
                ("pos", "accuracy", 95.0),
            ] {
                for split in ["dev", "test"] {
                    let score = base + x + offset;
                    writeln!(
                        text,
                        r#"{{"epoch": {e}, "task": "{task}", "split": "{split}", "metric": "{metric}", "score": {score}, "precision": 1.0, "train_loss": {loss}, "steps": 10, "tokens_per_s": 2.5, "elapsed_s": 1.0, "future_field": [1, 2]}}"#,
                        loss = 1.0 / x,
                    )
                    .unwrap();
                }
            }
            writeln!(
                text,
                r#"{{"epoch": {e}, "task": "average", "split": "dev", "score": {}}}"#,
                88.0 + x
            )
            .unwrap();
        }
        std::fs::write(dir.join(METRICS_FILE), text).unwrap();
        if let Some(model) = model {
            std::fs::write(
                dir.join(CONFIG_FILE),
                format!("model = \"{model}\"\nhidden = 300\n\n[lambda]\nner = 1.0\n"),
            )
            .unwrap();
        }
    }

    fn write_grads(dir: &Path, steps: u64) {
        let mut text = String::new();
        for s in 1..=steps {
            writeln!(
                text,
                r#"{{"step": {}, "epoch": 0, "shared_norm": {{"ner": 1.2, "chunk": 0.8, "pos": 0.5}}, "specific_norm": {{"ner": 0.3}}, "cosine": {{"ner/chunk": 0.12, "ner/pos": -0.05, "chunk/pos": {}}}, "update_ratio": 0.0012}}"#,
                s * 100,
                if s == 2 { "null".to_string() } else { format!("{}", 0.1 * s as f64) },
            )
            .unwrap();
        }
        std::fs::write(dir.join(GRADS_FILE), text).unwrap();
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Polylines drawn in a series colour: the data lines and their legend samples. Axes,
    /// ticks and the zero line are black or grey and so are not counted.
    fn series_polylines(svg: &str) -> usize {
        let colors: Vec<String> = PALETTE
            .iter()
            .map(|c| format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2))
            .collect();
        svg.split("<polyline")
            .skip(1)
            .filter(|el| {
                let tag = &el[..el.find('>').unwrap()];
                colors.iter().any(|c| tag.contains(c.as_str()))
            })
            .count()
    }

    /// Contents of the `<text>` elements, unescaped enough for the labels used here.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|el| {
                let start = el.find('>').unwrap() + 1;
                let end = el.find("</text>").unwrap();
                el[start..end].trim().to_string()
            })
            .collect()
    }

    #[test]
    fn two_runs_overlay_in_every_panel() {
        let root = temp_dir("overlay");
        let (a, b) = (root.join("run-a"), root.join("stl-run"));
        write_run(&a, 3, 0.0, Some("sc-lstm"));
        write_run(&b, 2, -1.0, None);
        write_grads(&a, 4);
        let out = root.join("figures");
        let report = plot_runs(&[a.clone(), b.clone()], &out).unwrap();
        assert_eq!(
            report.written,
            vec![
                out.join("dev_scores.svg"),
                out.join("train_loss.svg"),
                out.join("grad_conflict.svg")
            ]
        );
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);

        let dev = read(&out.join("dev_scores.svg"));
        assert!(dev.starts_with("<svg"), "{}", &dev[..40]);
        assert!(dev.trim_end().ends_with("</svg>"));
        let labels = texts(&dev);
        for needle in [
            "ner: dev F1",
            "chunk: dev F1",
            "pos: dev accuracy",
            "average over tasks: dev",
            "epoch",
        ] {
            assert!(
                labels.iter().any(|t| t == needle),
                "missing {needle:?} in {labels:?}"
            );
        }
        // One legend for the figure: the config's model for run-a, the directory name for the other.
        assert_eq!(
            labels.iter().filter(|t| *t == "sc-lstm").count(),
            1,
            "{labels:?}"
        );
        assert_eq!(
            labels.iter().filter(|t| *t == "stl-run").count(),
            1,
            "{labels:?}"
        );
        // Epoch ticks are whole numbers.
        assert!(
            labels.iter().any(|t| t == "3") && !labels.iter().any(|t| t == "1.5"),
            "{labels:?}"
        );
        // 4 panels × 2 runs data lines, plus 2 legend samples.
        assert_eq!(series_polylines(&dev), 4 * 2 + 2);
        // One marker per point: run-a has 3 epochs, the other 2, in 4 panels.
        assert_eq!(dev.matches("<circle").count(), 4 * (3 + 2));

        let loss = read(&out.join("train_loss.svg"));
        let labels = texts(&loss);
        for needle in [
            "ner: training loss",
            "chunk: training loss",
            "pos: training loss",
        ] {
            assert!(
                labels.iter().any(|t| t == needle),
                "missing {needle:?} in {labels:?}"
            );
        }
        assert!(
            !labels.iter().any(|t| t.starts_with("average")),
            "{labels:?}"
        );
        assert_eq!(series_polylines(&loss), 3 * 2 + 2);

        let grads = read(&out.join("grad_conflict.svg"));
        let labels = texts(&grads);
        for needle in [
            "ner/chunk",
            "ner/pos",
            "chunk/pos",
            "ner",
            "chunk",
            "pos",
            "optimizer step",
        ] {
            assert!(
                labels.iter().any(|t| t == needle),
                "missing {needle:?} in {labels:?}"
            );
        }
        // Only run-a logged gradients: 3 pairs + 3 tasks, each a line and a sample in its
        // panel's legend (the two panels have different series, so each has its own legend).
        assert_eq!(series_polylines(&grads), (3 + 3) * 2);
        // The null cosine of step 200 is left out: 4 + 4 + 3 cosine points, 3 × 4 norm points.
        assert_eq!(grads.matches("<circle").count(), 11 + 12);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn grad_figure_is_skipped_without_grads_and_out_defaults_apply() {
        let root = temp_dir("nograds");
        let run = root.join("run");
        write_run(&run, 1, 0.0, Some("lstm-s"));
        let report = plot_runs(std::slice::from_ref(&run), &run).unwrap();
        assert_eq!(report.written.len(), 2, "{report:?}");
        assert_eq!(report.skipped.len(), 1);
        assert!(
            report.skipped[0].starts_with("grad_conflict.svg skipped"),
            "{:?}",
            report.skipped
        );
        assert!(!run.join("grad_conflict.svg").exists());
        // A single epoch still gives one marker per panel.
        let dev = read(&run.join("dev_scores.svg"));
        assert_eq!(dev.matches("<circle").count(), 4);
        assert_eq!(series_polylines(&dev), 4 + 1);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn runs_with_the_same_model_get_distinct_labels() {
        let root = temp_dir("samemodel");
        let (a, b) = (root.join("seed1"), root.join("seed2"));
        write_run(&a, 2, 0.0, Some("sc-lstm"));
        write_run(&b, 2, 0.5, Some("sc-lstm"));
        plot_runs(&[a, b], &root).unwrap();
        let labels = texts(&read(&root.join("dev_scores.svg")));
        assert!(labels.iter().any(|t| t == "sc-lstm (seed1)"), "{labels:?}");
        assert!(labels.iter().any(|t| t == "sc-lstm (seed2)"), "{labels:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn panels_with_different_runs_get_their_own_legends() {
        let root = temp_dir("ownlegends");
        let (a, b) = (root.join("full"), root.join("ner-only"));
        write_run(&a, 2, 0.0, None);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join(METRICS_FILE),
            "{\"epoch\": 1, \"task\": \"ner\", \"split\": \"dev\", \"metric\": \"f1\", \"score\": 70.0}\n",
        )
        .unwrap();
        plot_runs(&[a, b], &root).unwrap();
        let dev = read(&root.join("dev_scores.svg"));
        let labels = texts(&dev);
        // Four panels, each listing its own runs: "full" everywhere, "ner-only" only for ner.
        assert_eq!(
            labels.iter().filter(|t| *t == "full").count(),
            4,
            "{labels:?}"
        );
        assert_eq!(
            labels.iter().filter(|t| *t == "ner-only").count(),
            1,
            "{labels:?}"
        );
        assert_eq!(series_polylines(&dev), 2 * (4 + 1));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn malformed_metrics_line_names_file_and_line() {
        let root = temp_dir("badline");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        let path = run.join(METRICS_FILE);
        let mut text = read(&path);
        text.push_str("\n{\"epoch\": 2, \"task\": \"ner\", \"split\": \"dev\", \"score\": 1.0\n");
        std::fs::write(&path, text).unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root).unwrap_err();
        // 7 lines from write_run, one blank line, then the truncated object on line 9.
        assert!(matches!(err, PlotError::BadLine { line: 9, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("{}:9:", path.display())), "{msg}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn metrics_line_missing_a_field_is_an_error() {
        let root = temp_dir("missingfield");
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join(METRICS_FILE),
            "{\"epoch\": 1, \"split\": \"dev\", \"score\": 1.0}\n",
        )
        .unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root).unwrap_err();
        assert!(matches!(err, PlotError::BadLine { line: 1, .. }), "{err:?}");
        assert!(err.to_string().contains("task"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn malformed_grads_line_names_file_and_line() {
        let root = temp_dir("badgrads");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        write_grads(&run, 2);
        let path = run.join(GRADS_FILE);
        let mut text = read(&path);
        text.push_str("{\"step\": \"three hundred\"}\n");
        std::fs::write(&path, text).unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root).unwrap_err();
        assert!(matches!(err, PlotError::BadLine { line: 3, .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!("{}:3:", path.display())),
            "{err}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_metrics_names_the_run_dir() {
        let root = temp_dir("nometrics");
        let good = root.join("good");
        write_run(&good, 1, 0.0, None);
        let empty = root.join("empty-run");
        std::fs::create_dir_all(&empty).unwrap();
        let err = plot_runs(&[good, empty.clone()], &root).unwrap_err();
        assert!(
            matches!(&err, PlotError::MissingMetrics { run } if *run == empty),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("empty-run") && msg.contains("metrics.jsonl"),
            "{msg}"
        );
        assert!(
            !root.join("dev_scores.svg").exists(),
            "nothing is drawn when a run is unreadable"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn invalid_config_is_an_error_naming_the_file() {
        let root = temp_dir("badconfig");
        let run = root.join("run");
        write_run(&run, 1, 0.0, None);
        std::fs::write(run.join(CONFIG_FILE), "model = \n").unwrap();
        let err = plot_runs(std::slice::from_ref(&run), &root).unwrap_err();
        assert!(matches!(err, PlotError::BadConfig { .. }), "{err:?}");
        assert!(err.to_string().contains("config.toml"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn test_split_lines_are_not_plotted() {
        let root = temp_dir("testsplit");
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join(METRICS_FILE),
            "{\"epoch\": 1, \"task\": \"ner\", \"split\": \"test\", \"metric\": \"f1\", \"score\": 50.0}\n",
        )
        .unwrap();
        let report = plot_runs(std::slice::from_ref(&run), &root).unwrap();
        assert!(report.written.is_empty(), "{report:?}");
        assert_eq!(report.skipped.len(), 3, "{report:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn clean_points_sorts_and_keeps_the_last_repeat() {
        let pts = clean_points(vec![(2.0, 5.0), (1.0, 1.0), (2.0, 7.0), (3.0, 0.5)]);
        assert_eq!(pts, vec![(1.0, 1.0), (2.0, 7.0), (3.0, 0.5)]);
    }

    #[test]
    fn tick_labels_are_short_and_never_negative_zero() {
        assert_eq!(tick_label(-1e-17, 0.046), "0");
        assert_eq!(tick_label(0.05, 0.046), "0.05");
        assert_eq!(tick_label(-0.15, 0.046), "-0.15");
        assert_eq!(tick_label(2.0, 0.69), "2");
        assert_eq!(tick_label(1.5, 0.4), "1.5");
        assert_eq!(tick_label(1200.0, 700.0), "1200");
        assert_eq!(tick_label(89.26, 0.2), "89.3");
    }

    #[test]
    fn panels_form_a_grid_of_at_most_three_columns_until_four() {
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(3), (1, 3));
        assert_eq!(grid(4), (2, 2));
        assert_eq!(grid(5), (2, 3));
    }

    #[test]
    fn padded_range_widens_a_single_value() {
        let (lo, hi) = padded_range([85.0].into_iter(), 1.0, 0.0);
        assert_eq!((lo, hi), (84.5, 85.5));
        let (lo, hi) = padded_range([0.0, 10.0].into_iter(), 1.0, 0.05);
        assert!(
            (lo + 0.5).abs() < 1e-12 && (hi - 10.5).abs() < 1e-12,
            "{lo} {hi}"
        );
    }
}
