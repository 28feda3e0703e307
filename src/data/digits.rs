//! Built-in procedurally drawn digits 0-9, MNIST-like (white on black, 28x28), needing no
//! files.
//!
//! Each digit is a set of strokes (polylines and elliptic arcs) in a glyph box of
//! x in [-0.3, 0.3], y in [-0.5, 0.5] (y up), with a few style variants per digit (a 1 with or
//! without a flag, an open or closed 4, a 7 with or without a bar, a straight or curved tail
//! on the 9, ...). Each sample draws from its own seeded [`Rng`]: a variant, a gentle smooth
//! warp of the strokes, a width, a slant, a small rotation, a height of 16-20 px and a
//! stroke width of 2-3.8 px (for 28 px images; everything scales with the size), and a
//! position jitter around the centre. Strokes are rendered anti-aliased from each pixel
//! centre's distance to the nearest segment, with a soft 1.5 px edge.
//!
//! Sample `i` has label `i % 10` (so classes are balanced) and depends only on `(seed, i)`,
//! so a data set is identical whatever the thread count, and its first `k` images are the
//! same for every `n >= k`.

use super::{digit_names, Dataset};
use crate::error::{Error, Result};
use crate::tensor::Rng;
use rayon::prelude::*;

/// Native image size (28x28, like MNIST).
pub const SIZE: usize = 28;

/// How many digits the `digits` data spec draws by default (2,000 per class).
pub const DEFAULT_COUNT: usize = 20_000;

type Pt = [f32; 2];

/// Points of an elliptic arc from `a0` to `a1` degrees (counter-clockwise when `a1 > a0`).
fn arc(c: Pt, rx: f32, ry: f32, a0: f32, a1: f32) -> Vec<Pt> {
    let n = (((a1 - a0).abs() / 9.0).ceil() as usize).max(2);
    (0..=n)
        .map(|k| {
            let a = (a0 + (a1 - a0) * k as f32 / n as f32).to_radians();
            [c[0] + rx * a.cos(), c[1] + ry * a.sin()]
        })
        .collect()
}

