//! Any folder of PNG/JPEG images, optionally one sub-folder per class (torchvision's
//! `ImageFolder` layout).
//!
//! # Layout and formats
//!
//! - **Flat:** `DIR/*.png|jpg|jpeg` (at any depth below `DIR` when no sub-folder forms a class):
//!   an unlabelled data set.
//! - **Classes:** `DIR/CLASS/**/*.png|jpg|jpeg`: every non-hidden sub-folder that holds at least
//!   one image is a class; classes are sorted by name and the i-th is label `i`, as in
//!   torchvision. Images directly in `DIR` are then ignored (as torchvision does).
//!
//! Files are picked by extension (case-insensitive); hidden files and folders (a leading `.`)
//! and other files are skipped. The decoder is chosen from the file's bytes, not its name:
//! PNG (signature `89 50 4E 47 0D 0A 1A 0A`, then chunks; 1-16 bits, gray, gray+alpha, RGB,
//! RGBA, palette) and baseline/progressive JPEG (`FF D8 FF`, then segments) are read.
//!
//! Every image, whatever its size or mode, is converted: to RGB (gray replicated, alpha
//! dropped) or to gray (PIL's luma weights), then resized so its shorter side is the target
//! size with Pillow's antialiased bilinear filter, then centre-cropped to a square: the same
//! arithmetic, bit for bit, as torchvision's `Resize(size)` + `CenterCrop(size)` on a PIL
//! image (the resampler is written here, after Pillow's `Resample.c`). Mixed sizes and modes
//! are converted, not rejected.
//!
//! **A file that cannot be decoded is an error naming the file** (the whole load fails): a
//! corrupt image in a training set is something to fix, not to skip silently. When several
//! are corrupt, the first in path order is reported.

use super::{normalize_u8, ColorMode, Dataset};
use crate::error::{Error, Result};
use image::{DynamicImage, GrayImage};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Target size of a folder's images when none is asked for.
pub const DEFAULT_SIZE: usize = 64;

/// File extensions that are read as images (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The image files of a folder and their classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderListing {
    /// Image files, sorted by class then path.
    pub files: Vec<PathBuf>,
    /// One label per file in the class layout; `None` when flat.
    pub labels: Option<Vec<usize>>,
    /// Class names (the sub-folder names), sorted; empty when flat.
    pub classes: Vec<String>,
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .map(|n| n.to_string_lossy().starts_with('.'))
        .unwrap_or(false)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            EXTENSIONS.contains(&e.as_str())
        })
        .unwrap_or(false)
}

/// Non-hidden entries of `dir`, sorted, as (path, is_dir).
fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::data(dir, format!("cannot list folder: {e}")))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::data(dir, format!("cannot list folder: {e}")))?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        // Follow symbolic links: a folder of links to images is common.
        out.push((path.clone(), path.is_dir()));
    }
    out.sort();
    Ok(out)
}

