//! Layers with PyTorch-style parameter names.
//!
//! A layer is a [`Module`]: it maps a tensor to a tensor and lists its parameters (trained
//! tensors that require a gradient) and buffers (state that is saved but not trained, such as
//! batch norm's running statistics) under the dotted names PyTorch's `state_dict` uses:
//! `"weight"`, `"0.weight"`, `"main.3.bias"`. Composite models build those names with
//! [`prefixed`], so a checkpoint written here lines up key by key with one written by the
//! equivalent PyTorch model.
//!
//! Every layer has one file; the functional ops it calls live in `src/ops`. Constructors take
//! named config structs and cannot fail: invalid settings (a stride of 0, an output padding
//! not smaller than the stride, ...) are reported by the op on the first `forward`.

mod activation;
mod batch_norm;
mod conv2d;
mod conv_transpose2d;
mod dropout;
mod embedding;
pub mod init;
mod layer_norm;
mod linear;
mod reshape;
mod sequential;
mod spectral_norm;

pub use activation::{LeakyRelu, Relu, Sigmoid, Tanh};
pub use batch_norm::BatchNorm;
pub use conv2d::{Conv2d, Conv2dConfig};
pub use conv_transpose2d::{ConvTranspose2d, ConvTranspose2dConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::LayerNorm;
pub use linear::{Linear, LinearConfig};
pub use reshape::{Flatten, Reshape};
pub use sequential::Sequential;
pub use spectral_norm::{HasWeight, SpectralNorm, SpectralNormConfig};

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::HashMap;

/// A layer or a model: a differentiable map from one tensor to another, with named state.
///
/// Implementors provide [`forward`](Module::forward) and
/// [`named_parameters`](Module::named_parameters) (plus
/// [`named_buffers`](Module::named_buffers) and [`set_training`](Module::set_training) when
/// they have buffers or behave differently in training and eval); everything else is derived.
pub trait Module: Send + Sync {
    /// Applies the layer.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The trainable tensors with PyTorch dotted names (`"weight"`, `"0.weight"`,
    /// `"main.3.bias"`), in PyTorch's `module.parameters()` order.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Saved but untrained state (running statistics, spectral norm's `u` and `v`).
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The layer's Rust type name (`ganforge::nn::conv2d::Conv2d`), shown without its module
    /// path by the profiler (`G.main.0 ConvTranspose2d`). Wrappers forward it.
    fn layer_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Switches training (`true`) or eval (`false`) behaviour (batch norm, dropout, spectral
    /// norm's power iteration); composite modules pass it on to their children.
    fn set_training(&self, _training: bool) {}

    /// An activation layer (ReLU, LeakyReLU) says which, so that [`Sequential`] can hand it to
    /// the layer before it ([`Module::forward_activated`]).
    fn as_activation(&self) -> Option<crate::ops::norm::Activation> {
        None
    }

    /// `activation(self.forward(x))` as one step, for layers that fuse it (batch norm: one
    /// op, one pass); `None` (the default) when the layer does not, and then [`Sequential`]
    /// runs the two layers one after the other.
    fn forward_activated(
        &self,
        _x: &Tensor,
        _activation: crate::ops::norm::Activation,
    ) -> Option<Result<Tensor>> {
        None
    }

    /// Batch norm: `true` resets the running statistics and makes every following
    /// training-mode batch count equally in them (PyTorch's `momentum=None`, a cumulative
    /// average); `false` returns to the momentum average, keeping the statistics. Composite
    /// modules pass it on to their children; other layers ignore it.
    fn set_cumulative_stats(&self, _on: bool) -> Result<()> {
        Ok(())
    }

    /// The parameters without their names (what an optimizer takes).
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Parameters then buffers, named as in PyTorch's `state_dict()`. The tensors are the
    /// module's own handles (shared data), not copies.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut all = self.named_parameters();
        all.extend(self.named_buffers());
        all
    }

    /// Copies `tensors` into this module's parameters and buffers, in place.
    ///
    /// Nothing is written unless the whole load succeeds. Errors ([`Error::StateDict`]) list
    /// every key of the module that `tensors` lacks and every key of `tensors` the module
    /// does not have (both only when `strict`), and every shape mismatch (always), each with
    /// the key and both shapes.
    fn load_state_dict(&self, tensors: &HashMap<String, Tensor>, strict: bool) -> Result<()> {
        let own = self.state_dict();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut copies = Vec::new();
        for (name, dst) in &own {
            match tensors.get(name) {
                None => missing.push(name.clone()),
                Some(src) if src.shape() != dst.shape() => mismatched.push(format!(
                    "size mismatch for {name}: the state dict has shape {:?}, the module has {:?}",
                    src.shape(),
                    dst.shape()
                )),
                Some(src) => copies.push((dst, src)),
            }
        }
        let known: std::collections::HashSet<&str> = own.iter().map(|(n, _)| n.as_str()).collect();
        let mut unexpected: Vec<String> = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        unexpected.sort();
        let mut problems = mismatched;
        if strict && !missing.is_empty() {
            problems.push(format!("missing keys: {}", missing.join(", ")));
        }
        if strict && !unexpected.is_empty() {
            problems.push(format!("unexpected keys: {}", unexpected.join(", ")));
        }
        if !problems.is_empty() {
            return Err(Error::StateDict(problems.join("; ")));
        }
        for (dst, src) in copies {
            // A buffer copy on one GPU, through the host across devices.
            dst.copy_from(src)?;
        }
        Ok(())
    }

    /// Clears the gradient of every parameter.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        (**self).named_parameters()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        (**self).named_buffers()
    }
    fn set_training(&self, training: bool) {
        (**self).set_training(training)
    }
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        (**self).set_cumulative_stats(on)
    }
    fn layer_type(&self) -> &'static str {
        (**self).layer_type()
    }
    fn as_activation(&self) -> Option<crate::ops::norm::Activation> {
        (**self).as_activation()
    }
    fn forward_activated(
        &self,
        x: &Tensor,
        activation: crate::ops::norm::Activation,
    ) -> Option<Result<Tensor>> {
        (**self).forward_activated(x, activation)
    }
}

/// Prepends `prefix.` to every name (`prefixed("main", [("0.weight", w)])` gives
/// `"main.0.weight"`), for composite models. An empty prefix leaves the names as they are.
pub fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    if prefix.is_empty() {
        return named;
    }
    named
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

/// WGAN weight clipping, in place: every element `w <- clamp(w, -c, c)`.
pub fn clip_parameters(params: &[Tensor], c: f32) -> Result<()> {
    if c.is_nan() || c < 0.0 {
        return Err(Error::invalid(
            "clip_parameters",
            format!("clip value {c} must be >= 0"),
        ));
    }
    for p in params {
        p.clamp_in_place(-c, c)?;
    }
    Ok(())
}

/// A new parameter: a leaf that requires a gradient.
pub(crate) fn param(t: Tensor) -> Tensor {
    t.set_requires_grad(true);
    t
}
