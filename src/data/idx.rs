//! MNIST and Fashion-MNIST in IDX format, gzipped or not.
//!
//! # The IDX format, byte by byte
//!
//! All integers are big-endian.
//!
//! | offset | size | what |
//! |---|---|---|
//! | 0 | 2 | zero |
//! | 2 | 1 | element type: `0x08` = unsigned byte (the only one MNIST uses) |
//! | 3 | 1 | number of dimensions `d` |
//! | 4 | 4·d | each dimension as a `u32`, outermost first |
//! | 4 + 4·d | product of dims | the elements, row-major |
//!
//! So an image file starts with magic `0x00000803` and dims `N, 28, 28` followed by `N·784`
//! pixel bytes (0 = background, 255 = ink); a label file starts with magic `0x00000801` and
//! dim `N` followed by `N` label bytes (0-9). A file is gzipped when it starts with the gzip
//! magic `1f 8b`; this is detected from the bytes, not the name.
//!
//! A directory holds the standard file names: `train-images-idx3-ubyte`,
//! `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each
//! optionally with `.gz` (the `train-images.idx3-ubyte` spelling is accepted too, and so is a
//! torchvision-style `raw/` sub-folder).

use super::{digit_names, normalize_u8, Dataset, Split};
use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The Fashion-MNIST class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Opens `path` for reading, through a gzip decoder when the file starts with `1f 8b`
/// (the flag says which).
fn open_maybe_gz(path: &Path) -> Result<(Box<dyn Read>, bool)> {
    let file = File::open(path).map_err(|e| Error::data(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| Error::data(path, format!("cannot read: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(MultiGzDecoder::new(reader)), true))
    } else {
        Ok((Box::new(reader), false))
    }
}

/// Reads as many bytes as `buf` holds or up to the end, returning how many were read.
fn read_full(r: &mut dyn Read, buf: &mut [u8], path: &Path, gz: bool) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, e, gz)),
        }
    }
    Ok(got)
}

fn read_error(path: &Path, e: std::io::Error, gz: bool) -> Error {
    if gz {
        Error::data(path, format!("corrupt or truncated gzip data ({e})"))
    } else {
        Error::data(path, format!("cannot read: {e}"))
    }
}

/// Reads an IDX file of unsigned bytes whose magic must be `expected` (e.g. [`IMAGES_MAGIC`]).
/// `what` names the elements in messages ("pixel", "label").
pub fn read_idx(path: &Path, expected: u32, what: &str) -> Result<IdxArray> {
    let (mut r, gz) = open_maybe_gz(path)?;
    let mut magic = [0u8; 4];
    let got = read_full(&mut *r, &mut magic, path, gz)?;
    if got < 4 {
        return Err(Error::data(
            path,
            format!("file too short for an IDX header ({got} bytes)"),
        ));
    }
    let magic = u32::from_be_bytes(magic);
    if magic != expected {
        let hint = match magic {
            IMAGES_MAGIC => " (this is an IDX images file)",
            LABELS_MAGIC => " (this is an IDX labels file)",
            _ => "",
        };
        return Err(Error::data(
            path,
            format!("bad IDX magic 0x{magic:08x}, expected 0x{expected:08x}{hint}"),
        ));
    }
    let ndim = (expected & 0xff) as usize;
    let mut dims_raw = vec![0u8; 4 * ndim];
    let got = read_full(&mut *r, &mut dims_raw, path, gz)?;
    if got < dims_raw.len() {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX header: expected {} bytes of dimensions, found {got}",
                dims_raw.len()
            ),
        ));
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&c| c <= 1 << 40)
        .ok_or_else(|| Error::data(path, format!("IDX dimensions {dims:?} are too large")))?;
    // Grow the buffer as data arrives: a lying header cannot make us allocate terabytes.
    let mut data = Vec::with_capacity(count.min(1 << 28));
    (&mut r)
        .take(count as u64)
        .read_to_end(&mut data)
        .map_err(|e| read_error(path, e, gz))?;
    if data.len() < count {
        return Err(Error::data(
            path,
            format!(
                "truncated: expected {count} bytes of {what} data for dims {dims:?}, found {}",
                data.len()
            ),
        ));
    }
    let mut extra = [0u8; 1];
    if read_full(&mut *r, &mut extra, path, gz)? > 0 {
        return Err(Error::data(
            path,
            format!("unexpected bytes after the {count} bytes of {what} data for dims {dims:?}"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Loads an images file and a labels file that belong together. Images are normalised to
/// [-1, 1] as 1-channel `H x W` images; labels must be below `num_classes`.
pub fn load_idx_pair(
    images_path: &Path,
    labels_path: &Path,
    name: &str,
    num_classes: usize,
    class_names: Vec<String>,
) -> Result<Dataset> {
    let images = read_idx(images_path, IMAGES_MAGIC, "pixel")?;
    let labels = read_idx(labels_path, LABELS_MAGIC, "label")?;
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if h == 0 || w == 0 {
        return Err(Error::data(
            images_path,
            format!("IDX images have an empty size {h}x{w}"),
        ));
    }
    if labels.dims[0] != n {
        return Err(Error::data(
            labels_path,
            format!(
                "{} labels for {n} images in {}",
                labels.dims[0],
                images_path.display()
            ),
        ));
    }
    if let Some((i, &bad)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(Error::data(
            labels_path,
            format!("label {bad} at index {i} is out of range 0..{num_classes}"),
        ));
    }
    let pixels = images.data.iter().map(|&v| normalize_u8(v)).collect();
    let labels = labels.data.iter().map(|&l| l as usize).collect();
    Dataset::new(
        name,
        pixels,
        [1, h, w],
        Some(labels),
        num_classes,
        class_names,
    )
}

/// The file names tried for `stem` (e.g. `train-images-idx3-ubyte`), in order.
fn candidates(stem: &str) -> Vec<String> {
    // The torchvision/Kaggle spelling puts a dot before `idx`.
    let dotted = stem.replacen("-idx", ".idx", 1);
    vec![
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// Finds the file for `stem` in `dir` or `dir/raw`; the error lists every name looked for.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let names = candidates(stem);
    for d in [dir.to_path_buf(), dir.join("raw")] {
        for n in &names {
            let p = d.join(n);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let why = if dir.is_dir() {
        "no such file"
    } else {
        "no such directory"
    };
    Err(Error::data(
        dir,
        format!("{why}: looked for {} (here and in raw/)", names.join(", ")),
    ))
}

/// The images and labels files of `split` in `dir`.
pub fn find_split_files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    Ok((
        find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?,
        find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?,
    ))
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Loads MNIST's `split` from `dir` (classes `"0"` to `"9"`).
pub fn load_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let (images, labels) = find_split_files(dir, split)?;
    load_idx_pair(
        &images,
        &labels,
        &format!("mnist {}", split_name(split)),
        10,
        digit_names(),
    )
}

/// Loads Fashion-MNIST's `split` from `dir` (classes [`FASHION_MNIST_CLASSES`]).
pub fn load_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let (images, labels) = find_split_files(dir, split)?;
    load_idx_pair(
        &images,
        &labels,
        &format!("fashion-mnist {}", split_name(split)),
        10,
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}
