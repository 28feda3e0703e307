//! The feature networks: small CNN classifiers trained with the engine itself, whose
//! penultimate layer (128 values after a ReLU) is the feature space of the metrics.
//!
//! Two architectures (PyTorch equivalents; parameter names match `features.*` and `head.*`):
//!
//! ```text
//! lenet (1x28x28: MNIST, Fashion-MNIST, the built-in digits), 184k parameters, ~0.7 MB:
//!   features = Sequential(
//!     0 Conv2d(1, 32, 5)  1 ReLU  2 AvgPool2d(2)        # 32x24x24 -> 32x12x12
//!     3 Conv2d(32, 64, 5) 4 ReLU  5 AvgPool2d(2)        # 64x8x8   -> 64x4x4
//!     6 Flatten  7 Linear(1024, 128)  8 ReLU)           # -> 128 features
//!   head = Linear(128, 10)  (after Dropout(0.3) in training)
//!
//! convnet (3x32x32: CIFAR-10), 0.40M parameters, ~1.6 MB:
//!   features = Sequential(
//!     Conv2d(3, 32, 3, padding=1) BN ReLU  Conv2d(32, 32, 3, padding=1) BN ReLU  AvgPool2d(2)
//!     Conv2d(32, 64, 3, padding=1) BN ReLU Conv2d(64, 64, 3, padding=1) BN ReLU  AvgPool2d(2)
//!     Conv2d(64, 128, 3, padding=1) BN ReLU                               AvgPool2d(2)
//!     Flatten  Linear(2048, 128)  ReLU)                 # -> 128 features
//!   head = Linear(128, 10)  (after Dropout(0.3) in training)
//! ```
//!
//! A trained network is saved as a safetensors checkpoint ([`Classifier::save`]) with its
//! metadata (architecture, data set, classes, test accuracy) and the short hash of its
//! weights ([`weights_hash`]) that every metric computed with it reports as `feature_net`.

use super::Features;
use crate::autograd::no_grad;
use crate::backend::Device;
use crate::data::{Batcher, Dataset};
use crate::error::{Error, Result};
use crate::io::{load_checkpoint, save_checkpoint};
use crate::nn::{
    prefixed, BatchNorm, Conv2d, Conv2dConfig, Dropout, Flatten, Linear, Module, Relu, Sequential,
};
use crate::ops::BatchNormParams;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::tensor::{Rng, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The `format` metadata value of a classifier checkpoint.
pub const CLASSIFIER_FORMAT: &str = "ganforge-classifier/1";
/// Width of the feature layer of both architectures.
pub const FEATURE_DIM: usize = 128;
/// Dropout before the head, in training.
pub const DROPOUT: f32 = 0.3;

/// The classifier architectures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// LeNet-style CNN for 1x28x28 images.
    Lenet,
    /// A VGG-style CNN with batch norm for 3x32x32 images.
    Convnet,
}

impl Arch {
    /// `"lenet"` or `"convnet"` (the name in metric keys).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Lenet => "lenet",
            Arch::Convnet => "convnet",
        }
    }

    /// Parses [`Arch::name`].
    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "lenet" => Ok(Arch::Lenet),
            "convnet" => Ok(Arch::Convnet),
            _ => Err(Error::invalid(
                "classifier",
                format!("unknown architecture `{s}` (expected lenet or convnet)"),
            )),
        }
    }

    /// The image shape it takes, `[C, H, W]`.
    pub fn input_shape(self) -> [usize; 3] {
        match self {
            Arch::Lenet => [1, 28, 28],
            Arch::Convnet => [3, 32, 32],
        }
    }

    /// The architecture for images of `[C, H, W]`: lenet for 1x28x28, convnet for 3x32x32.
    pub fn for_images(shape: [usize; 3]) -> Result<Arch> {
        match shape {
            [1, 28, 28] => Ok(Arch::Lenet),
            [3, 32, 32] => Ok(Arch::Convnet),
            [c, h, w] => Err(Error::invalid(
                "classifier",
                format!(
                    "no classifier architecture for {c}x{h}x{w} images: lenet takes 1x28x28 \
                     (MNIST, Fashion-MNIST, digits), convnet 3x32x32 (CIFAR-10)"
                ),
            )),
        }
    }
}

