//! Figures sized for a paper column, drawn by `sclstm plot` and `sclstm report`, and
//! their export to SVG, PNG and PDF.
//!
//! Every figure is drawn for one column of a two-column paper, [`COLUMN_INCHES`] wide, on a
//! canvas of [`WIDTH`] px, that is 300 px per inch. Sizes are given in points at that
//! print size (`pt`): text is 7–8.5 pt and lines 1 pt when the figure is scaled to the
//! column. Panels are about 4:3, two per row (one per row when the figure has a single
//! panel, or categorical x axes whose labels need the width). Every panel title starts at
//! the same offset from its panel's left edge. One legend serves the whole figure: under
//! the panels or, when the last row has an empty cell and the legend fits there, in that
//! cell.
//!
//! The callers follow one style rule: colour names a task (or a pair of tasks), line style
//! names a run (`RUN_STROKES`).
//!
//! The SVG comes from plotters. PNG (resvg) and PDF (svg2pdf) are rendered from that SVG by
//! usvg, whose font database holds the system fonts plus DejaVu Sans, embedded in the binary
//! (from the `dejavu` crate), which `sans-serif` maps to: a machine with no fonts installed
//! still gets text in its PNGs and PDFs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontDesc, FontFamily, FontStyle};
use resvg::{tiny_skia, usvg};

/// Width of one paper column in inches: the print width every figure is laid out for.
pub const COLUMN_INCHES: f64 = 3.3;
/// Canvas pixels per inch at that print width.
const DPI: f64 = 300.0;
/// Canvas width in pixels: [`COLUMN_INCHES`] at 300 px per inch.
pub const WIDTH: u32 = 990;

/// Panel titles.
const TITLE_PT: f64 = 8.5;
/// Axis descriptions.
const AXIS_PT: f64 = 7.5;
/// Tick labels and legend labels.
const LABEL_PT: f64 = 7.5;
/// Most ticks on a y axis: more labels than this crowd a panel's height.
const MAX_Y_TICKS: usize = 5;
/// The smallest text drawn (labels of reference lines, titles shrunk to fit).
const SMALL_PT: f64 = 7.0;
/// Width of data lines.
const LINE_PT: f64 = 1.0;
/// Opacity of raw lines under their smoothed ones.
const FAINT: f64 = 0.25;

/// Dark grey of the legend's run samples and of series that no task owns.
pub(crate) const NEUTRAL: RGBColor = RGBColor(60, 60, 60);

/// Line styles of runs: run `i` of a figure is drawn with `RUN_STROKES[i % 4]`.
pub(crate) const RUN_STROKES: [Stroke; 4] = [
    Stroke::Solid,
    Stroke::Dashed,
    Stroke::Dotted,
    Stroke::LongDash,
];

/// Colours of tasks and task pairs (Okabe–Ito, distinguishable with colour-blindness):
/// a figure's tasks take them in order, then its task pairs.
pub(crate) const KEY_COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(117, 112, 179),
];

/// Pixels of a length given in points at print size.
pub(crate) fn pt(points: f64) -> f64 {
    points * DPI / 72.0
}

/// [`pt`] rounded to whole pixels (plotters' coordinates are integers).
fn px(points: f64) -> i32 {
    pt(points).round() as i32
}

/// A sans-serif font of `points` at print size. plotters writes a font's size divided by
/// 1.24 into the SVG, so the size asked for is scaled up by as much.
fn font(points: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::SansSerif, pt(points) * 1.24, FontStyle::Normal)
}

/// Estimated width in pixels of `text` at `points`: DejaVu Sans averages about 0.6 em
/// per character (SVG leaves measuring text to the viewer, so layout works from this).
fn text_width(text: &str, points: f64) -> f64 {
    text.chars().count() as f64 * 0.6 * pt(points)
}

/// A file format figures are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FigureFormat {
    /// Scalable vector graphics, drawn by plotters.
    Svg,
    /// 990 px wide raster (300 dpi at 3.3 in), rendered from the SVG by resvg.
    Png,
    /// One-page PDF, 3.3 in wide with embedded fonts, converted from the SVG by svg2pdf.
    Pdf,
}

impl FigureFormat {
    /// The file extension of the format.
    pub fn extension(self) -> &'static str {
        match self {
            FigureFormat::Svg => "svg",
            FigureFormat::Png => "png",
            FigureFormat::Pdf => "pdf",
        }
    }
}

/// The formats written when none are asked for: SVG and PNG.
pub const DEFAULT_FORMATS: [FigureFormat; 2] = [FigureFormat::Svg, FigureFormat::Png];

/// What can go wrong while drawing or exporting a figure.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// plotters failed to lay out or draw a figure.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The figure being drawn (its files' path without the extension).
        path: PathBuf,
        /// What plotters reported.
        message: String,
    },
    /// The SVG could not be rendered to PNG or converted to PDF.
    #[error("rendering {path}: {message}")]
    Render {
        /// The file being written.
        path: PathBuf,
        /// What usvg, resvg or svg2pdf reported.
        message: String,
    },
    /// A figure file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
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
    /// Long dashes.
    LongDash,
    /// Markers only, each with a whisker over its band (lo, hi).
    Markers,
}

