//! Data sets: real image formats, built-in procedural digits, and the 2-D toy distributions.
//!
//! - [`idx`]: MNIST and Fashion-MNIST in IDX format, gzipped or not;
//! - [`cifar`]: CIFAR-10 binary batches;
//! - [`folder`]: any folder of PNG/JPEG images, optionally one sub-folder per class;
//! - [`digits`]: procedurally drawn digits 0-9, needing no files;
//! - [`toy`]: a ring of 8 and a 5x5 grid of Gaussians (2-D points, not images).
//!
//! Every image loader returns a [`Dataset`]: all images in one contiguous `f32` buffer in NCHW
//! order, normalised to [-1, 1] exactly as torchvision's `ToTensor()` followed by
//! `Normalize(0.5, 0.5)` does (`(v / 255 - 0.5) / 0.5`), with labels where the format has them.
//! A [`Batcher`] cuts a data set into shuffled batches, reproducibly for a seed. A [`DataSpec`]
//! is what the command line's `--data` says (`mnist:DIR`, `digits`, `ring8`, ...).
//!
//! Loaders never panic on bad input: a missing, truncated, corrupt or wrong-format file is an
//! [`Error::Data`] naming the file and the problem.

pub mod cifar;
pub mod digits;
pub mod folder;
pub mod idx;
pub mod toy;

use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor};
use crate::Device;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Maps a byte in 0..=255 to [-1, 1] exactly as torchvision's `ToTensor()` then
/// `Normalize(0.5, 0.5)`: `(v / 255 - 0.5) / 0.5`. 0 maps to -1 and 255 to 1.
#[inline]
pub fn normalize_u8(v: u8) -> f32 {
    (v as f32 / 255.0 - 0.5) / 0.5
}

/// Which part of a data set with a train/test split to load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// The training set (MNIST `train-*`, CIFAR-10 `data_batch_*`).
    #[default]
    Train,
    /// The test set (MNIST `t10k-*`, CIFAR-10 `test_batch*`).
    Test,
}

/// The colour mode images are converted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// One channel. RGB is converted with PIL's ITU-R 601-2 luma weights
    /// (`L = R * 299/1000 + G * 587/1000 + B * 114/1000`), as torchvision's `Grayscale` does.
    Gray,
    /// Three channels. Grayscale is replicated into R, G and B; alpha is dropped.
    Rgb,
}