/// 2x2 average pooling as a module.
struct AvgPool2;

impl Module for AvgPool2 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2x2()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// A CNN classifier whose penultimate layer is the metrics' feature space.
pub struct Classifier {
    arch: Arch,
    num_classes: usize,
    features: Sequential,
    dropout: Dropout,
    head: Linear,
    training: AtomicBool,
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    padding: usize,
    rng: &mut Rng,
    dev: &Device,
) -> Result<Conv2d> {
    Conv2d::new(
        Conv2dConfig {
            in_channels: cin,
            out_channels: cout,
            kernel_size: k,
            stride: 1,
            padding,
            bias: true,
        },
        rng,
        dev,
    )
}

impl Classifier {
    /// A freshly initialised classifier (PyTorch's default init) for `num_classes` classes.
    pub fn new(arch: Arch, num_classes: usize, rng: &mut Rng, dev: &Device) -> Result<Self> {
        if num_classes < 2 {
            return Err(Error::invalid(
                "classifier",
                format!("needs at least 2 classes, got {num_classes}"),
            ));
        }
        let features = match arch {
            Arch::Lenet => Sequential::new()
                .push(conv(1, 32, 5, 0, rng, dev)?)
                .push(Relu)
                .push(AvgPool2)
                .push(conv(32, 64, 5, 0, rng, dev)?)
                .push(Relu)
                .push(AvgPool2)
                .push(Flatten)
                .push(Linear::with_bias(64 * 4 * 4, FEATURE_DIM, rng, dev)?)
                .push(Relu),
            Arch::Convnet => {
                let bn = |c| BatchNorm::new(c, BatchNormParams::default(), dev);
                let mut s = Sequential::new();
                let mut cin = 3;
                for widths in [&[32, 32][..], &[64, 64], &[128]] {
                    for &w in widths {
                        s = s
                            .push(conv(cin, w, 3, 1, rng, dev)?)
                            .push(bn(w)?)
                            .push(Relu);
                        cin = w;
                    }
                    s = s.push(AvgPool2);
                }
                s.push(Flatten)
                    .push(Linear::with_bias(128 * 4 * 4, FEATURE_DIM, rng, dev)?)
                    .push(Relu)
            }
        };
        Ok(Classifier {
            arch,
            num_classes,
            features,
            dropout: Dropout::new(DROPOUT, rng)?,
            head: Linear::with_bias(FEATURE_DIM, num_classes, rng, dev)?,
            training: AtomicBool::new(true),
        })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// True in training mode (dropout on, batch norm on batch statistics); a new network
    /// starts in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Width of the feature layer ([`FEATURE_DIM`]).
    pub fn feature_dim(&self) -> usize {
        FEATURE_DIM
    }

    /// The penultimate-layer features `[N, 128]` of images `[N, C, H, W]` in `[-1, 1]` (in the
    /// current mode; see [`Classifier::embed`] for batched eval-mode use).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.features.forward(x)
    }

