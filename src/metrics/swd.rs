//! Sliced Wasserstein distance on Laplacian-pyramid patches: the metric ProGAN (Karras et al.
//! 2018, `metrics/sliced_wasserstein.py`) reports, needing no trained network, for label-free
//! data such as a folder of faces.
//!
//! For each image set:
//!
//! 1. a Laplacian pyramid per image: `G_0` = the image, `G_{l+1} = down(G_l)` (5x5 binomial
//!    blur `[1 4 6 4 1]^T [1 4 6 4 1] / 256`, mirror borders as `scipy.ndimage.convolve(...,
//!    mode="mirror")`, then every second pixel), `L_l = G_l - up(G_{l+1})` (`up`: zeros
//!    between pixels, the same blur times 4), the coarsest level keeping `G` itself; one level
//!    per resolution down to 16 pixels (64x64 images give 64, 32 and 16);
//! 2. from each level, `patches_per_image` random 7x7 neighbourhoods per image (all channels),
//!    flattened into descriptors of `C * 49` values;
//! 3. each set's descriptors normalised per channel (minus the mean, over the standard
//!    deviation, over all its descriptors and positions).
//!
//! Then, per level, the sliced Wasserstein distance between the two descriptor sets `A`, `B`
//! (equal counts): for `dir_repeats` rounds of `dirs_per_repeat` random unit directions `u`,
//! project both sets on `u`, sort each, and average `|sort(A u) - sort(B u)|` over points,
//! directions and rounds. Reported multiplied by 1e3, as ProGAN's `SWDx1e3_{res}`, per level
//! and averaged over levels. Identical image sets with the same seed give exactly 0; lower is
//! better.

use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor};
use rayon::prelude::*;

/// How [`swd`] samples patches and directions (ProGAN's values, except fewer patches per
/// image by default to fit 2-core machines: 128 there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwdOptions {
    /// Random neighbourhoods per image and level.
    pub patches_per_image: usize,
    /// Side of a neighbourhood (odd).
    pub patch_size: usize,
    /// Rounds of random directions.
    pub dir_repeats: usize,
    /// Directions per round.
    pub dirs_per_repeat: usize,
    /// The smallest pyramid resolution used.
    pub min_resolution: usize,
    /// Seed of the patch positions and directions.
    pub seed: u64,
}

impl Default for SwdOptions {
    /// 64 patches of 7x7 per image, 4 rounds of 128 directions, levels down to 16 px, seed 0.
    fn default() -> Self {
        SwdOptions {
            patches_per_image: 64,
            patch_size: 7,
            dir_repeats: 4,
            dirs_per_repeat: 128,
            min_resolution: 16,
            seed: 0,
        }
    }
}

/// The distance per pyramid level and averaged.
#[derive(Clone, Debug, PartialEq)]
pub struct SwdResult {
    /// `(resolution, SWD x 1e3)` from the finest level to the coarsest.
    pub levels: Vec<(usize, f64)>,
    /// The mean over levels (x 1e3).
    pub mean: f64,
}

/// A batch of images: `n` NCHW images of `c x h x w` in one buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    /// `n * c * h * w` values.
    pub data: Vec<f32>,
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// `scipy.ndimage`'s "mirror" border: reflect about the edge pixel without repeating it
/// (`-1 -> 1`, `n -> n - 2`).
fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut i = i.rem_euclid(period);
    if i >= n as isize {
        i = period - i;
    }
    i as usize
}

const BINOMIAL: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// The 5x5 binomial blur of one plane (separable: rows then columns), mirror borders, times
/// `gain`.
fn blur(plane: &[f32], h: usize, w: usize, gain: f32) -> Vec<f32> {
    let mut tmp = vec![0.0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (k, &c) in BINOMIAL.iter().enumerate() {
                s += c * plane[y * w + mirror(x as isize + k as isize - 2, w)];
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0.0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (k, &c) in BINOMIAL.iter().enumerate() {
                s += c * tmp[mirror(y as isize + k as isize - 2, h) * w + x];
            }
            out[y * w + x] = gain * s;
        }
    }
    out
}

/// Blur then keep every second pixel: `h x w -> ceil(h/2) x ceil(w/2)`.
fn pyr_down(plane: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
    let b = blur(plane, h, w, 1.0);
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        for x in 0..ow {
            out.push(b[2 * y * w + 2 * x]);
        }
    }
    (out, oh, ow)
}

/// Zeros between pixels, then the blur times 4, cropped to `out_h x out_w`.
fn pyr_up(plane: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    let (uh, uw) = (2 * h, 2 * w);
    let mut up = vec![0.0f32; uh * uw];
    for y in 0..h {
        for x in 0..w {
            up[2 * y * uw + 2 * x] = plane[y * w + x];
        }
    }
    let b = blur(&up, uh, uw, 4.0);
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        out.extend_from_slice(&b[y * uw..y * uw + out_w]);
    }
    out
}