/// The strokes of digit `d` in the glyph box, with this sample's style choices.
fn glyph(d: usize, rng: &mut Rng) -> Vec<Vec<Pt>> {
    let mut u = |lo: f32, hi: f32| rng.uniform(lo, hi);
    match d {
        0 => {
            let rx = u(0.2, 0.3);
            let a0 = u(70.0, 110.0);
            let sweep = u(360.0, 385.0);
            vec![arc([0.0, 0.0], rx, 0.48, a0, a0 + sweep)]
        }
        1 => {
            let top = [u(-0.03, 0.05), 0.5];
            let mut stem = vec![top, [u(-0.04, 0.02), -0.5]];
            let mut strokes = Vec::new();
            if u(0.0, 1.0) < 0.45 {
                stem.insert(0, [top[0] - u(0.1, 0.18), top[1] - u(0.12, 0.22)]);
            }
            strokes.push(stem);
            if u(0.0, 1.0) < 0.15 {
                strokes.push(vec![[-0.15, -0.5], [0.15, -0.5]]);
            }
            strokes
        }
        2 => {
            let mut s = arc([0.0, 0.22], 0.25, u(0.24, 0.28), u(150.0, 175.0), -40.0);
            let low_left = [-0.28, -0.48];
            if u(0.0, 1.0) < 0.3 {
                // A small loop where the diagonal meets the base.
                s.push([-0.2, -0.38]);
                s.extend(arc([-0.18, -0.44], 0.08, 0.06, 140.0, 330.0));
            } else {
                s.push(low_left);
            }
            s.push([u(0.26, 0.32), u(-0.52, -0.46)]);
            vec![s]
        }
        3 => {
            let mid_x = u(-0.06, 0.02);
            let mut s = arc([0.0, 0.25], 0.24, 0.24, u(140.0, 165.0), -90.0);
            s.push([mid_x, 0.01]);
            let mut low = arc([0.0, -0.24], 0.27, 0.26, 90.0, u(-160.0, -140.0));
            low[0] = [mid_x, 0.02];
            s.extend(low);
            vec![s]
        }
        4 => {
            let bar_y = u(-0.2, -0.08);
            if u(0.0, 1.0) < 0.55 {
                let x = u(0.08, 0.16);
                vec![
                    vec![[x, 0.5], [-0.3, bar_y], [0.3, bar_y]],
                    vec![[x, 0.5], [x, -0.5]],
                ]
            } else {
                let x = u(0.1, 0.18);
                vec![
                    vec![[u(-0.24, -0.18), 0.5], [-0.27, bar_y], [0.3, bar_y]],
                    vec![[x, u(0.3, 0.5)], [x, -0.5]],
                ]
            }
        }
        5 => {
            let mut s = vec![[u(0.22, 0.3), 0.5], [-0.18, 0.5]];
            s.extend(arc([0.0, -0.17], 0.27, 0.29, 135.0, u(-155.0, -135.0)));
            vec![s]
        }
        6 => {
            let mut s = arc([0.3, -0.12], 0.55, 0.62, u(92.0, 100.0), 180.0);
            s.extend(arc([0.0, -0.24], 0.25, 0.25, 180.0, u(500.0, 530.0)));
            vec![s]
        }
        7 => {
            let bottom = [u(-0.1, 0.02), -0.5];
            let mut stem = vec![[-0.27, u(0.4, 0.5)], [0.3, 0.5]];
            if u(0.0, 1.0) < 0.5 {
                stem.push([u(0.08, 0.16), 0.0]);
            }
            stem.push(bottom);
            let mut strokes = vec![stem];
            if u(0.0, 1.0) < 0.2 {
                strokes.push(vec![[-0.02, 0.0], [0.28, 0.0]]);
            }
            strokes
        }
        8 => {
            let a = u(80.0, 100.0);
            vec![
                arc([0.0, 0.26], u(0.17, 0.22), 0.23, a, a + 365.0),
                arc([0.0, -0.22], u(0.22, 0.28), 0.27, 90.0, 455.0),
            ]
        }
        _ => {
            let mut s = arc([0.0, 0.24], 0.25, 0.25, u(-20.0, 10.0), 360.0);
            if u(0.0, 1.0) < 0.55 {
                s.push([u(0.12, 0.22), -0.5]);
            } else {
                s.extend(arc([-0.3, 0.24], 0.55, 0.74, 0.0, -80.0));
            }
            vec![s]
        }
    }
}