impl ColorMode {
    /// Number of channels: 1 or 3.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Gray => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// A set of images in memory, normalised to [-1, 1], with optional labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// A short description (e.g. `mnist train`), for logs.
    pub name: String,
    /// All images, NCHW, row-major, one contiguous buffer of
    /// `len() * channels * height * width` values in [-1, 1].
    pub images: Vec<f32>,
    /// Channels per image: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// One label per image in `0..num_classes`, or `None` for unlabelled data.
    pub labels: Option<Vec<usize>>,
    /// Number of classes (0 for unlabelled data).
    pub num_classes: usize,
    /// Class names, indexed by label, where the format says them (empty otherwise).
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Builds a data set, checking that the buffer, the labels and the classes agree.
    pub fn new(
        name: impl Into<String>,
        images: Vec<f32>,
        [channels, height, width]: [usize; 3],
        labels: Option<Vec<usize>>,
        num_classes: usize,
        class_names: Vec<String>,
    ) -> Result<Dataset> {
        let name = name.into();
        let per = channels * height * width;
        if per == 0 || !images.len().is_multiple_of(per) {
            return Err(Error::data(
                &name,
                format!(
                    "{} values do not make whole images of {channels}x{height}x{width}",
                    images.len()
                ),
            ));
        }
        let n = images.len() / per;
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(Error::data(
                    &name,
                    format!("{} labels for {n} images", l.len()),
                ));
            }
            if let Some((i, &bad)) = l.iter().enumerate().find(|(_, &c)| c >= num_classes) {
                return Err(Error::data(
                    &name,
                    format!("label {bad} of image {i} is out of range 0..{num_classes}"),
                ));
            }
        }
        if !class_names.is_empty() && class_names.len() != num_classes {
            return Err(Error::data(
                &name,
                format!(
                    "{} class names for {num_classes} classes",
                    class_names.len()
                ),
            ));
        }
        Ok(Dataset {
            name,
            images,
            channels,
            height,
            width,
            labels,
            num_classes,
            class_names,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len() / self.image_len().max(1)
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[channels, height, width]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The values of image `i` (CHW), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let per = self.image_len();
        self.images.get(i * per..(i + 1) * per)
    }

    /// The label of image `i`, if the data set is labelled.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.as_ref().and_then(|l| l.get(i).copied())
    }

    /// Images per class (empty for unlabelled data).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        if let Some(l) = &self.labels {
            for &c in l {
                counts[c] += 1;
            }
        }
        counts
    }

    /// The images at `indices`, in that order, as a new data set with the same classes.
    /// Indices past the end are an error.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let per = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            let img = self.image(i).ok_or_else(|| {
                Error::data(
                    &self.name,
                    format!("subset index {i} past the end ({} images)", self.len()),
                )
            })?;
            images.extend_from_slice(img);
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        Ok(Dataset {
            images,
            labels,
            ..self.metadata()
        })
    }

    /// Keeps only the first `n` images (all of them when `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.images.truncate(n * self.image_len());
            if let Some(l) = &mut self.labels {
                l.truncate(n);
            }
        }
    }

    /// Converts every image to `mode` (see [`ColorMode`] for the formulas). A no-op when the
    /// images already have that many channels.
    pub fn to_color(&self, mode: ColorMode) -> Dataset {
        let want = mode.channels();
        if want == self.channels {
            return self.clone();
        }
        let plane = self.height * self.width;
        let mut images = Vec::with_capacity(self.len() * want * plane);
        for img in self.images.chunks_exact(self.image_len()) {
            match (self.channels, want) {
                (1, 3) => {
                    for _ in 0..3 {
                        images.extend_from_slice(img);
                    }
                }
                _ => {
                    // 3 -> 1 with the luma weights, computed on [0, 1] values.
                    let (r, rest) = img.split_at(plane);
                    let (g, b) = rest.split_at(plane);
                    for p in 0..plane {
                        let y = 0.299 * (r[p] + 1.0) + 0.587 * (g[p] + 1.0) + 0.114 * (b[p] + 1.0);
                        images.push((y - 1.0).clamp(-1.0, 1.0));
                    }
                }
            }
        }
        Dataset {
            images,
            channels: want,
            labels: self.labels.clone(),
            ..self.metadata()
        }
    }

    /// Resizes every image to `size x size`: the shorter side to `size` (Pillow's antialiased
    /// bilinear filter, on the float values), then a centre crop, as torchvision's
    /// `Resize(size)` then `CenterCrop(size)`. A no-op when the images already have that size.
    pub fn resized(&self, size: usize) -> Result<Dataset> {
        if size == 0 {
            return Err(Error::data(&self.name, "cannot resize images to size 0"));
        }
        if self.height == size && self.width == size {
            return Ok(self.clone());
        }
        let (c, h, w) = (self.channels, self.height, self.width);
        let out_len = c * size * size;
        let mut images = vec![0f32; self.len() * out_len];
        use rayon::prelude::*;
        images
            .par_chunks_mut(out_len)
            .zip(self.images.par_chunks(self.image_len()))
            .for_each(|(out, img)| {
                for (src, dst) in img
                    .chunks_exact(h * w)
                    .zip(out.chunks_exact_mut(size * size))
                {
                    folder::resize_crop_plane(
                        src,
                        (w, h),
                        size,
                        folder::resize_plane_f32,
                        dst,
                        |v| v.clamp(-1.0, 1.0),
                    );
                }
            });
        Ok(Dataset {
            images,
            height: size,
            width: size,
            labels: self.labels.clone(),
            ..self.metadata()
        })
    }

    /// Everything but the images and labels (which are left empty).
    fn metadata(&self) -> Dataset {
        Dataset {
            name: self.name.clone(),
            images: Vec::new(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            labels: None,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }
}

/// One batch from a [`Batcher`].
#[derive(Clone, Debug)]
pub struct Batch {
    /// The images, `[B, C, H, W]`.
    pub images: Tensor,
    /// Their labels, for labelled data sets.
    pub labels: Option<Vec<usize>>,
    /// The epoch this batch belongs to (from 0).
    pub epoch: usize,
    /// Its index within the epoch (from 0).
    pub index: usize,
}

/// Cuts a [`Dataset`] into batches, epoch after epoch, without end.
///
/// Each epoch visits every image once, in an order that is a permutation drawn from an
/// [`Rng`] seeded by `(seed, epoch)` alone (see [`Batcher::epoch_order`]), so the batches of
/// any epoch are reproducible and a resumed run can [`Batcher::seek`] straight to where it
/// stopped. By default the last partial batch of an epoch is **dropped** (every batch has
/// exactly `batch_size` images, as GAN training with batch norm wants); call
/// [`Batcher::drop_last`] with `false` to keep it.
#[derive(Clone, Debug)]
pub struct Batcher {
    data: Arc<Dataset>,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
    shuffle: bool,
    device: Device,
    epoch: usize,
    index: usize,
    order: Vec<usize>,
}

impl Batcher {
    /// A shuffling batcher over `data` that drops the last partial batch, on the CPU. Refuses a
    /// batch size of 0 and one larger than the data set.
    pub fn new(data: impl Into<Arc<Dataset>>, batch_size: usize, seed: u64) -> Result<Batcher> {
        let data = data.into();
        if batch_size == 0 {
            return Err(Error::invalid("batcher", "batch size must be at least 1"));
        }
        if data.len() < batch_size {
            return Err(Error::invalid(
                "batcher",
                format!(
                    "batch size {batch_size} is larger than the data set {} ({} images); \
                     lower --batch-size",
                    data.name,
                    data.len()
                ),
            ));
        }
        let mut b = Batcher {
            data,
            batch_size,
            seed,
            drop_last: true,
            shuffle: true,
            device: Device::Cpu,
            epoch: 0,
            index: 0,
            order: Vec::new(),
        };
        b.order = b.epoch_order(0);
        Ok(b)
    }

    /// Keep (`false`) or drop (`true`, the default) the last partial batch of each epoch.
    pub fn drop_last(mut self, on: bool) -> Batcher {
        self.drop_last = on;
        self
    }

    /// Shuffle each epoch (`true`, the default) or visit images in order.
    pub fn shuffle(mut self, on: bool) -> Batcher {
        self.shuffle = on;
        self.order = self.epoch_order(self.epoch);
        self
    }

    /// Put the batches' image tensors on `device`.
    pub fn on_device(mut self, device: Device) -> Batcher {
        self.device = device;
        self
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.data
    }

    /// Images per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.data.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The epoch the next batch comes from.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The index within its epoch of the next batch.
    pub fn index_in_epoch(&self) -> usize {
        self.index
    }

    /// The order in which epoch `epoch` visits the images: a permutation of `0..len` drawn
    /// with an [`Rng`] seeded from `(seed, epoch)`, or `0..len` when shuffling is off.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if self.shuffle {
            let mut rng =
                Rng::new(self.seed ^ (epoch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            rng.shuffle(&mut order);
        }
        order
    }

    /// Continue from batch `index` of epoch `epoch` (for resuming a run). An index past the
    /// end of the epoch moves to the start of the next one.
    pub fn seek(&mut self, epoch: usize, index: usize) {
        if index >= self.batches_per_epoch() {
            self.epoch = epoch + 1;
            self.index = 0;
        } else {
            self.epoch = epoch;
            self.index = index;
        }
        self.order = self.epoch_order(self.epoch);
    }

    /// The next batch, moving on to a freshly shuffled epoch when this one is done.
    pub fn next_batch(&mut self) -> Result<Batch> {
        if self.index >= self.batches_per_epoch() {
            self.seek(self.epoch + 1, 0);
        }
        let start = self.index * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let idx = &self.order[start..end];
        let per = self.data.image_len();
        let mut images = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            images.extend_from_slice(&self.data.images[i * per..(i + 1) * per]);
        }
        let labels = self
            .data
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect());
        let [c, h, w] = self.data.image_shape();
        let images = Tensor::from_vec_on(images, [idx.len(), c, h, w], &self.device)?;
        let batch = Batch {
            images,
            labels,
            epoch: self.epoch,
            index: self.index,
        };
        self.index += 1;
        Ok(batch)
    }
}