    /// The class logits `[N, K]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head
            .forward(&self.dropout.forward(&self.features(x)?)?)
    }

    /// Features and class probabilities of `n` images (NCHW, `[-1, 1]`, the architecture's
    /// input shape) in eval mode without a graph, `batch` images at a time. The previous mode
    /// is restored afterwards.
    pub fn embed(&self, images: &[f32], batch: usize) -> Result<Embedding> {
        let shape = self.arch.input_shape();
        let per: usize = shape.iter().product();
        if !images.len().is_multiple_of(per) {
            return Err(Error::invalid(
                "classifier",
                format!(
                    "{} values are not whole {}x{}x{} images",
                    images.len(),
                    shape[0],
                    shape[1],
                    shape[2]
                ),
            ));
        }
        let n = images.len() / per;
        let _g = no_grad();
        let was_training = self.is_training();
        self.set_training(false);
        let mut feats = Vec::with_capacity(n * FEATURE_DIM);
        let mut probs = Vec::with_capacity(n * self.num_classes);
        let run = (|| -> Result<()> {
            for start in (0..n).step_by(batch.max(1)) {
                let b = batch.max(1).min(n - start);
                let x = Tensor::from_vec(
                    images[start * per..(start + b) * per].to_vec(),
                    [b, shape[0], shape[1], shape[2]],
                )?;
                let f = self.features(&x)?;
                let logits = self.head.forward(&f)?.to_vec();
                feats.extend(f.to_vec());
                probs.extend(softmax_rows(&logits, self.num_classes));
            }
            Ok(())
        })();
        self.set_training(was_training);
        run?;
        Ok(Embedding {
            features: Features::from_f32(&feats, FEATURE_DIM)?,
            probs,
            num_classes: self.num_classes,
        })
    }

    /// Test accuracy on a labelled data set (eval mode).
    pub fn accuracy(&self, data: &Dataset) -> Result<f64> {
        let labels = data
            .labels
            .as_ref()
            .ok_or_else(|| Error::data(&data.name, "accuracy needs a labelled data set"))?;
        let e = self.embed(&data.images, 500)?;
        let pred = e.predictions();
        let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
        Ok(hits as f64 / labels.len().max(1) as f64)
    }

    /// The short hash of the weights ([`weights_hash`] of the state dict).
    pub fn hash(&self) -> String {
        weights_hash(&self.state_dict())
    }

    /// Saves the weights and `info` (plus the architecture and the weights' hash) as a
    /// safetensors checkpoint, atomically.
    pub fn save(&self, path: &Path, info: &ClassifierInfo) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), CLASSIFIER_FORMAT.to_string());
        meta.insert("arch".to_string(), self.arch.name().to_string());
        meta.insert("num_classes".to_string(), self.num_classes.to_string());
        meta.insert("feature_dim".to_string(), FEATURE_DIM.to_string());
        meta.insert("feature_net".to_string(), self.hash());
        meta.insert("dataset".to_string(), info.dataset.clone());
        meta.insert(
            "class_names".to_string(),
            serde_json::to_string(&info.class_names).unwrap_or_default(),
        );
        if let Some(a) = info.test_accuracy {
            meta.insert("test_accuracy".to_string(), a.to_string());
        }
        meta.insert("test_images".to_string(), info.test_images.to_string());
        meta.insert("train_images".to_string(), info.train_images.to_string());
        meta.insert("epochs".to_string(), info.epochs.to_string());
        meta.insert(
            "train_seconds".to_string(),
            format!("{:.1}", info.train_seconds),
        );
        save_checkpoint(path, &self.state_dict(), &meta)
    }

    /// Loads a checkpoint written by [`Classifier::save`], in eval mode. The hash is recomputed
    /// from the loaded weights; a file whose weights no longer match the hash in its metadata is an
    /// error (it was edited after training).
    pub fn load(path: &Path) -> Result<LoadedClassifier> {
        let ckpt = load_checkpoint(path)?;
        let bad = |msg: String| Error::data(path, msg);
        if ckpt.meta("format") != Some(CLASSIFIER_FORMAT) {
            return Err(bad(format!(
                "not a ganforge classifier checkpoint (metadata `format` is {:?}, expected \
                 {CLASSIFIER_FORMAT:?}); write one with `ganforge train-classifier`",
                ckpt.meta("format")
            )));
        }
        let field = |k: &str| {
            ckpt.meta(k)
                .map(str::to_string)
                .ok_or_else(|| bad(format!("metadata `{k}` is missing")))
        };
        let arch = Arch::parse(&field("arch")?)?;
        let num_classes: usize = field("num_classes")?
            .parse()
            .map_err(|e| bad(format!("metadata `num_classes`: {e}")))?;
        let net = Classifier::new(arch, num_classes, &mut Rng::new(0), &Device::Cpu)?;
        let tensors: HashMap<String, Tensor> = ckpt.with_prefix("");
        net.load_state_dict(&tensors, true)
            .map_err(|e| bad(e.to_string()))?;
        net.set_training(false);
        let hash = net.hash();
        if let Some(saved) = ckpt.meta("feature_net") {
            if saved != hash {
                return Err(bad(format!(
                    "the weights hash to {hash} but the metadata says {saved}: the file was \
                     changed after training; retrain it with `ganforge train-classifier`"
                )));
            }
        }
        let parse_f = |k: &str| ckpt.meta(k).and_then(|v| v.parse::<f64>().ok());
        let parse_u = |k: &str| ckpt.meta(k).and_then(|v| v.parse::<usize>().ok());
        let info = ClassifierInfo {
            dataset: field("dataset")?,
            class_names: ckpt
                .meta("class_names")
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            test_accuracy: parse_f("test_accuracy"),
            test_images: parse_u("test_images").unwrap_or(0),
            train_images: parse_u("train_images").unwrap_or(0),
            epochs: parse_u("epochs").unwrap_or(0),
            train_seconds: parse_f("train_seconds").unwrap_or(0.0),
        };
        Ok(LoadedClassifier { net, info, hash })
    }
}

