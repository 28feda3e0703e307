//! `ConvTranspose2d`: PyTorch's `nn.ConvTranspose2d` (square kernel, no dilation or groups).
//! `x: [N, C_in, H, W]`, `weight: [C_in, C_out, k, k]` (note: input channels first),
//! `bias: [C_out]`, `y: [N, C_out, (H - 1)*s - 2p + k + output_padding, ...]`.

use super::init::default_bound;
use super::spectral_norm::HasWeight;
use super::{param, Module};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::ops::ConvTranspose2dParams;
use crate::tensor::{Rng, Tensor};

/// Sizes and geometry of a [`ConvTranspose2d`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output.
    pub out_channels: usize,
    /// Side of the square kernel.
    pub kernel_size: usize,
    /// Upsampling step (>= 1).
    pub stride: usize,
    /// Rows/columns removed from every side of the full output.
    pub padding: usize,
    /// Extra rows/columns at the bottom/right (< stride).
    pub output_padding: usize,
    /// Whether to add a learned per-channel bias.
    pub bias: bool,
}

/// A transposed 2-D convolution layer (the generator's upsampling block).
pub struct ConvTranspose2d {
    /// `[C_in, C_out, k, k]`.
    pub weight: Tensor,
    /// `[C_out]`, when the config asks for one.
    pub bias: Option<Tensor>,
    /// The geometry it was built with.
    pub config: ConvTranspose2dConfig,
}

impl ConvTranspose2d {
    /// PyTorch's default init. PyTorch computes `fan_in` from weight dim 1, which for this
    /// layout is `C_out`: `fan_in = C_out * k * k`, weight and bias
    /// `~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`. Errors on a stride or kernel size of 0 and on
    /// `output_padding >= stride`.
    pub fn new(config: ConvTranspose2dConfig, rng: &mut Rng, device: &Device) -> Result<Self> {
        ConvTranspose2dParams::new(config.stride, config.padding, config.output_padding)?;
        if config.kernel_size == 0 {
            return Err(Error::invalid(
                "conv_transpose2d",
                "kernel_size must be at least 1",
            ));
        }
        let k = config.kernel_size;
        let b = default_bound(config.out_channels * k * k);
        let weight = param(Tensor::rand_uniform(
            -b,
            b,
            [config.in_channels, config.out_channels, k, k],
            rng,
            device,
        ));
        let bias = config.bias.then(|| {
            param(Tensor::rand_uniform(
                -b,
                b,
                config.out_channels,
                rng,
                device,
            ))
        });
        Ok(ConvTranspose2d {
            weight,
            bias,
            config,
        })
    }

    fn params(&self) -> ConvTranspose2dParams {
        ConvTranspose2dParams {
            stride: self.config.stride,
            padding: self.config.padding,
            output_padding: [self.config.output_padding; 2],
        }
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose2d_bias(&self.weight, self.bias.as_ref(), self.params())
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

impl HasWeight for ConvTranspose2d {
    fn weight(&self) -> &Tensor {
        &self.weight
    }
    /// PyTorch's `spectral_norm` uses `dim = 1` for transposed convolutions: the matrix is
    /// `weight` with its output-channel dim moved first.
    fn output_dim(&self) -> usize {
        1
    }
    fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        x.conv_transpose2d_bias(weight, self.bias.as_ref(), self.params())
    }
}
