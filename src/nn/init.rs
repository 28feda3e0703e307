//! Parameter initialisation, in place.
//!
//! Layers start from PyTorch's defaults (`reset_parameters`): Linear, Conv2d and
//! ConvTranspose2d use `kaiming_uniform_(w, a = sqrt(5))`, which works out to
//! `w ~ U(-b, b)` with `b = gain * sqrt(3 / fan_in) = sqrt(2 / (1 + 5)) * sqrt(3 / fan_in)
//! = 1 / sqrt(fan_in)`, and the bias `~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
//! [`dcgan_init`] then re-initialises a GAN the way the DCGAN paper (and PyTorch's DCGAN
//! example) does.

use super::Module;
use crate::error::Result;
use crate::tensor::{Rng, Tensor};

/// The bound `1 / sqrt(fan_in)` of PyTorch's default weight and bias init (0 for
/// `fan_in = 0`, where PyTorch leaves the bound at 0 too).
pub fn default_bound(fan_in: usize) -> f32 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f32).sqrt()
    }
}

/// Overwrites `t` with samples of `U(lo, hi)` (drawn on the host, in order, on any device).
pub fn uniform_(t: &Tensor, lo: f32, hi: f32, rng: &mut Rng) -> Result<()> {
    let data: Vec<f32> = (0..t.elem_count()).map(|_| rng.uniform(lo, hi)).collect();
    t.write_from_slice(&data)
}

/// Overwrites `t` with samples of `N(mean, std^2)` (drawn on the host, in order).
pub fn normal_(t: &Tensor, mean: f32, std: f32, rng: &mut Rng) -> Result<()> {
    let data: Vec<f32> = (0..t.elem_count())
        .map(|_| mean + std * rng.normal())
        .collect();
    t.write_from_slice(&data)
}

/// Overwrites `t` with `value`.
pub fn constant_(t: &Tensor, value: f32) -> Result<()> {
    t.fill_in_place(value)
}

/// DCGAN initialisation (Radford et al. 2015; PyTorch DCGAN example's `weights_init`):
/// convolution, transposed convolution and linear weights `~ N(0, 0.02^2)`; batch norm
/// weight `~ N(1, 0.02^2)` and bias `= 0`.
///
/// Layers are told apart by name and rank: a parameter named `weight` (or `weight_orig`,
/// the spectral-norm wrapped weight) of rank 2 or 4 belongs to a linear/convolution layer; a
/// rank-1 `weight` belongs to a normalisation layer, and the `bias` next to it (same name
/// prefix) is zeroed. Biases of linear/convolution layers are left as they are, like the
/// example's `weights_init`. An `Embedding` table is also a rank-2 `weight` and is
/// re-initialised too.
pub fn dcgan_init(module: &dyn Module, rng: &mut Rng) -> Result<()> {
    let params = module.named_parameters();
    let split = |name: &str| -> (String, String) {
        match name.rsplit_once('.') {
            Some((prefix, last)) => (prefix.to_string(), last.to_string()),
            None => (String::new(), name.to_string()),
        }
    };
    // Prefixes of normalisation layers: their weight is a vector.
    let norm_prefixes: std::collections::HashSet<String> = params
        .iter()
        .filter(|(n, t)| split(n).1 == "weight" && t.rank() == 1)
        .map(|(n, _)| split(n).0)
        .collect();
    for (name, t) in &params {
        let (prefix, last) = split(name);
        match (last.as_str(), t.rank()) {
            ("weight" | "weight_orig", 2 | 4) => normal_(t, 0.0, 0.02, rng)?,
            ("weight", 1) => normal_(t, 1.0, 0.02, rng)?,
            ("bias", _) if norm_prefixes.contains(&prefix) => constant_(t, 0.0)?,
            _ => {}
        }
    }
    Ok(())
}