impl Stroke {
    /// `(dash, gap)` in pixels of a broken line; `None` for a solid line or markers.
    fn dashes(self) -> Option<(i32, i32)> {
        match self {
            Stroke::Dashed => Some((px(5.0), px(3.0))),
            Stroke::Dotted => Some((px(1.0), px(2.5))),
            Stroke::LongDash => Some((px(11.0), px(3.0))),
            Stroke::Solid | Stroke::Markers => None,
        }
    }
}

/// One line of one panel.
#[derive(Debug)]
pub(crate) struct Series {
    /// Legend label (figures whose legend is built from their series).
    pub(crate) label: String,
    pub(crate) color: RGBColor,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) stroke: Stroke,
    /// `(x, lo, hi)`: a shaded band around a line, or whiskers of markers.
    pub(crate) band: Vec<(f64, f64, f64)>,
    /// Unsmoothed values drawn as a faint solid line under the series.
    pub(crate) raw: Vec<(f64, f64)>,
    /// A dot at every point (values per epoch rather than per step).
    pub(crate) dots: bool,
    /// A ring around this point (the best epoch).
    pub(crate) ring: Option<(f64, f64)>,
}

impl Series {
    /// A solid line with no band, raw line, dots or ring.
    pub(crate) fn line(label: String, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Series {
            label,
            color,
            points,
            stroke: Stroke::Solid,
            band: Vec::new(),
            raw: Vec::new(),
            dots: false,
            ring: None,
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
    /// Whole-number x values (epochs): at most one tick per unit.
    pub(crate) integer_x: bool,
    /// Logarithmic y axis; values ≤ 0 are left out.
    pub(crate) log_y: bool,
}

impl Panel {
    /// A panel of plain lines on linear axes.
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
            integer_x: false,
            log_y: false,
        }
    }
}

/// The sample drawn before a legend label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Key {
    /// A short line in a stroke.
    Line(Stroke),
    /// A short faint line (raw values under a smoothed line).
    Faint,
    /// A ring (the best-epoch marker).
    Ring,
}

/// One entry of a figure's legend.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LegendEntry {
    pub(crate) label: String,
    pub(crate) color: RGBColor,
    pub(crate) key: Key,
}

/// Panels and the legend that explains them.
#[derive(Debug)]
pub(crate) struct Figure {
    pub(crate) panels: Vec<Panel>,
    pub(crate) legend: Vec<LegendEntry>,
}

impl Figure {
    /// A figure whose legend lists its series' labels with their colours and strokes, each
    /// once.
    pub(crate) fn legend_from_series(panels: Vec<Panel>) -> Self {
        let mut legend: Vec<LegendEntry> = Vec::new();
        for s in panels.iter().flat_map(|p| &p.series) {
            let entry = LegendEntry {
                label: s.label.clone(),
                color: s.color,
                key: Key::Line(s.stroke),
            };
            if !legend.contains(&entry) {
                legend.push(entry);
            }
        }
        Figure { panels, legend }
    }
}

/// Draws `figure` and writes it as `<stem>.<ext>` for every format in `formats`, in that
/// order. Returns the files written.
pub(crate) fn render(
    stem: &Path,
    figure: &Figure,
    formats: &[FigureFormat],
) -> Result<Vec<PathBuf>, FigureError> {
    let path_of = |format: FigureFormat| {
        let mut name = OsString::from(stem.as_os_str());
        name.push(".");
        name.push(format.extension());
        PathBuf::from(name)
    };
    let svg = draw_svg(figure).map_err(|message| FigureError::Draw {
        path: stem.to_path_buf(),
        message,
    })?;
    let mut tree = None;
    let mut written = Vec::new();
    for &format in formats {
        let path = path_of(format);
        let render_error = |message: String| FigureError::Render {
            path: path.clone(),
            message,
        };
        let bytes = match format {
            FigureFormat::Svg => svg.clone().into_bytes(),
            FigureFormat::Png | FigureFormat::Pdf => {
                if tree.is_none() {
                    tree = Some(parse_svg(&svg).map_err(render_error)?);
                }
                let tree = tree.as_ref().expect("internal: the tree was just parsed");
                if format == FigureFormat::Png {
                    png(tree).map_err(render_error)?
                } else {
                    pdf(tree).map_err(render_error)?
                }
            }
        };
        std::fs::write(&path, bytes).map_err(|source| FigureError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Family name of the embedded font.
const EMBEDDED_FAMILY: &str = "DejaVu Sans";

/// The fonts PNG and PDF rendering use: the system's, plus the embedded DejaVu Sans that
/// `sans-serif` (plotters' only family) maps to. Loaded once per process.
fn font_database() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            add_embedded_font(&mut db);
            Arc::new(db)
        })
        .clone()
}

/// Adds DejaVu Sans to `db` and makes it the `sans-serif` family.
fn add_embedded_font(db: &mut usvg::fontdb::Database) {
    db.load_font_data(dejavu::sans::regular().to_vec());
    db.set_sans_serif_family(EMBEDDED_FAMILY);
}