impl Iterator for Batcher {
    type Item = Result<Batch>;

    /// Always `Some`: the batcher runs epoch after epoch; use `take` to stop.
    fn next(&mut self) -> Option<Result<Batch>> {
        Some(self.next_batch())
    }
}

/// Where the training data comes from, as written on the command line (`--data`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    /// `mnist:DIR`: the four MNIST IDX files (gzipped or not) in DIR.
    Mnist(PathBuf),
    /// `fashion-mnist:DIR`: the Fashion-MNIST IDX files in DIR.
    FashionMnist(PathBuf),
    /// `cifar10:DIR`: CIFAR-10 binary batches in DIR.
    Cifar10(PathBuf),
    /// `folder:DIR`: PNG/JPEG images in DIR, or in one sub-folder per class.
    Folder(PathBuf),
    /// `digits`: the built-in procedurally drawn digits.
    Digits,
    /// `ring8`: 2-D points from a ring of 8 Gaussians.
    Ring8,
    /// `grid25`: 2-D points from a 5x5 grid of Gaussians.
    Grid25,
}

/// The forms a [`DataSpec`] can take, for messages.
pub const DATA_SPEC_FORMS: &str =
    "mnist:DIR, fashion-mnist:DIR, cifar10:DIR, folder:DIR, digits, ring8, grid25";

