//! CIFAR-10 in its binary version (`cifar-10-batches-bin`).
//!
//! # The format, byte by byte
//!
//! A batch file is a plain sequence of 3,073-byte records, with no header:
//!
//! | offset in record | size | what |
//! |---|---|---|
//! | 0 | 1 | label, 0-9 |
//! | 1 | 1024 | red plane, 32x32, row-major |
//! | 1025 | 1024 | green plane |
//! | 2049 | 1024 | blue plane |
//!
//! The pixels are therefore already in CHW order. A full batch holds 10,000 records
//! (30,730,000 bytes). The training split is the files `data_batch_*.bin` (in the order of
//! their number), the test split the files `test_batch*.bin` (`test_batch.bin`, and subsets
//! such as `test_batch_first1000.bin`, in name order). Class names come from
//! `batches.meta.txt` (one a line) when it is present, else the standard ten. The files may
//! also sit in a `cifar-10-batches-bin/` sub-folder.

use super::{normalize_u8, Dataset, Split};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Bytes per record: 1 label byte and 3x32x32 pixel bytes.
pub const RECORD_LEN: usize = 1 + 3 * 32 * 32;

/// The standard CIFAR-10 class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Parses one batch file's bytes, appending normalised pixels and labels. `path` is for
/// messages.
pub fn parse_batch(
    path: &Path,
    bytes: &[u8],
    images: &mut Vec<f32>,
    labels: &mut Vec<usize>,
) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(Error::data(
            path,
            format!(
                "size {} bytes is not a whole number of {RECORD_LEN}-byte CIFAR-10 records \
                 ({} records and {} bytes left over)",
                bytes.len(),
                bytes.len() / RECORD_LEN,
                bytes.len() % RECORD_LEN
            ),
        ));
    }
    for (i, rec) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        if rec[0] > 9 {
            return Err(Error::data(
                path,
                format!("label {} of record {i} is out of range 0..10", rec[0]),
            ));
        }
        labels.push(rec[0] as usize);
        images.extend(rec[1..].iter().map(|&v| normalize_u8(v)));
    }
    Ok(())
}

/// The batch files of `split` in `dir`, in order; an error lists what was looked for.
pub fn find_batches(dir: &Path, split: Split) -> Result<Vec<PathBuf>> {
    let sub = dir.join("cifar-10-batches-bin");
    let dir = if sub.is_dir() { sub } else { dir.to_path_buf() };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| Error::data(&dir, format!("cannot list the CIFAR-10 folder: {e}")))?;
    let mut found: Vec<(u64, String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Error::data(&dir, format!("cannot list the CIFAR-10 folder: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".bin") else {
            continue;
        };
        let key = match split {
            Split::Train => match stem.strip_prefix("data_batch_") {
                Some(num) => match num.parse::<u64>() {
                    Ok(k) => k,
                    Err(_) => continue,
                },
                None => continue,
            },
            Split::Test if stem.starts_with("test_batch") => 0,
            Split::Test => continue,
        };
        found.push((key, name.clone(), entry.path()));
    }
    if found.is_empty() {
        let want = match split {
            Split::Train => "data_batch_*.bin",
            Split::Test => "test_batch*.bin",
        };
        return Err(Error::data(
            &dir,
            format!("no CIFAR-10 batch files: looked for {want}"),
        ));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, p)| p).collect())
}

/// Class names from `batches.meta.txt` beside the batches, or the standard ones.
fn class_names(dir: &Path) -> Vec<String> {
    for d in [dir.join("cifar-10-batches-bin"), dir.to_path_buf()] {
        if let Ok(text) = std::fs::read_to_string(d.join("batches.meta.txt")) {
            let names: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if names.len() == 10 {
                return names;
            }
        }
    }
    CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
}

/// Loads CIFAR-10's `split` from `dir`: 3x32x32 images in [-1, 1] with labels 0-9.
pub fn load_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let files = find_batches(dir, split)?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| Error::data(f, format!("cannot read: {e}")))?;
        parse_batch(f, &bytes, &mut images, &mut labels)?;
    }
    let name = match split {
        Split::Train => "cifar10 train",
        Split::Test => "cifar10 test",
    };
    Dataset::new(
        name,
        images,
        [3, 32, 32],
        Some(labels),
        10,
        class_names(dir),
    )
}
