//! Files a training run leaves behind: sample grids ([`image`]), loss and scatter plots
//! ([`plot`]), safetensors checkpoints PyTorch can read ([`checkpoint`]) and a JSON-lines
//! metrics log ([`metrics`]).
//!
//! Every writer creates missing parent folders and writes atomically: to `<path>.tmp` beside
//! the target, fsync, then rename over the target. A crash or a kill mid-write leaves either
//! the old file or the new one at `path`, never half of one. Errors name the file.

pub mod checkpoint;
pub mod image;
pub mod metrics;
pub mod plot;

pub use self::checkpoint::{load_checkpoint, save_checkpoint, Checkpoint};
pub use self::image::{save_image, save_image_grid, save_image_grid_raw};
pub use self::metrics::{read_metrics, truncate_metrics_after, MetricsLog};
pub use self::plot::{plot_lines, plot_scatter};

use crate::error::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An [`Error::Io`] naming `path`.
pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An [`Error::Output`] naming `path`.
pub(crate) fn output_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Output {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// The temporary file an atomic write of `path` goes through: `path` with `.tmp` appended to
/// its file name (`ckpt.safetensors` → `ckpt.safetensors.tmp`), in the same folder so the
/// final rename never crosses file systems.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Creates the folder `path` will live in, if it is missing.
pub(crate) fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically: to [`tmp_path`], fsync, rename over `path`, then fsync
/// the folder so the rename itself survives a power cut. On failure the temporary file is
/// removed and whatever was at `path` before is left untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.file_name().is_none() {
        return Err(output_err(path, "not a file path"));
    }
    create_parent(path)?;
    let tmp = tmp_path(path);
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // Only a regular file we may have made is removed; never a folder in the way.
        if tmp.is_file() {
            let _ = fs::remove_file(&tmp);
        }
        return Err(io_err(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    sync_parent(path);
    Ok(())
}

/// Best-effort fsync of the folder holding `path` (makes a rename durable on Unix).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