impl DataSpec {
    /// The side of the data's images as stored (28 for MNIST, Fashion-MNIST and the built-in
    /// digits, 32 for CIFAR-10); `None` for folders (any size) and 2-D points.
    pub fn native_image_size(&self) -> Option<usize> {
        match self {
            DataSpec::Mnist(_) | DataSpec::FashionMnist(_) => Some(28),
            DataSpec::Digits => Some(digits::SIZE),
            DataSpec::Cifar10(_) => Some(32),
            DataSpec::Folder(_) | DataSpec::Ring8 | DataSpec::Grid25 => None,
        }
    }

    /// Parses `mnist:DIR`, `fashion-mnist:DIR`, `cifar10:DIR`, `folder:DIR`, `digits`,
    /// `ring8` or `grid25` (the kind is case-insensitive; `_` may stand for `-`).
    pub fn parse(s: &str) -> Result<DataSpec> {
        let s = s.trim();
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let kind = kind.to_ascii_lowercase().replace('_', "-");
        let dir = |name: &str| -> Result<PathBuf> {
            match arg {
                Some(a) if !a.is_empty() => Ok(PathBuf::from(a)),
                _ => Err(Error::invalid(
                    "--data",
                    format!("`{name}` needs a directory: write `{name}:DIR`"),
                )),
            }
        };
        let plain = |spec: DataSpec, name: &str| -> Result<DataSpec> {
            match arg {
                None => Ok(spec),
                Some(a) => Err(Error::invalid(
                    "--data",
                    format!("`{name}` is built in and takes no argument (got `{name}:{a}`)"),
                )),
            }
        };
        match kind.as_str() {
            "mnist" => Ok(DataSpec::Mnist(dir("mnist")?)),
            "fashion-mnist" | "fashionmnist" => Ok(DataSpec::FashionMnist(dir("fashion-mnist")?)),
            "cifar10" | "cifar-10" => Ok(DataSpec::Cifar10(dir("cifar10")?)),
            "folder" => Ok(DataSpec::Folder(dir("folder")?)),
            "digits" => plain(DataSpec::Digits, "digits"),
            "ring8" => plain(DataSpec::Ring8, "ring8"),
            "grid25" => plain(DataSpec::Grid25, "grid25"),
            _ => Err(Error::invalid(
                "--data",
                format!("unknown data spec `{s}`; expected one of {DATA_SPEC_FORMS}"),
            )),
        }
    }