/// Image files under `dir` at any depth, sorted.
fn images_under(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > 32 {
        return Err(Error::data(dir, "folders nested more than 32 deep"));
    }
    for (p, is_dir) in list_dir(dir)? {
        if is_dir {
            images_under(&p, out, depth + 1)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Lists the images of `dir` and decides between the flat and the class layout.
pub fn list_folder(dir: &Path) -> Result<FolderListing> {
    if !dir.is_dir() {
        return Err(Error::data(dir, "no such folder"));
    }
    let entries = list_dir(dir)?;
    let mut classes = Vec::new();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (p, is_dir) in &entries {
        if !is_dir {
            continue;
        }
        let mut class_files = Vec::new();
        images_under(p, &mut class_files, 1)?;
        if class_files.is_empty() {
            continue;
        }
        let label = classes.len();
        classes.push(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        labels.extend(std::iter::repeat_n(label, class_files.len()));
        files.extend(class_files);
    }
    if !classes.is_empty() {
        return Ok(FolderListing {
            files,
            labels: Some(labels),
            classes,
        });
    }
    let files: Vec<PathBuf> = entries
        .into_iter()
        .filter(|(p, d)| !d && is_image(p))
        .map(|(p, _)| p)
        .collect();
    if files.is_empty() {
        return Err(Error::data(
            dir,
            format!(
                "no images found (looked for files ending in .{} here and in sub-folders)",
                EXTENSIONS.join(", .")
            ),
        ));
    }
    Ok(FolderListing {
        files,
        labels: None,
        classes: Vec::new(),
    })
}

/// Python's `round` (half to even) of `d / 2`, as torchvision's `CenterCrop` computes offsets.
fn half_round_even(d: usize) -> usize {
    let k = d / 2;
    if d % 2 == 1 && k % 2 == 1 {
        k + 1
    } else {
        k
    }
}

/// The size torchvision's `Resize(size)` gives a `w x h` image: the shorter side becomes
/// `size`, the longer `int(size * long / short)`.
pub fn resized_dims(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (w, h) = (w.max(1), h.max(1));
    if w <= h {
        (size, (size * h / w).max(size))
    } else {
        ((size * w / h).max(size), size)
    }
}

/// The top-left corner of torchvision's `CenterCrop(size)` of a `w x h` image:
/// `(round((w - size) / 2), round((h - size) / 2))`, rounding half to even as Python does.
pub fn crop_offsets(w: usize, h: usize, size: usize) -> (usize, usize) {
    (
        half_round_even(w.saturating_sub(size)),
        half_round_even(h.saturating_sub(size)),
    )
}

/// Per output index: the first input index and the normalised weights of PIL's antialiased
/// bilinear filter (`precompute_coeffs` in Pillow's `Resample.c`): the triangle kernel is
/// widened by the scale factor when shrinking, so every input pixel contributes.
fn coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the bilinear kernel's support is 1
    let ss = 1.0 / filterscale; // multiplied, not divided, to round exactly as Pillow does
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax.max(xmin))
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Fixed-point bits of Pillow's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One separable pass over a row-major plane: along x (`horizontal`) or y, with 8-bit
/// rounding exactly as Pillow's `ImagingResampleHorizontal_8bpc`/`Vertical_8bpc`.
fn pass_u8(src: &[u8], (w, h): (usize, usize), out_len: usize, horizontal: bool) -> Vec<u8> {
    let in_len = if horizontal { w } else { h };
    let k: Vec<(usize, Vec<i32>)> = coeffs(in_len, out_len)
        .into_iter()
        .map(|(x0, ws)| {
            let fixed = ws
                .iter()
                .map(|&v| {
                    let f = v * (1u64 << PRECISION_BITS) as f64;
                    (if v < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
                })
                .collect();
            (x0, fixed)
        })
        .collect();
    let clip = |ss: i64| (ss >> PRECISION_BITS).clamp(0, 255) as u8;
    let half = 1i64 << (PRECISION_BITS - 1);
    if horizontal {
        let mut out = Vec::with_capacity(out_len * h);
        for row in src.chunks_exact(w) {
            for (x0, ws) in &k {
                let ss = ws
                    .iter()
                    .enumerate()
                    .fold(half, |acc, (i, &c)| acc + row[x0 + i] as i64 * c as i64);
                out.push(clip(ss));
            }
        }
        out
    } else {
        let mut out = Vec::with_capacity(w * out_len);
        for (y0, ws) in &k {
            for x in 0..w {
                let ss = ws.iter().enumerate().fold(half, |acc, (i, &c)| {
                    acc + src[(y0 + i) * w + x] as i64 * c as i64
                });
                out.push(clip(ss));
            }
        }
        out
    }
}

/// One separable pass over an `f32` plane (Pillow's mode `F`: double weights, no rounding).
fn pass_f32(src: &[f32], (w, h): (usize, usize), out_len: usize, horizontal: bool) -> Vec<f32> {
    let in_len = if horizontal { w } else { h };
    let k = coeffs(in_len, out_len);
    if horizontal {
        let mut out = Vec::with_capacity(out_len * h);
        for row in src.chunks_exact(w) {
            for (x0, ws) in &k {
                let ss: f64 = ws
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| row[x0 + i] as f64 * c)
                    .sum();
                out.push(ss as f32);
            }
        }
        out
    } else {
        let mut out = Vec::with_capacity(w * out_len);
        for (y0, ws) in &k {
            for x in 0..w {
                let ss: f64 = ws
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| src[(y0 + i) * w + x] as f64 * c)
                    .sum();
                out.push(ss as f32);
            }
        }
        out
    }
}

/// Resizes one 8-bit plane from `w x h` to `nw x nh` with Pillow's antialiased bilinear
/// filter (`Image.resize(..., BILINEAR)`), bit for bit: horizontal pass, then vertical, each
/// rounded to 8 bits. A dimension that does not change is not resampled.
pub fn resize_plane_u8(src: &[u8], (w, h): (usize, usize), (nw, nh): (usize, usize)) -> Vec<u8> {
    let mut cur = src.to_vec();
    if nw != w {
        cur = pass_u8(&cur, (w, h), nw, true);
    }
    if nh != h {
        cur = pass_u8(&cur, (nw, h), nh, false);
    }
    cur
}

/// Resizes one `f32` plane from `w x h` to `nw x nh` with the same filter, without rounding.
pub fn resize_plane_f32(src: &[f32], (w, h): (usize, usize), (nw, nh): (usize, usize)) -> Vec<f32> {
    let mut cur = src.to_vec();
    if nw != w {
        cur = pass_f32(&cur, (w, h), nw, true);
    }
    if nh != h {
        cur = pass_f32(&cur, (nw, h), nh, false);
    }
    cur
}

/// torchvision's `Resize(size)` then `CenterCrop(size)` of one `w x h` plane, written to
/// `out` (`size * size` values) through `f` (e.g. normalisation).
pub fn resize_crop_plane<T: Copy, U>(
    src: &[T],
    (w, h): (usize, usize),
    size: usize,
    resize: impl Fn(&[T], (usize, usize), (usize, usize)) -> Vec<T>,
    out: &mut [U],
    f: impl Fn(T) -> U,
) {
    let (nw, nh) = resized_dims(w, h, size);
    let resized = resize(src, (w, h), (nw, nh));
    let (left, top) = crop_offsets(nw, nh, size);
    for y in 0..size {
        let row = &resized[(top + y) * nw + left..(top + y) * nw + left + size];
        for (o, &v) in out[y * size..(y + 1) * size].iter_mut().zip(row) {
            *o = f(v);
        }
    }
}

/// Converts to gray with PIL's fixed-point ITU-R 601-2 luma (as torchvision's `Grayscale`);
/// gray images keep their values.
fn to_gray(img: &DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_) => img.to_luma8(),
        _ => {
            let rgb = img.to_rgb8();
            let (w, h) = rgb.dimensions();
            let data = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| {
                    ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000)
                        >> 16) as u8
                })
                .collect();
            GrayImage::from_raw(w, h, data).expect("one byte per pixel")
        }
    }
}

