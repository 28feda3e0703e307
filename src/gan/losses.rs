//! The adversarial losses of each family and the WGAN-GP gradient penalty.
//!
//! Notation: `D(x)` is the discriminator's raw score (a logit for the BCE families) of a real
//! example `x`, `D(G(z))` that of a generated one; every `mean` is over the batch. `s` is the
//! one-sided label smoothing (`label_smoothing`), so the real target is `1 - s`.

use super::config::ModelKind;
use super::models::Discriminator;
use crate::autograd;
use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor};

/// A tensor like `t` filled with `v`.
fn full_like(t: &Tensor, v: f32) -> Tensor {
    Tensor::full(v, t.shape().clone(), &t.device())
}

/// The discriminator's (critic's) loss, minimised by D.
///
/// - BCE (`vanilla`, `dcgan`, `cgan`; Goodfellow et al. 2014), summed over the two halves as
///   in the PyTorch DCGAN example:
///   `L_D = BCE(D(x), 1 - s) + BCE(D(G(z)), 0)`, with
///   `BCE(l, t) = mean(-t log sigmoid(l) - (1 - t) log(1 - sigmoid(l)))
///              = mean(softplus(l) - t * l)` (computed on logits, never `log(0)`).
/// - Wasserstein (`wgan`, `wgan-gp`; Arjovsky et al. 2017): the negated estimate of
///   `W(P_real, P_G)`, `L_D = mean D(G(z)) - mean D(x)` (the gradient penalty of `wgan-gp` is
///   added by the caller, see [`gradient_penalty`]).
/// - Least squares (`lsgan`; Mao et al. 2017, eq. 2 with `a = 0`, `b = 1`):
///   `L_D = 1/2 mean (D(x) - (1 - s))^2 + 1/2 mean D(G(z))^2`.
/// - Hinge (`sngan`; Lim & Ye 2017, Miyato et al. 2018):
///   `L_D = mean relu(1 - D(x)) + mean relu(1 + D(G(z)))`.
pub fn discriminator_loss(
    model: ModelKind,
    d_real: &Tensor,
    d_fake: &Tensor,
    label_smoothing: f32,
) -> Result<Tensor> {
    let real_target = 1.0 - label_smoothing;
    match model {
        ModelKind::Vanilla | ModelKind::Dcgan | ModelKind::Cgan => d_real
            .bce_with_logits(&full_like(d_real, real_target))?
            .add(&d_fake.bce_with_logits(&full_like(d_fake, 0.0))?),
        ModelKind::Wgan | ModelKind::WganGp => d_fake.mean_all()?.sub(&d_real.mean_all()?),
        ModelKind::Lsgan => d_real
            .mse(&full_like(d_real, real_target))?
            .add(&d_fake.mse(&full_like(d_fake, 0.0))?)
            .map(|l| l.mul_scalar(0.5)),
        ModelKind::Sngan => d_real
            .affine(-1.0, 1.0)
            .relu()
            .mean_all()?
            .add(&d_fake.add_scalar(1.0).relu().mean_all()?),
    }
}

/// The generator's loss, minimised by G, on `D(G(z))`.
///
/// - BCE families: the non-saturating loss of Goodfellow et al. 2014 (§3), the one every
///   implementation uses: `L_G = BCE(D(G(z)), 1) = mean softplus(-D(G(z)))`.
/// - `wgan`, `wgan-gp`, `sngan` (hinge): `L_G = -mean D(G(z))`.
/// - `lsgan` (Mao et al. 2017, eq. 2 with `c = 1`): `L_G = 1/2 mean (D(G(z)) - 1)^2`.
pub fn generator_loss(model: ModelKind, d_fake: &Tensor) -> Result<Tensor> {
    match model {
        ModelKind::Vanilla | ModelKind::Dcgan | ModelKind::Cgan => {
            d_fake.bce_with_logits(&full_like(d_fake, 1.0))
        }
        ModelKind::Wgan | ModelKind::WganGp | ModelKind::Sngan => Ok(d_fake.mean_all()?.neg()),
        ModelKind::Lsgan => Ok(d_fake.mse(&full_like(d_fake, 1.0))?.mul_scalar(0.5)),
    }
}

/// The R1 penalty (Mescheder et al. 2018, eq. 9, without its `gamma / 2`): the mean over the
/// real batch of the squared norm of D's gradient at each real example,
///
/// ```text
/// g_i = d/dx_i  sum_j D(x_j)              (autodiff, create_graph = true)
/// r1  = mean_i sum_k g_ik^2
/// ```
///
/// `d_real` are D's scores on `real_leaf`, a leaf that requires grad (the same forward pass
/// serves D's loss). `g` is recorded, so `r1.backward()` reaches D's weights (second order).
pub fn r1_penalty(d_real: &Tensor, real_leaf: &Tensor) -> Result<Tensor> {
    squared_input_gradient_norms("r1_penalty", d_real, real_leaf)?.mean_all()
}