impl Module for Classifier {
    /// The logits (see [`Classifier::logits`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.logits(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = prefixed("features", self.features.named_parameters());
        v.extend(prefixed("head", self.head.named_parameters()));
        v
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("features", self.features.named_buffers())
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
        self.features.set_training(training);
        self.dropout.set_training(training);
    }
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        self.features.set_cumulative_stats(on)
    }
}

/// What a classifier checkpoint says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassifierInfo {
    /// The data set it was trained on, as in metric keys (`mnist`, `cifar10`, ...).
    pub dataset: String,
    /// Class names, where the data has them.
    pub class_names: Vec<String>,
    /// Accuracy on the test split (when one was evaluated).
    pub test_accuracy: Option<f64>,
    /// Images in the test split.
    pub test_images: usize,
    /// Images trained on.
    pub train_images: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Wall-clock training time.
    pub train_seconds: f64,
}

/// A classifier read from disk, with its metadata and the hash of its weights.
pub struct LoadedClassifier {
    /// The network.
    pub net: Classifier,
    /// Its metadata.
    pub info: ClassifierInfo,
    /// [`weights_hash`] of its weights: report it as `feature_net` beside every metric.
    pub hash: String,
}

impl LoadedClassifier {
    /// The network's name in metric keys: `{arch}_{dataset}`, e.g. `lenet_mnist`.
    pub fn net_name(&self) -> String {
        format!("{}_{}", self.net.arch().name(), self.info.dataset)
    }
}

/// The features and class probabilities of a set of images.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[N, 128]` penultimate-layer features.
    pub features: Features,
    /// `N x K` softmax probabilities, row-major.
    pub probs: Vec<f32>,
    /// `K`.
    pub num_classes: usize,
}

impl Embedding {
    /// The argmax class of each image.
    pub fn predictions(&self) -> Vec<usize> {
        super::classes::predictions(&self.probs, self.num_classes)
    }
}

/// Row-wise softmax of `n x k` logits (max subtracted first).
pub fn softmax_rows(logits: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(k.max(1)) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = row.iter().map(|&v| ((v - m) as f64).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| (v / s) as f32));
    }
    out
}

/// A short content hash of named tensors: FNV-1a (64-bit) over, for each tensor in name order,
/// its name's UTF-8 bytes, a 0 byte, each dim as a little-endian u64, and its f32 values
/// little-endian; as 16 hex digits. Any change to a weight, a name or a shape changes it. (Not
/// a cryptographic hash: it tells checkpoints apart, it does not authenticate them.)
///
/// In Python: `h = 0xcbf29ce484222325; for b in data: h = ((h ^ b) * 0x100000001b3) % 2**64`.
pub fn weights_hash(named: &[(String, Tensor)]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(PRIME);
        }
    };
    let mut sorted: Vec<&(String, Tensor)> = named.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in sorted {
        eat(name.as_bytes());
        eat(&[0]);
        for &d in t.dims() {
            eat(&(d as u64).to_le_bytes());
        }
        for v in t.to_vec() {
            eat(&v.to_le_bytes());
        }
    }
    format!("{h:016x}")
}

