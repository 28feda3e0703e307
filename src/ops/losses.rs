//! Losses, composed from primitive ops (their gradients come from autodiff). Each returns the
//! mean over all elements (over the batch for cross-entropy), as PyTorch's default reduction.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape_mismatch(op, a.shape(), b.shape()));
    }
    Ok(())
}

impl Tensor {
    /// Binary cross-entropy on logits, `mean(softplus(x) - x * t)`: the same value as
    /// `-[t log s(x) + (1 - t) log(1 - s(x))]` without ever evaluating `log(0)`.
    pub fn bce_with_logits(&self, targets: &Tensor) -> Result<Tensor> {
        same_shape("bce_with_logits", self, targets)?;
        self.softplus().sub(&self.mul(targets)?)?.mean_all()
    }

    /// Mean squared error.
    pub fn mse(&self, targets: &Tensor) -> Result<Tensor> {
        same_shape("mse", self, targets)?;
        self.sub(targets)?.sqr()?.mean_all()
    }

    /// Mean absolute error.
    pub fn l1(&self, targets: &Tensor) -> Result<Tensor> {
        same_shape("l1", self, targets)?;
        self.sub(targets)?.abs().mean_all()
    }

    /// Hinge loss `mean(relu(1 - y * x))` for labels `y` in {-1, +1}.
    pub fn hinge(&self, labels: &Tensor) -> Result<Tensor> {
        same_shape("hinge", self, labels)?;
        self.mul(labels)?.affine(-1.0, 1.0).relu().mean_all()
    }

    /// Cross-entropy of logits `[N, K]` against class indices, averaged over the batch:
    /// `mean_n (logsumexp(x_n) - x_n[t_n])`. The row max is subtracted as a constant, which
    /// changes neither the value nor the gradient, and keeps `exp` finite.
    pub fn cross_entropy_with_logits(&self, targets: &[usize]) -> Result<Tensor> {
        let (n, k) = self.shape().dims2("cross_entropy_with_logits")?;
        if targets.len() != n {
            return Err(Error::bad_shape(
                "cross_entropy_with_logits",
                self.shape(),
                format!("{} targets for a batch of {n}", targets.len()),
            ));
        }
        if let Some(&bad) = targets.iter().find(|&&t| t >= k) {
            return Err(Error::invalid(
                "cross_entropy_with_logits",
                format!("class {bad} out of range for {k} classes"),
            ));
        }
        let row_max = self.detach().max(1, true)?;
        let shifted = self.sub(&row_max)?;
        let lse = shifted.exp().sum(&[1], true)?.log();
        let mut onehot = vec![0.0f32; n * k];
        for (i, &t) in targets.iter().enumerate() {
            onehot[i * k + t] = 1.0;
        }
        let onehot = Tensor::from_vec_on(onehot, [n, k], &self.device())?;
        let picked = shifted.mul(&onehot)?.sum(&[1], true)?;
        lse.sub(&picked)?.mean_all()
    }
}