/// `||d/dx_i sum_j scores_j||^2` per example, `[N]`, with the gradient recorded
/// (`create_graph`), so that a penalty on it reaches D's weights: the shared part of R1 and the
/// WGAN-GP penalty. `x` is the leaf the scores were computed from; `op` names the penalty in
/// errors.
fn squared_input_gradient_norms(op: &str, scores: &Tensor, x: &Tensor) -> Result<Tensor> {
    let g = autograd::grad(&[scores.sum_all()?], None, std::slice::from_ref(x), true)
        .map_err(|e| Error::Autograd(format!("{op}: {e}")))?
        .pop()
        .flatten()
        .ok_or_else(|| {
            Error::Autograd(format!(
                "{op}: D's scores do not depend on its input (is it a leaf that requires grad?)"
            ))
        })?;
    g.flatten(1)?.sqr()?.sum(&[1], false)
}

/// Added under the square root of the gradient norm so its derivative stays finite when a
/// gradient is exactly zero (`d sqrt(u) / du` is infinite at 0); it moves a norm of 1 by
/// 5e-13.
pub const GP_NORM_EPS: f32 = 1e-12;

/// One interpolation weight per example, `eps_i ~ U(0, 1)` (Gulrajani et al. 2017,
/// Algorithm 1: one scalar per sample, shared by all its pixels).
pub fn interpolation_weights(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(0.0, 1.0)).collect()
}

/// The WGAN-GP gradient penalty (Gulrajani et al. 2017, eq. 3) at the interpolates
/// `x_hat_i = eps_i * real_i + (1 - eps_i) * fake_i` (one `eps_i` per example, see
/// [`interpolation_weights`]):
///
/// ```text
/// g_i  = d/dx_hat_i  sum_j D(x_hat_j)                 (autodiff, create_graph = true)
/// gp   = mean_i ( sqrt(sum_k g_ik^2 + GP_NORM_EPS) - 1 )^2
/// ```
///
/// The norm is per example over *all* its non-batch dims (`C x H x W`), not per channel or
/// per row: the bug of several published implementations (see [`gradient_norms`]). `g` is
/// recorded in the graph, so `gp.backward()` reaches the critic's weights (second-order
/// autodiff).
pub fn gradient_penalty(
    critic: &Discriminator,
    real: &Tensor,
    fake: &Tensor,
    labels: Option<&[usize]>,
    eps: &[f32],
) -> Result<Tensor> {
    gradient_norms(critic, real, fake, labels, eps)?
        .add_scalar(-1.0)
        .sqr()?
        .mean_all()
}

/// The per-example gradient norms `||g_i||_2 = sqrt(sum_k g_ik^2 + GP_NORM_EPS)`, `[N]`, at
/// the interpolates of [`gradient_penalty`], recorded in the graph (differentiable with
/// respect to the critic's weights). `fake` is used detached; the interpolates are a new
/// leaf. `labels` condition a conditional critic (the real examples' labels; only the
/// examples are interpolated).
pub fn gradient_norms(
    critic: &Discriminator,
    real: &Tensor,
    fake: &Tensor,
    labels: Option<&[usize]>,
    eps: &[f32],
) -> Result<Tensor> {
    if real.shape() != fake.shape() {
        return Err(Error::shape_mismatch(
            "gradient_penalty",
            real.shape(),
            fake.shape(),
        ));
    }
    let n = real.dims().first().copied().unwrap_or(0);
    if eps.len() != n || n == 0 {
        return Err(Error::invalid(
            "gradient_penalty",
            format!(
                "{} interpolation weights for a batch of {n} (need one per example)",
                eps.len()
            ),
        ));
    }
    // eps as [N, 1, 1, ...] so it broadcasts over each example.
    let mut eps_dims = vec![1; real.rank()];
    eps_dims[0] = n;
    let x_hat = {
        let _g = autograd::no_grad();
        let e = Tensor::from_vec_on(eps.to_vec(), eps_dims, &real.device())?;
        // eps * real + (1 - eps) * fake
        real.detach()
            .mul(&e)?
            .add(&fake.detach().mul(&e.affine(-1.0, 1.0))?)?
    };
    x_hat.set_requires_grad(true);
    let scores = critic.forward_with_labels(&x_hat, labels)?;
    let squared = squared_input_gradient_norms("gradient_penalty", &scores, &x_hat)?;
    Ok(squared.add_scalar(GP_NORM_EPS).sqrt())
}