/// How [`train`] trains a classifier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Adam's peak learning rate (cosine-decayed to 1% of it over the run).
    pub lr: f32,
    /// L2 weight decay (Adam's `weight_decay`).
    pub weight_decay: f32,
    /// Random shifts (28x28: up to 2 pixels; 32x32: 4-pixel padded crops and horizontal
    /// flips) of the training images.
    pub augment: bool,
    /// Seed of the initial weights, the batch order, dropout and the augmentation.
    pub seed: u64,
}

impl Default for TrainOptions {
    /// 5 epochs of 128, lr 1e-3, weight decay 0, augmentation on, seed 0.
    fn default() -> Self {
        TrainOptions {
            epochs: 5,
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 0.0,
            augment: true,
            seed: 0,
        }
    }
}

/// What [`train`] reports as it goes.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// After each step.
    Step {
        /// Steps done.
        step: usize,
        /// Steps in all.
        total: usize,
        /// Epoch (from 1).
        epoch: usize,
        /// Running mean of the training loss over the epoch.
        loss: f64,
        /// Running training accuracy over the epoch (on augmented images, with dropout).
        accuracy: f64,
    },
    /// After each epoch, with the test accuracy.
    Epoch {
        /// Epoch (from 1).
        epoch: usize,
        /// Accuracy on the test split.
        test_accuracy: f64,
        /// Seconds since the start.
        seconds: f64,
    },
}

/// Random augmentation of a batch in place (see [`TrainOptions::augment`]). Pixels moved in
/// from outside the image are black (-1).
pub fn augment_batch(images: &mut [f32], [c, h, w]: [usize; 3], rng: &mut Rng) {
    let (max_shift, flip) = if c == 3 {
        (4isize, true)
    } else {
        (2isize, false)
    };
    let per = c * h * w;
    for img in images.chunks_exact_mut(per) {
        let dx = rng.below(2 * max_shift as usize + 1) as isize - max_shift;
        let dy = rng.below(2 * max_shift as usize + 1) as isize - max_shift;
        let mirror = flip && rng.below(2) == 1;
        let src = img.to_vec();
        for ch in 0..c {
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let sx0 = x - dx;
                    let sx = if mirror { w as isize - 1 - sx0 } else { sx0 };
                    let sy = y - dy;
                    let v = if sx0 >= 0 && sx0 < w as isize && sy >= 0 && sy < h as isize {
                        src[ch * h * w + sy as usize * w + sx as usize]
                    } else {
                        -1.0
                    };
                    img[ch * h * w + y as usize * w + x as usize] = v;
                }
            }
        }
    }
}