/// The resolutions of the pyramid of `size`-pixel images: `size, size/2, ...` down to
/// `min_resolution` (at least one level).
pub fn pyramid_resolutions(size: usize, min_resolution: usize) -> Vec<usize> {
    let mut out = vec![size];
    let mut r = size / 2;
    while r >= min_resolution && r > 0 {
        out.push(r);
        r /= 2;
    }
    out
}

/// The Laplacian pyramid of every image (module docs): `levels` batches, finest first.
pub fn laplacian_pyramid(images: &ImageBatch, levels: usize) -> Vec<ImageBatch> {
    let (c, h, w) = (images.c, images.h, images.w);
    let planes: Vec<&[f32]> = images.data.chunks_exact(h * w).collect();
    // Per plane: the list of (level data, h, w).
    let per_plane: Vec<Vec<(Vec<f32>, usize, usize)>> = planes
        .par_iter()
        .map(|p| {
            let mut g = vec![(p.to_vec(), h, w)];
            for _ in 1..levels.max(1) {
                let (d, lh, lw) = {
                    let (last, lh, lw) = g.last().expect("non-empty");
                    pyr_down(last, *lh, *lw)
                };
                g.push((d, lh, lw));
            }
            // L_l = G_l - up(G_{l+1}); the last level stays G.
            for l in 0..g.len() - 1 {
                let (ref small, sh, sw) = g[l + 1];
                let (bh, bw) = (g[l].1, g[l].2);
                let up = pyr_up(small, sh, sw, bh, bw);
                for (v, u) in g[l].0.iter_mut().zip(up) {
                    *v -= u;
                }
            }
            g
        })
        .collect();
    (0..levels.max(1))
        .map(|l| {
            let (lh, lw) = (per_plane[0][l].1, per_plane[0][l].2);
            let mut data = Vec::with_capacity(planes.len() * lh * lw);
            for p in &per_plane {
                data.extend_from_slice(&p[l].0);
            }
            ImageBatch {
                data,
                n: images.n,
                c,
                h: lh,
                w: lw,
            }
        })
        .collect()
}

/// `patches_per_image` random `p x p` neighbourhoods of every image (all channels), each
/// flattened CHW into `c * p * p` values, then normalised per channel over the whole set.
/// Positions are drawn from `rng` (centres at least `p/2` from every border).
pub fn patch_descriptors(
    level: &ImageBatch,
    patches_per_image: usize,
    p: usize,
    rng: &mut Rng,
) -> Result<Vec<f32>> {
    let (c, h, w) = (level.c, level.h, level.w);
    if h < p || w < p {
        return Err(Error::invalid(
            "swd",
            format!("a {h}x{w} pyramid level is smaller than the {p}x{p} patches"),
        ));
    }
    let dlen = c * p * p;
    let mut out = Vec::with_capacity(level.n * patches_per_image * dlen);
    for img in level.data.chunks_exact(c * h * w) {
        for _ in 0..patches_per_image {
            let x0 = rng.below(w - p + 1);
            let y0 = rng.below(h - p + 1);
            for ch in 0..c {
                for y in 0..p {
                    let row = &img[ch * h * w + (y0 + y) * w + x0..][..p];
                    out.extend_from_slice(row);
                }
            }
        }
    }
    // Per-channel normalisation (population std), as ProGAN's finalize_descriptors.
    let count = (out.len() / dlen) * p * p;
    for ch in 0..c {
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for d in out.chunks_exact(dlen) {
            for &v in &d[ch * p * p..(ch + 1) * p * p] {
                s += v as f64;
                s2 += (v as f64) * (v as f64);
            }
        }
        let mean = s / count.max(1) as f64;
        let std = (s2 / count.max(1) as f64 - mean * mean).max(0.0).sqrt();
        let inv = if std > 0.0 { 1.0 / std } else { 1.0 };
        for d in out.chunks_exact_mut(dlen) {
            for v in &mut d[ch * p * p..(ch + 1) * p * p] {
                *v = ((*v as f64 - mean) * inv) as f32;
            }
        }
    }
    Ok(out)
}

