//! Checkpoints as plain safetensors files: f32 little-endian tensors under PyTorch state-dict
//! names (`generator.main.0.weight`), plus string metadata (step, epoch, config). PyTorch reads
//! them with `safetensors.torch.load_file(path)`; the metadata comes back through
//! `safetensors.safe_open(path, "pt").metadata()`.
//!
//! ```no_run
//! use ganforge::io::{load_checkpoint, save_checkpoint};
//! use ganforge::Tensor;
//! use std::collections::BTreeMap;
//! use std::path::Path;
//! let w = Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap();
//! let meta = BTreeMap::from([("step".to_string(), "100".to_string())]);
//! save_checkpoint(Path::new("run/ckpt.safetensors"), &[("generator.w".into(), w)], &meta).unwrap();
//! let ckpt = load_checkpoint(Path::new("run/ckpt.safetensors")).unwrap();
//! let g = ckpt.with_prefix("generator"); // {"w": tensor}, ready for Module::load_state_dict
//! assert_eq!(g["w"].to_vec(), vec![1.0, 2.0]);
//! ```

use super::write_atomic;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A checkpoint read back from disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The tensors, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The string metadata saved with them (the safetensors `__metadata__` header).
    pub metadata: BTreeMap<String, String>,
    /// The file it was read from, named in error messages.
    pub path: PathBuf,
}

fn st_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::SafeTensors {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Writes a checkpoint atomically: to `path.tmp` in the same directory, fsync, then rename over
/// `path`, so a crash or kill never leaves a broken file at `path`. Tensors are stored as f32
/// little-endian under the names given (PyTorch state-dict names like
/// `"generator.main.0.weight"`); names must be unique.
pub fn save_checkpoint(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut raw: Vec<(&str, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(st_err(path, format!("tensor name `{name}` appears twice")));
        }
        let bytes: Vec<u8> = t.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
        raw.push((name, t.dims().to_vec(), bytes));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, shape, bytes) in &raw {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| st_err(path, format!("tensor `{name}`: {e}")))?;
        views.push((*name, view));
    }
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| st_err(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`save_checkpoint`] (or by PyTorch's
/// `safetensors.torch.save_file` with f32 tensors). A missing, truncated or corrupt file, or a
/// tensor of another dtype, is an error naming the file and the problem.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| super::io_err(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        st_err(
            path,
            format!(
                "not a readable safetensors file ({e}); it may be truncated or corrupt, \
                 e.g. from a copy that did not finish"
            ),
        )
    })?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| st_err(path, e.to_string()))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut tensors = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(st_err(
                path,
                format!(
                    "tensor `{name}` has dtype {:?}; only F32 tensors can be loaded \
                     (in PyTorch, convert with `.float()` before saving)",
                    view.dtype()
                ),
            ));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let t = Tensor::from_vec(data, view.shape().to_vec())
            .map_err(|e| st_err(path, format!("tensor `{name}`: {e}")))?;
        tensors.push((name, t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint {
        tensors,
        metadata,
        path: path.to_path_buf(),
    })
}

impl Checkpoint {
    /// The tensor called `name`; the error names the missing key and the file.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                let shown: Vec<&str> = self
                    .tensors
                    .iter()
                    .take(6)
                    .map(|(n, _)| n.as_str())
                    .collect();
                Error::StateDict(format!(
                    "{}: no tensor named `{name}` (the file has {} tensors: {}{})",
                    self.path.display(),
                    self.tensors.len(),
                    shown.join(", "),
                    if self.tensors.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ))
            })
    }

    /// The entries under `"prefix."` with the prefix stripped (`with_prefix("generator")` maps
    /// `generator.main.0.weight` to `main.0.weight`), ready for `Module::load_state_dict`.
    /// An empty prefix returns every entry. Tensors share data with the checkpoint.
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        let dotted = if prefix.is_empty() || prefix.ends_with('.') {
            prefix.to_string()
        } else {
            format!("{prefix}.")
        };
        self.tensors
            .iter()
            .filter_map(|(n, t)| {
                n.strip_prefix(&dotted)
                    .map(|rest| (rest.to_string(), t.clone()))
            })
            .collect()
    }

    /// The metadata value under `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }
}