/// Decodes one image file into `out` (`channels * size * size` values, CHW, in [-1, 1]).
pub fn load_image_into(path: &Path, size: usize, mode: ColorMode, out: &mut [f32]) -> Result<()> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::data(path, format!("cannot open image: {e}")))?
        .with_guessed_format()
        .map_err(|e| Error::data(path, format!("cannot read image: {e}")))?
        .decode()
        .map_err(|e| {
            Error::data(
                path,
                format!("cannot decode image: {}", e.to_string().trim()),
            )
        })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::data(path, "image has no pixels"));
    }
    let plane = size * size;
    let dims = (img.width() as usize, img.height() as usize);
    match mode {
        ColorMode::Gray => {
            let g = to_gray(&img);
            resize_crop_plane(g.as_raw(), dims, size, resize_plane_u8, out, normalize_u8);
        }
        ColorMode::Rgb => {
            let rgb = img.to_rgb8();
            for (c, out) in out.chunks_exact_mut(plane).enumerate() {
                let chan: Vec<u8> = rgb.as_raw().iter().skip(c).step_by(3).copied().collect();
                resize_crop_plane(&chan, dims, size, resize_plane_u8, out, normalize_u8);
            }
        }
    }
    Ok(())
}

/// Decodes one image file to a `channels x size x size` CHW vector in [-1, 1].
pub fn load_image(path: &Path, size: usize, mode: ColorMode) -> Result<Vec<f32>> {
    let mut out = vec![0f32; mode.channels() * size * size];
    load_image_into(path, size, mode, &mut out)?;
    Ok(out)
}