/// The sliced Wasserstein distance between two equal-size descriptor sets (`n x dim` each):
/// the mean over `repeats x dirs` random unit directions of the mean absolute difference of
/// the sorted projections.
pub fn sliced_wasserstein(
    a: &[f32],
    b: &[f32],
    dim: usize,
    repeats: usize,
    dirs: usize,
    rng: &mut Rng,
) -> Result<f64> {
    if a.len() != b.len() || dim == 0 || !a.len().is_multiple_of(dim) || a.is_empty() {
        return Err(Error::invalid(
            "swd",
            format!(
                "descriptor sets of {} and {} values (dim {dim}) must have the same count",
                a.len(),
                b.len()
            ),
        ));
    }
    let n = a.len() / dim;
    let ta = Tensor::from_vec(a.to_vec(), [n, dim])?;
    let tb = Tensor::from_vec(b.to_vec(), [n, dim])?;
    let mut total = 0.0f64;
    for _ in 0..repeats {
        // dirs x dim, each row a unit vector.
        let mut u: Vec<f32> = (0..dirs * dim).map(|_| rng.normal()).collect();
        for row in u.chunks_exact_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            for v in row {
                *v /= norm;
            }
        }
        let tu = Tensor::from_vec(u, [dirs, dim])?;
        // [dirs, dim] x [n, dim]^T = [dirs, n]: one row of projections per direction.
        let layout = crate::ops::MatmulLayout {
            lhs_transposed: false,
            rhs_transposed: true,
        };
        let pa = tu.matmul_with(&ta, layout)?.to_vec();
        let pb = tu.matmul_with(&tb, layout)?.to_vec();
        let per_dir: f64 = pa
            .par_chunks(n)
            .zip(pb.par_chunks(n))
            .map(|(ra, rb)| {
                let (mut ra, mut rb) = (ra.to_vec(), rb.to_vec());
                ra.sort_unstable_by(|x, y| x.total_cmp(y));
                rb.sort_unstable_by(|x, y| x.total_cmp(y));
                ra.iter()
                    .zip(&rb)
                    .map(|(x, y)| (x - y).abs() as f64)
                    .sum::<f64>()
                    / n as f64
            })
            .sum();
        total += per_dir / dirs as f64;
    }
    Ok(total / repeats as f64)
}

/// The SWD between two image sets of the same shape (module docs). The sets are cut to the
/// smaller count so both give the same number of descriptors. Both sets take their patch
/// positions from streams seeded by `opts.seed`, so a set against itself gives 0.
pub fn swd(a: &ImageBatch, b: &ImageBatch, opts: &SwdOptions) -> Result<SwdResult> {
    if (a.c, a.h, a.w) != (b.c, b.h, b.w) {
        return Err(Error::invalid(
            "swd",
            format!(
                "image shapes differ: {}x{}x{} vs {}x{}x{}",
                a.c, a.h, a.w, b.c, b.h, b.w
            ),
        ));
    }
    if opts.patch_size.is_multiple_of(2) || opts.patches_per_image == 0 {
        return Err(Error::invalid(
            "swd",
            "the patch size must be odd and patches_per_image at least 1",
        ));
    }
    let n = a.n.min(b.n);
    if n == 0 {
        return Err(Error::invalid("swd", "both image sets need images"));
    }
    let cut = |x: &ImageBatch| ImageBatch {
        data: x.data[..n * x.c * x.h * x.w].to_vec(),
        n,
        ..*x
    };
    let (a, b) = (cut(a), cut(b));
    let res = pyramid_resolutions(a.h.min(a.w), opts.min_resolution);
    let pa = laplacian_pyramid(&a, res.len());
    let pb = laplacian_pyramid(&b, res.len());
    let mut levels = Vec::with_capacity(res.len());
    for (l, (la, lb)) in pa.iter().zip(&pb).enumerate() {
        let p = opts.patch_size;
        let seed = opts.seed ^ (l as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let da = patch_descriptors(la, opts.patches_per_image, p, &mut Rng::new(seed))?;
        let db = patch_descriptors(lb, opts.patches_per_image, p, &mut Rng::new(seed))?;
        let mut dir_rng = Rng::new(seed ^ 0x5344_4952);
        let d = sliced_wasserstein(
            &da,
            &db,
            a.c * p * p,
            opts.dir_repeats,
            opts.dirs_per_repeat,
            &mut dir_rng,
        )?;
        levels.push((res[l], d * 1e3));
    }
    let mean = levels.iter().map(|(_, d)| d).sum::<f64>() / levels.len() as f64;
    Ok(SwdResult { levels, mean })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_matches_scipy() {
        let idx: Vec<usize> = (-3..8).map(|i| mirror(i, 5)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
    }

    #[test]
    fn pyramid_of_a_constant_image() {
        // A constant image: every Laplacian level but the last is zero, the last the constant.
        let img = ImageBatch {
            data: vec![0.5; 32 * 32],
            n: 1,
            c: 1,
            h: 32,
            w: 32,
        };
        let pyr = laplacian_pyramid(&img, 2);
        assert_eq!((pyr[1].h, pyr[1].w), (16, 16));
        assert!(pyr[0].data.iter().all(|v| v.abs() < 1e-6));
        assert!(pyr[1].data.iter().all(|v| (v - 0.5).abs() < 1e-6));
        assert_eq!(pyramid_resolutions(64, 16), vec![64, 32, 16]);
        assert_eq!(pyramid_resolutions(28, 16), vec![28]);
    }
}
