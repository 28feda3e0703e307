//! Sample grids: a batch of generated images `[N, C, H, W]` with values in [-1, 1] (the range a
//! `tanh` generator produces) tiled into one picture, laid out like torchvision's
//! `save_image(x, nrow=..., normalize=True, value_range=(-1, 1))`.
//!
//! Values are mapped with `round((v + 1) / 2 * 255)` after clamping to [-1, 1]; NaN becomes 0
//! (black), so a diverged generator shows as black tiles rather than an error. One channel is
//! written as a greyscale image, three as RGB. The format follows the extension (`.jpg`/`.jpeg`
//! gives JPEG); anything else is written as PNG.

use super::{output_err, write_atomic};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::Path;

/// Pixels of padding between tiles and around the grid (torchvision's default), drawn black.
pub const GRID_PADDING: usize = 2;

/// Writes images `[N, C, H, W]` with values in [-1, 1] (C = 1 or 3) as one PNG grid, `nrow`
/// images per row, [`GRID_PADDING`] pixels of black padding, values clamped and mapped to
/// 0..255.
///
/// The grid is `min(nrow, N) * (W + 2) + 2` pixels wide and `ceil(N / nrow) * (H + 2) + 2`
/// high; image `i` has its top-left pixel at `(2 + (i % nrow) * (W + 2), 2 + (i / nrow) * (H + 2))`.
pub fn save_image_grid(images: &Tensor, nrow: usize, path: &Path) -> Result<()> {
    let &[n, c, h, w] = images.dims() else {
        return Err(Error::bad_shape(
            "save_image_grid",
            images.shape(),
            "expected images [N, C, H, W] with C = 1 or 3",
        ));
    };
    save_image_grid_raw(&images.to_vec(), n, c, h, w, nrow, path)
}

/// Same as [`save_image_grid`], but from raw data (`data` row-major `[n, c, h, w]`).
pub fn save_image_grid_raw(
    data: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    nrow: usize,
    path: &Path,
) -> Result<()> {
    let grid = render_grid(data, n, c, h, w, nrow, GRID_PADDING)?;
    write_pixels(&grid, path)
}

/// Writes one image `[C, H, W]` (or `[1, C, H, W]`) with values in [-1, 1] at its own size,
/// without padding: for per-seed outputs that an evaluation tool reads one file at a time.
pub fn save_image(image: &Tensor, path: &Path) -> Result<()> {
    let (c, h, w) = match *image.dims() {
        [c, h, w] | [1, c, h, w] => (c, h, w),
        _ => {
            return Err(Error::bad_shape(
                "save_image",
                image.shape(),
                "expected one image [C, H, W] or [1, C, H, W] with C = 1 or 3",
            ))
        }
    };
    let grid = render_grid(&image.to_vec(), 1, c, h, w, 1, 0)?;
    write_pixels(&grid, path)
}

/// An 8-bit picture: `channels` interleaved values per pixel, rows top to bottom.
struct Pixels {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

/// Maps a value in [-1, 1] to 0..=255 as torchvision does (clamp, then round half up).
fn to_u8(v: f32) -> u8 {
    let x = ((v + 1.0) * 0.5).clamp(0.0, 1.0);
    // NaN survives the clamp and `as` turns it into 0.
    (x * 255.0 + 0.5) as u8
}

/// Tiles `n` images into a grid of `nrow` per row with `padding` black pixels between tiles.
fn render_grid(
    data: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    nrow: usize,
    padding: usize,
) -> Result<Pixels> {
    const OP: &str = "save_image_grid";
    if c != 1 && c != 3 {
        return Err(Error::invalid(
            OP,
            format!("images need 1 or 3 channels, got {c}"),
        ));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::invalid(
            OP,
            format!("nothing to draw: {n} images of {h}x{w}"),
        ));
    }
    if nrow == 0 {
        return Err(Error::invalid(OP, "nrow must be at least 1"));
    }
    let want = n * c * h * w;
    if data.len() != want {
        return Err(Error::invalid(
            OP,
            format!(
                "{} values given for {n} images of [{c}, {h}, {w}] (need {want})",
                data.len()
            ),
        ));
    }
    let cols = nrow.min(n);
    let rows = n.div_ceil(cols);
    let width = cols * (w + padding) + padding;
    let height = rows * (h + padding) + padding;
    if width > u32::MAX as usize || height > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("grid {width}x{height} too large"),
        ));
    }
    let mut out = vec![0u8; width * height * c];
    for (i, img) in data.chunks_exact(c * h * w).enumerate() {
        let x0 = padding + (i % cols) * (w + padding);
        let y0 = padding + (i / cols) * (h + padding);
        for y in 0..h {
            let row = &mut out[((y0 + y) * width + x0) * c..][..w * c];
            for x in 0..w {
                for ch in 0..c {
                    row[x * c + ch] = to_u8(img[(ch * h + y) * w + x]);
                }
            }
        }
    }
    Ok(Pixels {
        width,
        height,
        channels: c,
        data: out,
    })
}

/// Encodes `px` in the format the extension of `path` names (PNG unless `.jpg`/`.jpeg`) and
/// writes it atomically.
fn write_pixels(px: &Pixels, path: &Path) -> Result<()> {
    let format = match ::image::ImageFormat::from_path(path) {
        Ok(::image::ImageFormat::Jpeg) => ::image::ImageFormat::Jpeg,
        _ => ::image::ImageFormat::Png,
    };
    let color = if px.channels == 1 {
        ::image::ExtendedColorType::L8
    } else {
        ::image::ExtendedColorType::Rgb8
    };
    let bytes = encode(&px.data, px.width as u32, px.height as u32, color, format)
        .map_err(|e| output_err(path, format!("cannot encode the image: {e}")))?;
    write_atomic(path, &bytes)
}

/// Encodes raw 8-bit pixels to an in-memory PNG or JPEG file.
pub(crate) fn encode(
    data: &[u8],
    width: u32,
    height: u32,
    color: ::image::ExtendedColorType,
    format: ::image::ImageFormat,
) -> std::result::Result<Vec<u8>, ::image::ImageError> {
    use ::image::ImageEncoder;
    let mut bytes = Vec::new();
    match format {
        ::image::ImageFormat::Jpeg => {
            ::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
                .write_image(data, width, height, color)?
        }
        _ => ::image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(data, width, height, color)?,
    }
    Ok(bytes)
}