/// Trains a classifier of `arch` on `train` with Adam and cross-entropy, evaluating on `test`
/// after every epoch; returns the network and its info (with the final test accuracy).
/// `dataset` is the data set's name in metric keys (`mnist`, `cifar10`, ...).
pub fn train(
    arch: Arch,
    train: &Dataset,
    test: &Dataset,
    dataset: &str,
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<(Classifier, ClassifierInfo)> {
    let shape = arch.input_shape();
    for d in [train, test] {
        if d.image_shape() != shape {
            let [c, h, w] = d.image_shape();
            return Err(Error::data(
                &d.name,
                format!(
                    "{} takes {}x{}x{} images, this data set has {c}x{h}x{w}",
                    arch.name(),
                    shape[0],
                    shape[1],
                    shape[2]
                ),
            ));
        }
        if d.labels.is_none() {
            return Err(Error::data(
                &d.name,
                "a classifier needs labelled data (this set has no labels)",
            ));
        }
    }
    if opts.epochs == 0 {
        return Err(Error::invalid(
            "train-classifier",
            "epochs must be at least 1",
        ));
    }
    let started = Instant::now();
    let mut rng = Rng::new(opts.seed);
    let net = Classifier::new(
        arch,
        train.num_classes.max(test.num_classes),
        &mut rng,
        &Device::Cpu,
    )?;
    let base = AdamConfig {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(net.parameters(), base);
    let mut batcher = Batcher::new(train.clone(), opts.batch_size, opts.seed)?;
    let per_epoch = batcher.batches_per_epoch();
    let total = per_epoch * opts.epochs;
    let mut aug_rng = rng.fork();
    let mut test_accuracy = 0.0;
    let mut step = 0;
    for epoch in 1..=opts.epochs {
        net.set_training(true);
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0usize, 0usize);
        for _ in 0..per_epoch {
            // Cosine decay from lr to lr / 100 over the whole run.
            let t = step as f64 / total as f64;
            let lr =
                opts.lr as f64 * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()));
            opt.set_lr(lr as f32);
            let batch = batcher.next_batch()?;
            let labels = batch.labels.clone().unwrap_or_default();
            let x = if opts.augment {
                let mut v = batch.images.to_vec();
                augment_batch(&mut v, shape, &mut aug_rng);
                Tensor::from_vec(v, batch.images.shape().clone())?
            } else {
                batch.images
            };
            opt.zero_grad();
            let logits = net.logits(&x)?;
            let loss = logits.cross_entropy_with_logits(&labels)?;
            loss.backward()?;
            opt.step()?;
            let l = loss.to_scalar()? as f64;
            if !l.is_finite() {
                return Err(Error::invalid(
                    "train-classifier",
                    format!("the loss became {l} at step {}; lower --lr", step + 1),
                ));
            }
            let pred = logits.detach().argmax(1)?;
            hits += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
            seen += labels.len();
            loss_sum += l * labels.len() as f64;
            step += 1;
            on_event(TrainEvent::Step {
                step,
                total,
                epoch,
                loss: loss_sum / seen as f64,
                accuracy: hits as f64 / seen as f64,
            });
        }
        test_accuracy = net.accuracy(test)?;
        on_event(TrainEvent::Epoch {
            epoch,
            test_accuracy,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let class_names = if train.class_names.is_empty() {
        (0..net.num_classes()).map(|c| c.to_string()).collect()
    } else {
        train.class_names.clone()
    };
    let info = ClassifierInfo {
        dataset: dataset.to_string(),
        class_names,
        test_accuracy: Some(test_accuracy),
        test_images: test.len(),
        train_images: train.len(),
        epochs: opts.epochs,
        train_seconds: started.elapsed().as_secs_f64(),
    };
    Ok((net, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_names_and_hash() {
        let mut rng = Rng::new(0);
        for arch in [Arch::Lenet, Arch::Convnet] {
            let net = Classifier::new(arch, 10, &mut rng, &Device::Cpu).unwrap();
            let [c, h, w] = arch.input_shape();
            let x = Tensor::zeros([2, c, h, w], &Device::Cpu);
            assert_eq!(net.features(&x).unwrap().dims(), &[2, FEATURE_DIM]);
            assert_eq!(net.logits(&x).unwrap().dims(), &[2, 10]);
            assert_eq!(net.hash().len(), 16);
            assert!(net.named_parameters()[0].0.starts_with("features.0."));
        }
        // FNV-1a of the empty input is the offset basis.
        assert_eq!(weights_hash(&[]), "cbf29ce484222325");
    }

    #[test]
    fn augmentation_keeps_shape_and_values() {
        let mut rng = Rng::new(1);
        let mut imgs: Vec<f32> = (0..2 * 28 * 28).map(|i| (i % 7) as f32 / 7.0).collect();
        augment_batch(&mut imgs, [1, 28, 28], &mut rng);
        assert!(imgs.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