/// Parses an SVG with the fonts of [`font_database`].
fn parse_svg(svg: &str) -> Result<usvg::Tree, String> {
    parse_svg_with(svg, font_database())
}

/// Parses an SVG with the fonts of `fonts`, whose `sans-serif` is also the default family.
fn parse_svg_with(svg: &str, fonts: Arc<usvg::fontdb::Database>) -> Result<usvg::Tree, String> {
    let options = usvg::Options {
        font_family: EMBEDDED_FAMILY.to_string(),
        fontdb: fonts,
        ..usvg::Options::default()
    };
    usvg::Tree::from_str(svg, &options).map_err(|e| e.to_string())
}

/// The tree as a PNG of its own pixel size on white.
fn png(tree: &usvg::Tree) -> Result<Vec<u8>, String> {
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("cannot allocate {}×{} pixels", size.width(), size.height()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(tree, tiny_skia::Transform::identity(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

/// The tree as a one-page PDF whose page is the figure's print size.
fn pdf(tree: &usvg::Tree) -> Result<Vec<u8>, String> {
    svg2pdf::to_pdf(
        tree,
        svg2pdf::ConversionOptions::default(),
        svg2pdf::PageOptions { dpi: DPI as f32 },
    )
    .map_err(|e| e.to_string())
}

/// Height of a panel's title strip.
fn title_height() -> i32 {
    px(TITLE_PT * 1.6)
}
/// Room left of the plotting area for tick labels and the y description.
fn y_label_area() -> i32 {
    px(30.0)
}
/// Room under the plotting area for tick labels and the x description.
fn x_label_area() -> i32 {
    px(19.5)
}
/// Offset of a panel title from its panel's left edge.
fn title_inset() -> i32 {
    px(3.0)
}

/// Rows and columns of the panel grid.
fn grid(panels: &[Panel]) -> (usize, usize) {
    let n = panels.len().max(1);
    let cols = if n == 1 || panels.iter().any(|p| p.categories.is_some()) {
        1
    } else {
        2
    };
    (n.div_ceil(cols), cols)
}

/// Pixel size of one grid cell for `cols` columns: 4:3, or 16:9 for a full-width panel
/// among several (a 4:3 panel the width of the column would make the figure too tall).
fn cell_size(cols: usize, panels: usize) -> (u32, u32) {
    let w = WIDTH / u32::try_from(cols).expect("internal: one or two columns");
    let h = if cols == 1 && panels > 1 {
        w * 9 / 16
    } else {
        w * 3 / 4
    };
    (w, h)
}

/// Where the legend's entries go within a given width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LegendLayout {
    cols: usize,
    col_w: i32,
    row_h: i32,
    height: i32,
}

/// Length of a legend sample.
fn sample_width() -> i32 {
    px(14.0)
}
/// Space around the legend.
fn legend_pad() -> i32 {
    px(2.0)
}

/// Lays the legend out in as many equal columns as fit in `width`.
fn legend_layout(entries: &[LegendEntry], width: i32) -> LegendLayout {
    let gap = px(3.0);
    let longest = entries
        .iter()
        .map(|e| text_width(&e.label, LABEL_PT))
        .fold(0.0, f64::max);
    let col_w = sample_width() + gap + longest.ceil() as i32 + 2 * gap;
    let fit = usize::try_from(((width - 2 * legend_pad()) / col_w.max(1)).max(1))
        .expect("internal: at least one column");
    let cols = fit.min(entries.len()).max(1);
    let rows = entries.len().div_ceil(cols);
    let row_h = px(LABEL_PT * 1.6);
    let height = if entries.is_empty() {
        0
    } else {
        i32::try_from(rows).expect("internal: few legend rows") * row_h + 2 * legend_pad()
    };
    LegendLayout {
        cols,
        col_w,
        row_h,
        height,
    }
}

/// Error type of plotters' drawing calls, boxed so one `?` covers all of them.
type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A region of the SVG canvas.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The SVG text of `figure`.
fn draw_svg(figure: &Figure) -> Result<String, String> {
    let (rows, cols) = grid(&figure.panels);
    let (cell_w, cell_h) = cell_size(cols, figure.panels.len());
    let rows_u = u32::try_from(rows).expect("internal: few rows");
    let grid_h = rows_u * cell_h;
    let cell_w_i = i32::try_from(cell_w).expect("internal: cell width fits i32");
    let cell_h_i = i32::try_from(cell_h).expect("internal: cell height fits i32");
    // The last row's empty cell, when there is one and the legend fits in it.
    let in_cell = rows * cols > figure.panels.len()
        && legend_layout(&figure.legend, cell_w_i).height <= cell_h_i;
    let below = if in_cell {
        0
    } else {
        legend_layout(&figure.legend, WIDTH as i32).height
    };
    let height = grid_h + u32::try_from(below).expect("internal: legend height ≥ 0");

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let drawn = (|| -> DrawResult {
            root.fill(&WHITE)?;
            let (grid_area, legend_area) =
                root.split_vertically(i32::try_from(grid_h).expect("internal: height fits i32"));
            let cells = grid_area.split_evenly((rows, cols));
            for (area, panel) in cells.iter().zip(&figure.panels) {
                draw_panel(area, panel)?;
            }
            if in_cell {
                let cell = cells.last().expect("internal: the grid has cells");
                let layout = legend_layout(&figure.legend, cell_w_i);
                // Centre the legend vertically in the cell.
                let top = ((cell_h_i - layout.height) / 2).max(0);
                draw_legend(cell, &figure.legend, layout, top)?;
            } else {
                let layout = legend_layout(&figure.legend, WIDTH as i32);
                draw_legend(&legend_area, &figure.legend, layout, 0)?;
            }
            root.present()?;
            Ok(())
        })();
        drawn.map_err(|e| e.to_string())?;
    }
    if !svg.ends_with('\n') {
        svg.push('\n');
    }
    Ok(svg)
}

/// Draws a short broken or solid line from `from` to `to` in `stroke`.
fn draw_stroke_sample(
    area: &Area<'_>,
    from: (i32, i32),
    to: (i32, i32),
    stroke: Stroke,
    style: ShapeStyle,
) -> DrawResult {
    match stroke.dashes() {
        Some((dash, gap)) => {
            area.draw(&DashedPathElement::new(vec![from, to], dash, gap, style))?
        }
        None => area.draw(&PathElement::new(vec![from, to], style))?,
    }
    Ok(())
}

/// The legend's entries row by row in `layout`'s columns, starting `top` px down `area`.
fn draw_legend(
    area: &Area<'_>,
    entries: &[LegendEntry],
    layout: LegendLayout,
    top: i32,
) -> DrawResult {
    let label_font = TextStyle::from(font(LABEL_PT)).pos(Pos::new(HPos::Left, VPos::Center));
    let line = px(LINE_PT);
    for (i, entry) in entries.iter().enumerate() {
        let (row, col) = (i / layout.cols, i % layout.cols);
        let x = legend_pad() + i32::try_from(col).expect("internal: few columns") * layout.col_w;
        let y = top
            + legend_pad()
            + i32::try_from(row).expect("internal: few rows") * layout.row_h
            + layout.row_h / 2;
        let (x0, x1) = (x, x + sample_width());
        match entry.key {
            Key::Line(Stroke::Markers) => {
                let mid = (x0 + x1) / 2;
                area.draw(&PathElement::new(
                    vec![(mid, y - px(3.0)), (mid, y + px(3.0))],
                    entry.color.stroke_width(px(0.5) as u32),
                ))?;
                area.draw(&Circle::new((mid, y), px(1.8), entry.color.filled()))?;
            }
            Key::Line(stroke) => draw_stroke_sample(
                area,
                (x0, y),
                (x1, y),
                stroke,
                entry.color.stroke_width(line as u32),
            )?,
            Key::Faint => area.draw(&PathElement::new(
                vec![(x0, y), (x1, y)],
                entry.color.mix(FAINT).stroke_width(px(0.5) as u32),
            ))?,
            Key::Ring => area.draw(&Circle::new(
                ((x0 + x1) / 2, y),
                px(2.6),
                entry.color.stroke_width(px(0.7) as u32),
            ))?,
        }
        area.draw(&Text::new(
            entry.label.as_str(),
            (x1 + px(3.0), y),
            label_font.clone(),
        ))?;
    }
    Ok(())
}

/// Tick label with at most as many decimals as the tick spacing needs, without trailing
/// zeros, `0` rather than `-0` (rounding noise on a tick at zero), and thousands as `k`
/// when ticks are at least a thousand apart (step counts).
fn tick_label(value: f64, step: f64) -> String {
    if step >= 1000.0 && value.abs() >= 1000.0 {
        return format!("{}k", tick_label(value / 1000.0, step / 1000.0));
    }
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

/// A linear axis with the ticks [`linear_ticks`] or [`log_ticks`] chose. (plotters'
/// `with_key_points` does the same but cannot be given a label formatter.)
struct TickedAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold (labelled) ticks: the light mesh is not drawn.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Ticks of a linear axis over `lo..=hi`: the multiples of the finest step of 1, 2 or
/// 5 × 10^k that gives at most `max` of them. Returns the ticks and the step.
fn linear_ticks(lo: f64, hi: f64, max: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf((span / max as f64).log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| (hi / step).floor() - (lo / step).ceil() < max as f64)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// Ticks of a log axis over the exponents `lo..=hi` (log10 of the values), as exponents.
/// The candidates, coarsest first: the powers of ten; 1, 3 × 10^k; 1, 2, 5 × 10^k; the
/// linear ticks of the values up to where they crowd (for ranges under a decade); every
/// m × 10^k (m = 1..9).
/// Of those with at most [`MAX_Y_TICKS`] ticks, no two closer than a sixth of the axis
/// (a label's height and a gap), the one with the most ticks wins.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let at = |mantissas: &[f64]| -> Vec<f64> {
        let (first, last) = (lo.floor() as i32, hi.ceil() as i32);
        (first..=last)
            .flat_map(|k| mantissas.iter().map(move |m| (m * 10f64.powi(k)).log10()))
            .filter(|e| (lo..=hi).contains(e))
            .collect()
    };
    let min_gap = (hi - lo) / 6.0;
    // Linear ticks crowd towards the top of a log axis: keep them up to where they do.
    let mut linear: Vec<f64> = Vec::new();
    for v in linear_ticks(10f64.powf(lo), 10f64.powf(hi), MAX_Y_TICKS).0 {
        if v <= 0.0 {
            continue;
        }
        if linear
            .last()
            .is_some_and(|&last| v.log10() - last < min_gap)
        {
            break;
        }
        linear.push(v.log10());
    }
    let candidates = [
        at(&[1.0]),
        at(&[1.0, 3.0]),
        at(&[1.0, 2.0, 5.0]),
        linear,
        at(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
    ];
    let mut best: Vec<f64> = Vec::new();
    for ticks in candidates {
        let spaced = ticks.windows(2).all(|w| w[1] - w[0] >= min_gap);
        if spaced && ticks.len() <= MAX_Y_TICKS && ticks.len() > best.len() {
            best = ticks;
        }
    }
    best
}

/// Label of a tick at `exponent` on a log axis: the value 10^exponent in at most two
/// significant digits, written out from 0.01 to 10 000, in scientific notation outside.
fn log_tick_label(exponent: f64) -> String {
    // The nudge keeps 10^-3, computed as 0.000999…, in its own decade.
    let k = (exponent + 1e-9).floor();
    let mantissa = (10f64.powf(exponent - k) * 10.0).round() / 10.0;
    let value = mantissa * 10f64.powf(k);
    if (0.01..10_000.0).contains(&value) {
        tick_label(value, 10f64.powf(k - 1.0))
    } else {
        format!("{}e{k}", tick_label(mantissa, 0.1))
    }
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

/// A panel's title, left-aligned in the strip above it, shrunk (down to 7 pt) when it
/// would not fit the panel's width.
fn draw_title(area: &Area<'_>, title: &str) -> DrawResult {
    let (w, _) = area.dim_in_pixel();
    let room = f64::from(w) - 2.0 * f64::from(title_inset());
    let natural = text_width(title, TITLE_PT);
    let points = if natural > room {
        (TITLE_PT * room / natural).max(SMALL_PT)
    } else {
        TITLE_PT
    };
    let style = TextStyle::from(font(points)).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new(
        title,
        (title_inset(), title_height() / 2 + px(1.0)),
        style,
    ))?;
    Ok(())
}

/// One panel: its title strip, axes and ticks, reference lines, then raw lines under the
/// series, each with its dots and best-epoch ring.
fn draw_panel(area: &Area<'_>, panel: &Panel) -> DrawResult {
    let (title_area, body) = area.split_vertically(title_height());
    draw_title(&title_area, &panel.title)?;

    // A log axis plots log10 of the values; values ≤ 0 have no place on it.
    let fy = |y: f64| if panel.log_y { y.log10() } else { y };
    let keep = |y: f64| !panel.log_y || y > 0.0;
    let on_axis = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
        pts.iter()
            .filter(|p| keep(p.1))
            .map(|&(x, y)| (x, fy(y)))
            .collect()
    };

    let xs = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().chain(&s.raw))
            .map(|p| p.0)
    };
    let (x0, x1) = match &panel.categories {
        Some(c) => (0.5, c.len() as f64 + 0.5),
        None if panel.integer_x => padded_range(xs(), 1.0, 0.03),
        None => padded_range(xs(), 1.0, 0.02),
    };
    let ys: Vec<f64> = panel
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .chain(&s.raw)
                .map(|p| p.1)
                .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
        })
        .chain(panel.hlines.iter().map(|h| h.y))
        .chain((panel.zero_line && !panel.log_y).then_some(0.0))
        .filter(|&y| keep(y))
        .map(fy)
        .collect();
    let (y0, y1) = if panel.log_y {
        padded_range(ys.into_iter(), 0.2, 0.05)
    } else {
        padded_range(ys.into_iter(), 1e-3, 0.05)
    };

    let x_ticks = match &panel.categories {
        Some(c) => c.len().max(1),
        // Epochs are whole numbers: at most one tick per unit so that ticks land on them.
        None if panel.integer_x => ((x1 - x0).round() as usize + 1).clamp(2, 6),
        None => 5,
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
    let (y_ticks, y_step) = if panel.log_y {
        (log_ticks(y0, y1), 1.0)
    } else {
        linear_ticks(y0, y1, MAX_Y_TICKS)
    };
    let y_label = |y: f64| {
        if panel.log_y {
            log_tick_label(y)
        } else {
            tick_label(y, y_step)
        }
    };
    let mut chart = ChartBuilder::on(&body)
        .margin_right(px(6.0))
        .margin_top(px(2.0))
        .x_label_area_size(x_label_area())
        .y_label_area_size(y_label_area())
        .build_cartesian_2d(
            x0..x1,
            TickedAxis {
                inner: (y0..y1).into(),
                ticks: y_ticks,
            },
        )?;
    let thin = px(0.5) as u32;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .x_labels(x_ticks)
        .x_label_formatter(&|x| category(*x))
        .y_desc(&panel.y_desc)
        .y_label_formatter(&|y| y_label(*y))
        .axis_desc_style(font(AXIS_PT))
        .label_style(font(LABEL_PT))
        .axis_style(BLACK.stroke_width(thin))
        .bold_line_style(BLACK.mix(0.08).stroke_width(thin))
        .light_line_style(TRANSPARENT)
        .set_all_tick_mark_size(px(2.0))
        .draw()?;
    if panel.zero_line && !panel.log_y {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x0, 0.0), (x1, 0.0)],
            RGBColor(150, 150, 150).stroke_width(thin),
        )))?;
    }
    let line = px(LINE_PT) as u32;
    for h in &panel.hlines {
        let y = fy(h.y);
        let style = h.color.stroke_width(px(0.75) as u32);
        if h.dashed {
            chart.draw_series(DashedLineSeries::new(
                [(x0, y), (x1, y)],
                px(5.0),
                px(3.0),
                style,
            ))?;
        } else {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x0, y), (x1, y)],
                style,
            )))?;
        }
        let font = TextStyle::from(font(SMALL_PT))
            .color(&h.color)
            .pos(Pos::new(HPos::Right, VPos::Bottom));
        chart.draw_series(std::iter::once(Text::new(h.label.clone(), (x1, y), font)))?;
    }
    for s in &panel.series {
        if !s.raw.is_empty() {
            chart.draw_series(LineSeries::new(
                on_axis(&s.raw),
                s.color.mix(FAINT).stroke_width(px(0.5) as u32),
            ))?;
        }
    }
    for s in &panel.series {
        let style = s.color.stroke_width(line);
        let pts = on_axis(&s.points);
        if s.stroke != Stroke::Markers && !s.band.is_empty() {
            let upper = s.band.iter().map(|&(x, _, hi)| (x, fy(hi)));
            let lower = s.band.iter().rev().map(|&(x, lo, _)| (x, fy(lo)));
            chart.draw_series(std::iter::once(Polygon::new(
                upper.chain(lower).collect::<Vec<_>>(),
                s.color.mix(0.18).filled(),
            )))?;
        }
        match (s.stroke, s.stroke.dashes()) {
            (Stroke::Markers, _) => {
                for &(x, lo, hi) in &s.band {
                    chart.draw_series(std::iter::once(PathElement::new(
                        vec![(x, fy(lo)), (x, fy(hi))],
                        s.color.stroke_width(px(0.5) as u32),
                    )))?;
                }
                chart.draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, px(1.8), s.color.filled())),
                )?;
            }
            (_, Some((dash, gap))) => {
                chart.draw_series(DashedLineSeries::new(pts.iter().copied(), dash, gap, style))?;
            }
            (_, None) => {
                chart.draw_series(LineSeries::new(pts.iter().copied(), style))?;
            }
        }
        if s.dots && s.stroke != Stroke::Markers {
            chart.draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, px(1.3), s.color.filled())),
            )?;
        }
        if let Some((x, y)) = s.ring.filter(|r| keep(r.1)) {
            chart.draw_series(std::iter::once(Circle::new(
                (x, fy(y)),
                px(2.6),
                s.color.stroke_width(px(0.7) as u32),
            )))?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values of attribute `name` of every element `tag` in `svg`, in document order.
    pub(crate) fn attrs(svg: &str, tag: &str, name: &str) -> Vec<String> {
        let needle = format!(" {name}=\"");
        svg.split(&format!("<{tag}"))
            .skip(1)
            .filter_map(|el| {
                let head = &el[..el.find('>')?];
                let start = head.find(&needle)? + needle.len();
                let len = head[start..].find('"')?;
                Some(head[start..start + len].to_string())
            })
            .collect()
    }

    /// Font size in points of every text of `svg` printed [`COLUMN_INCHES`] wide.
    pub(crate) fn printed_font_points(svg: &str) -> Vec<f64> {
        let width: f64 = attrs(svg, "svg", "width")[0].parse().unwrap();
        attrs(svg, "text", "font-size")
            .iter()
            .map(|s| s.parse::<f64>().unwrap() * COLUMN_INCHES * 72.0 / width)
            .collect()
    }

    fn panel(title: &str, series: Vec<Series>) -> Panel {
        Panel::lines(title.into(), "epoch", "score (%)".into(), series)
    }

    fn series(label: &str, stroke: Stroke, points: Vec<(f64, f64)>) -> Series {
        Series {
            stroke,
            ..Series::line(label.into(), KEY_COLORS[0], points)
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sclstm-figure-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Share of pixels of `img` in the box (x0..x1, y0..y1) darker than light grey.
    pub(crate) fn dark_share(img: &tiny_skia::Pixmap, x: (u32, u32), y: (u32, u32)) -> f64 {
        let mut dark = 0;
        for yy in y.0..y.1 {
            for xx in x.0..x.1 {
                let p = img.pixel(xx, yy).unwrap();
                if u32::from(p.red()) + u32::from(p.green()) + u32::from(p.blue()) < 3 * 160 {
                    dark += 1;
                }
            }
        }
        f64::from(dark) / f64::from((x.1 - x.0) * (y.1 - y.0))
    }

    #[test]
    fn svg_png_and_pdf_are_written_with_the_column_width() {
        let dir = temp_dir("formats");
        let fig = Figure::legend_from_series(vec![panel(
            "ner: dev F1",
            vec![series("a", Stroke::Solid, vec![(1.0, 80.0), (2.0, 85.0)])],
        )]);
        let written = render(
            &dir.join("fig.v2"),
            &fig,
            &[FigureFormat::Pdf, FigureFormat::Svg, FigureFormat::Png],
        )
        .unwrap();
        assert_eq!(
            written,
            [
                dir.join("fig.v2.pdf"),
                dir.join("fig.v2.svg"),
                dir.join("fig.v2.png")
            ]
        );
        let svg = std::fs::read_to_string(&written[1]).unwrap();
        assert_eq!(attrs(&svg, "svg", "width"), ["990"]);
        let height: u32 = attrs(&svg, "svg", "height")[0].parse().unwrap();
        // One 4:3 panel plus a one-row legend under it.
        assert!((742..900).contains(&height), "{height}");

        let img = tiny_skia::Pixmap::load_png(&written[2]).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, height));
        // The title is drawn at the top left, and nothing else is drawn right of it.
        let strip = (5, u32::try_from(title_height()).unwrap() - 5);
        assert!(dark_share(&img, (10, 250), strip) > 0.02);
        assert_eq!(dark_share(&img, (600, 980), strip), 0.0);

        let pdf = std::fs::read(&written[0]).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        // 990 px at 300 dpi is a 3.3 in (237.6 pt) wide page, with its font embedded.
        let media_box = text.split("/MediaBox [0 0 ").nth(1).unwrap();
        let page_width: f64 = media_box.split(' ').next().unwrap().parse().unwrap();
        assert!((page_width - 237.6).abs() < 0.01, "{page_width}");
        assert!(text.contains("DejaVuSans"), "font not embedded");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_embedded_font_alone_renders_text() {
        let mut db = usvg::fontdb::Database::new();
        add_embedded_font(&mut db);
        let svg = r#"<svg width="200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="10" y="45" font-family="sans-serif" font-size="40">Text</text></svg>"#;
        let tree = parse_svg_with(svg, Arc::new(db)).unwrap();
        let png_bytes = png(&tree).unwrap();
        let img = tiny_skia::Pixmap::decode_png(&png_bytes).unwrap();
        assert!(dark_share(&img, (0, 200), (0, 60)) > 0.05);
        // Without any font the same text draws nothing: the check above can fail.
        let bare = parse_svg_with(svg, Arc::new(usvg::fontdb::Database::new())).unwrap();
        let img = tiny_skia::Pixmap::decode_png(&png(&bare).unwrap()).unwrap();
        assert_eq!(dark_share(&img, (0, 200), (0, 60)), 0.0);
    }

    #[test]
    fn text_is_at_least_seven_points_at_column_width() {
        let long = "a title much longer than any panel of the figure could hold";
        let panels = (0..3)
            .map(|i| {
                panel(
                    if i == 0 { long } else { "chunk" },
                    vec![series("run", Stroke::Dashed, vec![(1.0, 1.0), (9.0, 2.0)])],
                )
            })
            .collect();
        let svg = draw_svg(&Figure::legend_from_series(panels)).unwrap();
        let sizes = printed_font_points(&svg);
        assert!(sizes.len() > 20, "{sizes:?}");
        let min = sizes.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(min >= 7.0 - 1e-9, "{sizes:?}");
    }

    #[test]
    fn titles_start_at_the_same_offset_in_every_panel() {
        let panels = ["ner: dev F1", "a", "pos: dev accuracy"]
            .iter()
            .map(|t| panel(t, vec![series("r", Stroke::Solid, vec![(1.0, 1.0)])]))
            .collect();
        let svg = draw_svg(&Figure::legend_from_series(panels)).unwrap();
        let xs = attrs(&svg, "text", "x");
        let anchors = attrs(&svg, "text", "text-anchor");
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .map(|el| el[el.find('>').unwrap() + 1..el.find("</text>").unwrap()].trim())
            .collect();
        let at = |t: &str| texts.iter().position(|x| *x == t).unwrap();
        let (a, b, c) = (at("ner: dev F1"), at("a"), at("pos: dev accuracy"));
        let inset = title_inset();
        let half = i32::try_from(WIDTH / 2).unwrap();
        assert_eq!(xs[a], inset.to_string());
        assert_eq!(xs[b], (half + inset).to_string());
        assert_eq!(xs[c], inset.to_string());
        assert!([a, b, c].iter().all(|&i| anchors[i] == "start"));
    }

    #[test]
    fn legend_goes_into_the_empty_cell_when_it_fits() {
        let three: Vec<Panel> = (0..3)
            .map(|_| panel("t", vec![series("run", Stroke::Solid, vec![(1.0, 1.0)])]))
            .collect();
        let svg = draw_svg(&Figure::legend_from_series(three)).unwrap();
        let (_, cell_h) = cell_size(2, 3);
        assert_eq!(attrs(&svg, "svg", "height"), [(2 * cell_h).to_string()]);
        let four: Vec<Panel> = (0..4)
            .map(|_| panel("t", vec![series("run", Stroke::Solid, vec![(1.0, 1.0)])]))
            .collect();
        let svg = draw_svg(&Figure::legend_from_series(four)).unwrap();
        let height: u32 = attrs(&svg, "svg", "height")[0].parse().unwrap();
        assert!(height > 2 * cell_h, "the legend goes under a full grid");
    }

    #[test]
    fn grid_has_two_columns_except_for_one_panel_or_categories() {
        let n = |k: usize| -> Vec<Panel> { (0..k).map(|_| panel("t", Vec::new())).collect() };
        assert_eq!(grid(&n(1)), (1, 1));
        assert_eq!(grid(&n(3)), (2, 2));
        assert_eq!(grid(&n(4)), (2, 2));
        assert_eq!(grid(&n(5)), (3, 2));
        let mut cat = n(2);
        cat[0].categories = Some(vec!["a".into()]);
        assert_eq!(grid(&cat), (2, 1));
        assert_eq!(cell_size(2, 4), (495, 371));
        assert_eq!(cell_size(1, 1), (990, 742));
    }

    #[test]
    fn legend_columns_fit_the_width() {
        let entries: Vec<LegendEntry> = ["sc-lstm", "lstm-s", "lstm-d", "best dev average"]
            .iter()
            .map(|l| LegendEntry {
                label: l.to_string(),
                color: NEUTRAL,
                key: Key::Line(Stroke::Solid),
            })
            .collect();
        let wide = legend_layout(&entries, 990);
        assert!(wide.cols >= 2 && i32::try_from(wide.cols).unwrap() * wide.col_w <= 990);
        let narrow = legend_layout(&entries, 300);
        assert_eq!(narrow.cols, 1);
        assert_eq!(narrow.height, 4 * narrow.row_h + 2 * legend_pad());
        assert_eq!(legend_layout(&[], 990).height, 0);
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
        assert_eq!(tick_label(12000.0, 2000.0), "12k");
        assert_eq!(tick_label(15000.0, 5000.0), "15k");
        assert_eq!(tick_label(1500.0, 500.0), "1500");
        assert_eq!(tick_label(0.0, 2000.0), "0");
    }

    #[test]
    fn log_ticks_name_the_value() {
        assert_eq!(log_tick_label(-3.0), "1e-3");
        assert_eq!(log_tick_label((6e-4f64).log10()), "6e-4");
        assert_eq!(log_tick_label(-1.0), "0.1");
        assert_eq!(log_tick_label((0.2f64).log10()), "0.2");
        assert_eq!(log_tick_label(2.0), "100");
        assert_eq!(log_tick_label((50_000f64).log10()), "5e4");
        assert_eq!(log_tick_label((2.5e-4f64).log10()), "2.5e-4");
        assert_eq!(log_tick_label((2.5f64).log10()), "2.5");
    }

    #[test]
    fn log_ticks_are_the_most_that_keep_labels_apart() {
        let values = |lo: f64, hi: f64| -> Vec<String> {
            log_ticks(lo.log10(), hi.log10())
                .into_iter()
                .map(log_tick_label)
                .collect()
        };
        // Three decades: the powers of ten.
        assert_eq!(values(0.5, 2000.0), ["1", "10", "100", "1000"]);
        // Two decades: 1, 3 × 10^k.
        assert_eq!(values(0.5, 80.0), ["1", "3", "10", "30"]);
        // Under a decade the linear ticks give the most, up to where they would crowd
        // (1.2e-3 is too close to 1e-3); every m × 10^k would give seven.
        assert_eq!(values(3.9e-4, 1.25e-3), ["4e-4", "6e-4", "8e-4", "1e-3"]);
        // Linear ticks 6, 8, 10, 12 rather than 6, 7, 8, 9, 10, whose 9 and 10 would touch.
        assert_eq!(values(5.8, 15.0), ["6", "8", "10", "12"]);
        // A wider span gives the linear ticks a coarser step: two ticks, as 1, 2, 5 give.
        assert_eq!(values(3.7e-4, 1.42e-3), ["5e-4", "1e-3"]);
        assert_eq!(values(1.6, 3.7), ["2", "2.5", "3", "3.5"]);
        assert_eq!(values(2.9e-3, 6.5e-3), ["3e-3", "4e-3", "5e-3", "6e-3"]);
    }

    #[test]
    fn linear_ticks_step_by_one_two_or_five() {
        let (ticks, step) = linear_ticks(82.1, 90.9, 6);
        assert_eq!((ticks, step), (vec![84.0, 86.0, 88.0, 90.0], 2.0));
        let (ticks, step) = linear_ticks(-0.13, 0.52, 6);
        assert_eq!(step, 0.2);
        assert_eq!(
            ticks
                .iter()
                .map(|&t| tick_label(t, step))
                .collect::<Vec<_>>(),
            ["0", "0.2", "0.4"]
        );
        let (ticks, _) = linear_ticks(0.0, 1.0, 6);
        assert_eq!(ticks.len(), 6);
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