/// Loads every image of `dir` (see the module docs for the layout), decoded in parallel,
/// as `size x size` images in `mode`.
pub fn load_folder(dir: &Path, size: usize, mode: ColorMode) -> Result<Dataset> {
    if size == 0 {
        return Err(Error::data(dir, "image size must be at least 1"));
    }
    let listing = list_folder(dir)?;
    load_files(
        &listing.files,
        listing.labels,
        listing.classes,
        &format!("folder {}", dir.display()),
        size,
        mode,
    )
}

/// Loads the given image files (decoded in parallel) with optional labels and class names.
pub fn load_files(
    files: &[PathBuf],
    labels: Option<Vec<usize>>,
    classes: Vec<String>,
    name: &str,
    size: usize,
    mode: ColorMode,
) -> Result<Dataset> {
    let per = mode.channels() * size * size;
    let mut images = vec![0f32; files.len() * per];
    let results: Vec<Result<()>> = images
        .par_chunks_mut(per)
        .zip(files.par_iter())
        .map(|(out, f)| load_image_into(f, size, mode, out))
        .collect();
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(e);
    }
    let num_classes = classes.len();
    Dataset::new(
        name,
        images,
        [mode.channels(), size, size],
        labels,
        num_classes,
        classes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_matches_pillow_bit_for_bit() {
        // Expected values from Pillow 12.2's `Image.resize(..., BILINEAR)` on mode "L".
        let a: Vec<u8> = (0..63)
            .map(|i| ((i * 37 + (i / 9) * 11) % 256) as u8)
            .collect();
        let down = resize_plane_u8(&a, (9, 7), (5, 4));
        assert_eq!(
            down,
            [
                67, 121, 156, 116, 75, 132, 149, 114, 131, 135, 106, 126, 155, 108, 113, 105, 82,
                127, 162, 120
            ]
        );
        let b: Vec<u8> = (0..12).map(|i| ((i * 53) % 256) as u8).collect();
        let up = resize_plane_u8(&b, (4, 3), (7, 5));
        assert_eq!(
            up,
            [
                0, 19, 49, 80, 110, 140, 159, 85, 67, 39, 62, 92, 122, 141, 212, 139, 23, 36, 66,
                96, 115, 186, 168, 139, 86, 40, 70, 89, 168, 187, 217, 120, 22, 52, 71
            ]
        );
        // The float path agrees with the 8-bit one up to its two roundings.
        let f: Vec<f32> = a.iter().map(|&v| v as f32).collect();
        let fd = resize_plane_f32(&f, (9, 7), (5, 4));
        assert!(fd
            .iter()
            .zip(&down)
            .all(|(x, &y)| (x - y as f32).abs() <= 1.0));
    }

    #[test]
    fn torchvision_resize_and_crop_arithmetic() {
        // CelebA's 89x109 at 64: Resize gives 64x78, CenterCrop starts at row round(7.0) = 7.
        assert_eq!(resized_dims(89, 109, 64), (64, 78));
        assert_eq!(crop_offsets(64, 78, 64), (0, 7));
        assert_eq!(resized_dims(40, 20, 8), (16, 8));
        // Python rounds 9.5 and 0.5 to even.
        assert_eq!(crop_offsets(36, 19, 17), (10, 1));
        assert_eq!(crop_offsets(18, 17, 17), (0, 0));
    }
}