/// Anti-aliased coverage of the segment `a`-`b` with half-width `hw` on the canvas.
fn draw_segment(canvas: &mut [f32], size: usize, a: Pt, b: Pt, hw: f32, soft: f32) {
    let reach = hw + soft;
    let x0 = (a[0].min(b[0]) - reach).floor().max(0.0) as usize;
    let y0 = (a[1].min(b[1]) - reach).floor().max(0.0) as usize;
    let x1 = ((a[0].max(b[0]) + reach).ceil().max(0.0) as usize).min(size);
    let y1 = ((a[1].max(b[1]) + reach).ceil().max(0.0) as usize).min(size);
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    for y in y0..y1 {
        for x in x0..x1 {
            let (px, py) = (x as f32 + 0.5 - a[0], y as f32 + 0.5 - a[1]);
            let t = if len2 > 0.0 {
                ((px * dx + py * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ex, ey) = (px - t * dx, py - t * dy);
            let d = (ex * ex + ey * ey).sqrt();
            let cov = ((hw + soft * 0.5 - d) / soft).clamp(0.0, 1.0);
            let cell = &mut canvas[y * size + x];
            if cov > *cell {
                *cell = cov;
            }
        }
    }
}

/// Draws one digit `d` at `size x size`, intensities in [0, 1] (1 = ink), row-major.
pub fn draw_digit(d: usize, size: usize, rng: &mut Rng) -> Vec<f32> {
    let strokes = glyph(d % 10, rng);
    let k = size as f32 / SIZE as f32;
    // Style of this sample.
    let height = rng.uniform(16.0, 20.0) * k;
    let width_factor = rng.uniform(0.8, 1.25);
    let slant = rng.uniform(-0.1, 0.45); // x shift per unit of height, rightward at the top
    let rot = rng.uniform(-0.12, 0.12);
    let (wx, fx, px) = (
        rng.uniform(0.0, 0.035),
        rng.uniform(0.5, 1.3),
        rng.uniform(0.0, 6.3),
    );
    let (wy, fy, py) = (
        rng.uniform(0.0, 0.03),
        rng.uniform(0.5, 1.3),
        rng.uniform(0.0, 6.3),
    );
    let stroke = rng.uniform(2.0, 3.8) * k;
    let jitter = [rng.uniform(-1.2, 1.2) * k, rng.uniform(-1.2, 1.2) * k];
    let (sr, cr) = rot.sin_cos();
    let tau = std::f32::consts::TAU;
    let map = |p: Pt| -> Pt {
        // Smooth warp, then width, slant and rotation, in glyph units (y up).
        let x = p[0] + wx * (fx * tau * p[1] + px).sin();
        let y = p[1] + wy * (fy * tau * p[0] + py).sin();
        let x = x * width_factor + slant * y;
        [cr * x - sr * y, sr * x + cr * y]
    };
    let mut paths: Vec<Vec<Pt>> = strokes
        .iter()
        .map(|s| s.iter().map(|&p| map(p)).collect())
        .collect();
    // Scale to pixels (y down) and centre the bounding box, shrinking a digit that would not
    // fit with a margin of 1.5 px.
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in paths.iter().flatten() {
        for a in 0..2 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    let room = size as f32 - stroke - 3.0 * k;
    let ext = (hi[0] - lo[0]).max(hi[1] - lo[1]) * height;
    let scale = if ext > room {
        height * room / ext
    } else {
        height
    };
    let centre = [(lo[0] + hi[0]) * 0.5, (lo[1] + hi[1]) * 0.5];
    let half = size as f32 * 0.5;
    for p in paths.iter_mut().flatten() {
        *p = [
            half + jitter[0] + (p[0] - centre[0]) * scale,
            half + jitter[1] - (p[1] - centre[1]) * scale,
        ];
    }
    let mut canvas = vec![0f32; size * size];
    let soft = 1.5 * k.max(0.5);
    for path in &paths {
        for seg in path.windows(2) {
            draw_segment(&mut canvas, size, seg[0], seg[1], stroke * 0.5, soft);
        }
    }
    canvas
}

/// The generator of sample `i` for `seed`.
fn sample_rng(seed: u64, i: usize) -> Rng {
    Rng::new(seed ^ Rng::new(i as u64).next_u64())
}

/// `n` digits at `size x size` (1 channel, in [-1, 1]), label `i % 10`, fully determined by
/// `seed`. Drawn in parallel.
pub fn generate(n: usize, size: usize, seed: u64) -> Result<Dataset> {
    if n == 0 {
        return Err(Error::invalid("digits", "asked for 0 digits"));
    }
    if size < 8 {
        return Err(Error::invalid(
            "digits",
            format!("image size {size} is too small to draw digits (at least 8)"),
        ));
    }
    let per = size * size;
    let mut images = vec![0f32; n * per];
    images.par_chunks_mut(per).enumerate().for_each(|(i, out)| {
        let mut rng = sample_rng(seed, i);
        let img = draw_digit(i % 10, size, &mut rng);
        for (o, v) in out.iter_mut().zip(img) {
            *o = v * 2.0 - 1.0;
        }
    });
    let labels = (0..n).map(|i| i % 10).collect();
    Dataset::new(
        "digits",
        images,
        [1, size, size],
        Some(labels),
        10,
        digit_names(),
    )
}