    /// True for the 2-D point distributions (`ring8`, `grid25`), which are not images.
    pub fn is_points(&self) -> bool {
        matches!(self, DataSpec::Ring8 | DataSpec::Grid25)
    }

    /// The directory of a file-backed spec.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataSpec::Mnist(p)
            | DataSpec::FashionMnist(p)
            | DataSpec::Cifar10(p)
            | DataSpec::Folder(p) => Some(p),
            _ => None,
        }
    }

    /// Loads the data: a [`Dataset`] of images, or the [`toy::GaussianMixture`] to sample
    /// points from. For images, `opts` picks the split, and optionally a size and a colour
    /// mode to convert to (a folder's images default to 64x64 RGB; the others keep their
    /// native size and mode unless asked).
    pub fn load(&self, opts: &LoadOptions) -> Result<Data> {
        let ds = match self {
            DataSpec::Ring8 => return Ok(Data::Points(toy::GaussianMixture::ring8())),
            DataSpec::Grid25 => return Ok(Data::Points(toy::GaussianMixture::grid25())),
            DataSpec::Mnist(d) => idx::load_mnist(d, opts.split)?,
            DataSpec::FashionMnist(d) => idx::load_fashion_mnist(d, opts.split)?,
            DataSpec::Cifar10(d) => cifar::load_cifar10(d, opts.split)?,
            DataSpec::Folder(d) => {
                return Ok(Data::Images(folder::load_folder(
                    d,
                    opts.image_size.unwrap_or(folder::DEFAULT_SIZE),
                    opts.color.unwrap_or(ColorMode::Rgb),
                )?))
            }
            DataSpec::Digits => {
                // The test split draws from a different stream than the train split.
                let seed = match opts.split {
                    Split::Train => opts.seed,
                    Split::Test => opts.seed ^ 0x7E57_7E57_7E57_7E57,
                };
                digits::generate(
                    opts.digits_count,
                    opts.image_size.unwrap_or(digits::SIZE),
                    seed,
                )?
            }
        };
        let ds = match opts.color {
            Some(mode) => ds.to_color(mode),
            None => ds,
        };
        let ds = match opts.image_size {
            Some(size) => ds.resized(size)?,
            None => ds,
        };
        Ok(Data::Images(ds))
    }

    /// Loads an image data set; the point distributions are an error.
    pub fn load_images(&self, opts: &LoadOptions) -> Result<Dataset> {
        match self.load(opts)? {
            Data::Images(ds) => Ok(ds),
            Data::Points(_) => Err(Error::invalid(
                "--data",
                format!("`{self}` is a set of 2-D points, not images"),
            )),
        }
    }
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<DataSpec> {
        DataSpec::parse(s)
    }
}

impl fmt::Display for DataSpec {
    /// The spec as it is written on the command line (parses back to itself).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Mnist(p) => write!(f, "mnist:{}", p.display()),
            DataSpec::FashionMnist(p) => write!(f, "fashion-mnist:{}", p.display()),
            DataSpec::Cifar10(p) => write!(f, "cifar10:{}", p.display()),
            DataSpec::Folder(p) => write!(f, "folder:{}", p.display()),
            DataSpec::Digits => write!(f, "digits"),
            DataSpec::Ring8 => write!(f, "ring8"),
            DataSpec::Grid25 => write!(f, "grid25"),
        }
    }
}

