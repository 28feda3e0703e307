//! PNG plots drawn with `plotters`: loss curves ([`plot_lines`]) and real-versus-generated
//! scatters for the 2-D toy mixtures ([`plot_scatter`]).
//!
//! Text uses Noto Sans (SIL Open Font License 1.1), embedded in the binary by the `notosans`
//! crate and registered with plotters' `ab_glyph` renderer, so plots look the same on machines
//! with no fonts installed. Non-finite values (a diverged loss, a NaN sample) are left out of
//! the drawing rather than failing it.

use super::image::encode;
use super::{output_err, write_atomic};
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Width and height in pixels of [`plot_lines`] output.
pub const LINE_PLOT_SIZE: (u32, u32) = (1000, 600);
/// Width and height in pixels of [`plot_scatter`] output (square, so the 2-D geometry of the
/// mixture is not distorted).
pub const SCATTER_PLOT_SIZE: (u32, u32) = (760, 760);

/// Series with at most this many points get a marker on each point.
const SPARSE_POINTS: usize = 60;

/// The font family every plot uses; registered on first use.
const FONT: &str = "sans-serif";

/// Matplotlib's `tab10` colours: distinct, and readable both faint and solid.
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

/// Registers the embedded Noto Sans faces with plotters, once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, notosans::REGULAR_TTF).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, notosans::BOLD_TTF).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "plot",
            "the embedded Noto Sans font could not be loaded",
        ))
    }
}

/// Draws with `draw` on a white RGB canvas of `size` and writes it as a PNG at `path`.
fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<()> {
    ensure_font()?;
    let (w, h) = size;
    if w < 200 || h < 150 {
        return Err(Error::invalid(
            "plot",
            format!("plot size {w}x{h} is too small (at least 200x150)"),
        ));
    }
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        draw(root).map_err(|e| output_err(path, format!("cannot draw the plot: {e}")))?;
    }
    let png = encode(
        &buf,
        w,
        h,
        ::image::ExtendedColorType::Rgb8,
        ::image::ImageFormat::Png,
    )
    .map_err(|e| output_err(path, format!("cannot encode the plot: {e}")))?;
    write_atomic(path, &png)
}

/// `lo..hi` widened by `frac` of its span on each side, or by 1 when it is a single value.
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) || lo > hi {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * lo.abs().max(1.0) {
        let d = lo.abs().max(1.0) * 0.5;
        return (lo - d, hi + d);
    }
    (lo - span * frac, hi + span * frac)
}

/// Tick labels for an axis spanning `lo..hi`: as many decimals as the tick spacing needs
/// (`1000`, not `1000.0`; `0.25` where ticks are that close), scientific for huge or tiny values.
fn tick_formatter(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    let span = (hi - lo).abs();
    let big = lo.abs().max(hi.abs());
    let sci = big >= 1e6 || (span > 0.0 && span < 1e-4);
    let decimals = if span > 0.0 {
        (-(span / 10.0).log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        1
    };
    move |v: &f64| {
        if sci {
            format!("{v:.2e}")
        } else {
            // `-0` reads oddly on an axis.
            let s = format!("{v:.decimals$}");
            if s.trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                s.trim_start_matches('-').to_string()
            } else {
                s
            }
        }
    }
}

/// The centred moving average of `pts` over `window` points (the window shrinks at both ends,
/// so the smoothed curve spans the same x range as the raw one and does not lag behind it).
fn moving_average(pts: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let n = pts.len();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for &(_, y) in pts {
        prefix.push(prefix.last().unwrap() + y);
    }
    let before = (window - 1) / 2;
    let after = window / 2;
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(before);
            let hi = (i + after + 1).min(n);
            (pts[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// Line plot: one line per named series of `(x, y)` points, with a legend, axis labels and
/// title. With `smooth_window > 1` each series is drawn raw (faint) with its centred moving
/// average over `smooth_window` points on top (solid), since GAN losses are noisy; `0` or `1`
/// draws the raw curves solid. Written as a PNG of [`LINE_PLOT_SIZE`].
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    smooth_window: usize,
) -> Result<()> {
    plot_lines_sized(
        path,
        title,
        x_label,
        y_label,
        series,
        smooth_window,
        LINE_PLOT_SIZE,
    )
}

/// [`plot_lines`] at a chosen size in pixels `(width, height)`.
pub fn plot_lines_sized(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    smooth_window: usize,
    size: (u32, u32),
) -> Result<()> {
    // Non-finite points are dropped: a NaN loss would otherwise blank the whole plot.
    let clean: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, pts)| {
            let pts = pts
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (name.as_str(), pts)
        })
        .collect();
    let all = clean.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (x0, x1) = if x0 <= x1 {
        if x1 > x0 {
            (x0, x1)
        } else {
            padded(x0, x1, 0.0)
        }
    } else {
        (0.0, 1.0)
    };
    let (y0, y1) = if y0 <= y1 {
        padded(y0, y1, 0.05)
    } else {
        (0.0, 1.0)
    };
    let smooth = smooth_window > 1;
    let (w, h) = size;
    let title_px = (h as f64 * 0.045).clamp(16.0, 28.0);
    let label_px = (h as f64 * 0.027).clamp(11.0, 17.0);
    render_png(path, size, |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, title_px).into_font().style(FontStyle::Bold))
            .margin_top(12)
            .margin_left(14)
            .margin_right((w / 30).max(16))
            .margin_bottom(10)
            .x_label_area_size((label_px * 3.4) as u32)
            .y_label_area_size((label_px * 5.6) as u32)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&tick_formatter(x0, x1))
            .y_label_formatter(&tick_formatter(y0, y1))
            .label_style((FONT, label_px))
            .axis_desc_style((FONT, label_px * 1.1))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(247, 247, 247))
            .axis_style(RGBColor(90, 90, 90))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, (name, pts)) in clean.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let label = name.to_string();
            if pts.len() <= SPARSE_POINTS {
                // Few points (a short run, a coarse log interval): mark each one, so a single
                // point still shows and the reader sees where the data are.
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|x| e(&x))?;
            }
            if smooth {
                chart
                    .draw_series(LineSeries::new(
                        pts.iter().copied(),
                        color.mix(0.28).stroke_width(1),
                    ))
                    .map_err(|x| e(&x))?;
                chart
                    .draw_series(LineSeries::new(
                        moving_average(pts, smooth_window),
                        color.stroke_width(2),
                    ))
                    .map_err(|x| e(&x))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                    });
            } else {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                    });
            }
        }
        if smooth && !clean.is_empty() {
            // A legend line that explains the two shades.
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                .map_err(|x| e(&x))?
                .label(format!("faint: raw, solid: mean of {smooth_window}"))
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (10, 0)], grey.mix(0.3).stroke_width(2))
                        + PathElement::new(vec![(11, 0), (22, 0)], grey.stroke_width(2))
                });
        }
        if !clean.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .margin(10)
                .legend_area_size(30)
                .label_font((FONT, label_px))
                .background_style(WHITE.mix(0.88))
                .border_style(RGBColor(180, 180, 180))
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))
    })
}

