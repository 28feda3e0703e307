//! `Conv2d`: PyTorch's `nn.Conv2d` (square kernel, same stride and padding on both axes, no
//! dilation or groups). `x: [N, C_in, H, W]`, `weight: [C_out, C_in, k, k]`, `bias: [C_out]`,
//! `y: [N, C_out, (H + 2p - k)/s + 1, (W + 2p - k)/s + 1]`.

use super::init::default_bound;
use super::spectral_norm::HasWeight;
use super::{param, Module};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::ops::Conv2dParams;
use crate::tensor::{Rng, Tensor};

/// Sizes and geometry of a [`Conv2d`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Channels of the input.
    pub in_channels: usize,
    /// Channels of the output (number of filters).
    pub out_channels: usize,
    /// Side of the square kernel.
    pub kernel_size: usize,
    /// Step between output positions (>= 1).
    pub stride: usize,
    /// Zeros added on every side of the input.
    pub padding: usize,
    /// Whether to add a learned per-channel bias.
    pub bias: bool,
}

/// A 2-D convolution layer: each output channel is a learned `k x k` filter slid over the
/// input (with stride and zero padding) plus a bias; see [`Tensor::conv2d`] for the formula.
///
/// ```
/// use ganforge::nn::{Conv2d, Conv2dConfig, Module};
/// use ganforge::{Device, Rng, Tensor};
/// // A DCGAN discriminator layer: 4x4 filters, stride 2, padding 1 halve the image.
/// let cfg = Conv2dConfig {
///     in_channels: 1,
///     out_channels: 8,
///     kernel_size: 4,
///     stride: 2,
///     padding: 1,
///     bias: false,
/// };
/// let conv = Conv2d::new(cfg, &mut Rng::new(0), &Device::Cpu).unwrap();
/// let x = Tensor::randn(0.0, 1.0, [2, 1, 28, 28], &mut Rng::new(1), &Device::Cpu);
/// let y = conv.forward(&x).unwrap();
/// assert_eq!(y.dims(), &[2, 8, 14, 14]); // (28 + 2*1 - 4) / 2 + 1 = 14
/// // Zero input, no bias: zero output.
/// let zeros = Tensor::zeros([1, 1, 28, 28], &Device::Cpu);
/// assert!(conv.forward(&zeros).unwrap().to_vec().iter().all(|&v| v == 0.0));
/// ```
pub struct Conv2d {
    /// `[C_out, C_in, k, k]`.
    pub weight: Tensor,
    /// `[C_out]`, when the config asks for one.
    pub bias: Option<Tensor>,
    /// The geometry it was built with.
    pub config: Conv2dConfig,
}

impl Conv2d {
    /// PyTorch's default init with `fan_in = C_in * k * k`: weight and bias
    /// `~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`. Errors on a stride or kernel size of 0.
    pub fn new(config: Conv2dConfig, rng: &mut Rng, device: &Device) -> Result<Self> {
        Conv2dParams::new(config.stride, config.padding)?;
        if config.kernel_size == 0 {
            return Err(Error::invalid("conv2d", "kernel_size must be at least 1"));
        }
        let k = config.kernel_size;
        let b = default_bound(config.in_channels * k * k);
        let weight = param(Tensor::rand_uniform(
            -b,
            b,
            [config.out_channels, config.in_channels, k, k],
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
        Ok(Conv2d {
            weight,
            bias,
            config,
        })
    }

    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.config.stride,
            padding: self.config.padding,
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d_bias(&self.weight, self.bias.as_ref(), self.params())
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

impl HasWeight for Conv2d {
    fn weight(&self) -> &Tensor {
        &self.weight
    }
    fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        x.conv2d_bias(weight, self.bias.as_ref(), self.params())
    }
}