/// How to load a [`DataSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Train or test split (folders have none and ignore it).
    pub split: Split,
    /// Resize images to this square size (a folder defaults to 64; others keep their size).
    pub image_size: Option<usize>,
    /// Convert images to this colour mode (a folder defaults to RGB; others keep theirs).
    pub color: Option<ColorMode>,
    /// How many built-in digits to draw (the test split draws as many from another stream).
    pub digits_count: usize,
    /// Seed of the built-in digits.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            split: Split::Train,
            image_size: None,
            color: None,
            digits_count: digits::DEFAULT_COUNT,
            seed: 0,
        }
    }
}

/// What a [`DataSpec`] loads to.
#[derive(Clone, Debug)]
pub enum Data {
    /// Images (MNIST, CIFAR-10, a folder, the built-in digits).
    Images(Dataset),
    /// A 2-D distribution to sample points from (`ring8`, `grid25`).
    Points(toy::GaussianMixture),
}

/// The ten digit class names `"0"` to `"9"`.
pub(crate) fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Dataset {
        let images = (0..n * 4).map(|v| v as f32).collect();
        let labels = (0..n).map(|i| i % 2).collect();
        Dataset::new("tiny", images, [1, 2, 2], Some(labels), 2, vec![]).unwrap()
    }

    #[test]
    fn spec_round_trips_and_rejects_unknown() {
        for s in [
            "mnist:/a/b",
            "fashion-mnist:x",
            "cifar10:c",
            "folder:C:\\imgs",
            "digits",
            "ring8",
            "grid25",
        ] {
            let spec = DataSpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(
            DataSpec::parse("MNIST:d").unwrap(),
            DataSpec::Mnist("d".into())
        );
        let e = DataSpec::parse("imagenet:/x").unwrap_err().to_string();
        assert!(
            e.contains("unknown data spec `imagenet:/x`") && e.contains("mnist:DIR"),
            "{e}"
        );
        let e = DataSpec::parse("mnist").unwrap_err().to_string();
        assert!(e.contains("mnist:DIR"), "{e}");
        assert!(DataSpec::parse("digits:3").is_err());
    }

    #[test]
    fn batcher_keeps_or_drops_the_partial_batch() {
        let b = Batcher::new(tiny(10), 4, 1).unwrap();
        assert_eq!(b.batches_per_epoch(), 2);
        let mut b = b.drop_last(false);
        assert_eq!(b.batches_per_epoch(), 3);
        let sizes: Vec<usize> = (0..3)
            .map(|_| b.next_batch().unwrap().images.dims()[0])
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(b.next_batch().unwrap().epoch, 1);
        assert!(Batcher::new(tiny(3), 4, 1).is_err());
        assert!(Batcher::new(tiny(3), 0, 1).is_err());
    }

    #[test]
    fn color_and_resize_conversions() {
        let ds = Dataset::new("g", vec![1.0; 2 * 4 * 4], [1, 4, 4], None, 0, vec![]).unwrap();
        let rgb = ds.to_color(ColorMode::Rgb);
        assert_eq!(rgb.image_shape(), [3, 4, 4]);
        assert_eq!(rgb.len(), 2);
        let back = rgb.to_color(ColorMode::Gray);
        assert!(back.images.iter().all(|&v| (v - 1.0).abs() < 1e-5));
        let small = rgb.resized(2).unwrap();
        assert_eq!(small.image_shape(), [3, 2, 2]);
        assert!(small.images.iter().all(|&v| (v - 1.0).abs() < 1e-5));
        assert_eq!(normalize_u8(0), -1.0);
        assert_eq!(normalize_u8(255), 1.0);
    }
}