/// Scatter of real versus generated 2-D points (two colours, legend), for the toy mixtures;
/// `centres` (the mixture's mode centres, may be empty) are drawn as black crosses. Both axes
/// share one scale, so a ring stays round. Written as a PNG of [`SCATTER_PLOT_SIZE`].
pub fn plot_scatter(
    path: &Path,
    title: &str,
    real: &[[f32; 2]],
    generated: &[[f32; 2]],
    centres: &[[f32; 2]],
) -> Result<()> {
    plot_scatter_sized(path, title, real, generated, centres, SCATTER_PLOT_SIZE)
}

/// [`plot_scatter`] at a chosen size in pixels `(width, height)`.
pub fn plot_scatter_sized(
    path: &Path,
    title: &str,
    real: &[[f32; 2]],
    generated: &[[f32; 2]],
    centres: &[[f32; 2]],
    size: (u32, u32),
) -> Result<()> {
    let finite = |pts: &[[f32; 2]]| -> Vec<(f64, f64)> {
        pts.iter()
            .filter(|p| p[0].is_finite() && p[1].is_finite())
            .map(|p| (p[0] as f64, p[1] as f64))
            .collect()
    };
    let (real_pts, gen_pts, centre_pts) = (finite(real), finite(generated), finite(centres));
    let bad_gen = generated.len() - gen_pts.len();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in real_pts.iter().chain(&gen_pts).chain(&centre_pts) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    // One square window around everything, so both axes share a scale.
    let (cx, cy, half) = if x0 <= x1 {
        let half = ((x1 - x0).max(y1 - y0) * 0.5 * 1.08).max(1e-3);
        ((x0 + x1) * 0.5, (y0 + y1) * 0.5, half)
    } else {
        (0.0, 0.0, 1.0)
    };
    let (w, h) = size;
    let title_px = (h.min(w) as f64 * 0.036).clamp(16.0, 26.0);
    let label_px = (h.min(w) as f64 * 0.022).clamp(11.0, 16.0);
    // Dots shrink as the cloud grows so dense mixtures stay readable.
    let n_pts = real_pts.len().max(gen_pts.len());
    let (radius, alpha) = match n_pts {
        0..=500 => (3, 0.75),
        501..=3000 => (2, 0.55),
        _ => (2, 0.35),
    };
    render_png(path, size, |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let label_area = (label_px * 3.4) as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, title_px).into_font().style(FontStyle::Bold))
            .margin(14)
            .margin_right(22)
            .x_label_area_size(label_area)
            .y_label_area_size((label_px * 4.2) as u32)
            .build_cartesian_2d(cx - half..cx + half, cy - half..cy + half)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&tick_formatter(cx - half, cx + half))
            .y_label_formatter(&tick_formatter(cy - half, cy + half))
            .label_style((FONT, label_px))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(247, 247, 247))
            .axis_style(RGBColor(90, 90, 90))
            .draw()
            .map_err(|x| e(&x))?;
        let real_c = PALETTE[0];
        let gen_c = PALETTE[1];
        chart
            .draw_series(
                real_pts
                    .iter()
                    .map(|&p| Circle::new(p, radius, real_c.mix(alpha).filled())),
            )
            .map_err(|x| e(&x))?
            .label(format!("real ({})", real_pts.len()))
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, real_c.filled()));
        let gen_label = if bad_gen > 0 {
            format!(
                "generated ({}, {bad_gen} non-finite left out)",
                gen_pts.len()
            )
        } else {
            format!("generated ({})", gen_pts.len())
        };
        chart
            .draw_series(
                gen_pts
                    .iter()
                    .map(|&p| Circle::new(p, radius, gen_c.mix(alpha).filled())),
            )
            .map_err(|x| e(&x))?
            .label(gen_label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, gen_c.filled()));
        if !centre_pts.is_empty() {
            chart
                .draw_series(
                    centre_pts
                        .iter()
                        .map(|&p| Cross::new(p, 7, BLACK.stroke_width(2))),
                )
                .map_err(|x| e(&x))?
                .label("mode centres")
                .legend(move |(x, y)| Cross::new((x + 8, y), 6, BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .legend_area_size(24)
            .label_font((FONT, label_px))
            .background_style(WHITE.mix(0.88))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))
    })
}
