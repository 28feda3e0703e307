//! Shapes: the dims of a tensor, its row-major strides and the broadcasting rule.
//!
//! Every tensor in ganforge is stored contiguous and row-major: element `[i0, i1, ..., ik]`
//! lives at `sum_j i_j * stride_j` with `stride_k = 1` and `stride_j = stride_{j+1} * dim_{j+1}`.
//! Views that would need other strides (permute, expand) are materialised by their ops, which
//! keeps every kernel a plain loop over contiguous memory.

use crate::error::{Error, Result};

/// The dims of a tensor, outermost first. A scalar has no dims.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(dims: Vec<usize>) -> Self {
        Shape(dims)
    }
}
impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Self {
        Shape(dims.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}
impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}

impl Shape {
    /// The dims, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dims (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar).
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }
    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.rank()];
        for d in (0..self.rank().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * self.0[d + 1];
        }
        strides
    }
    /// Dim `d`, or an error naming `op` if `d` is out of range.
    pub fn dim(&self, op: &'static str, d: usize) -> Result<usize> {
        self.0.get(d).copied().ok_or(Error::DimOutOfRange {
            op,
            dim: d,
            rank: self.rank(),
        })
    }
    /// The dims as exactly four values `(n, c, h, w)`, or an error naming `op`.
    pub fn dims4(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.0[..] {
            [n, c, h, w] => Ok((n, c, h, w)),
            _ => Err(Error::bad_shape(op, self, "expected 4 dims (N, C, H, W)")),
        }
    }
    /// The dims as exactly two values, or an error naming `op`.
    pub fn dims2(&self, op: &'static str) -> Result<(usize, usize)> {
        match self.0[..] {
            [a, b] => Ok((a, b)),
            _ => Err(Error::bad_shape(op, self, "expected 2 dims")),
        }
    }

    /// NumPy/PyTorch broadcasting: align trailing dims; each pair must be equal or contain a 1.
    pub fn broadcast(op: &'static str, lhs: &Shape, rhs: &Shape) -> Result<Shape> {
        let rank = lhs.rank().max(rhs.rank());
        let mut dims = vec![0; rank];
        for (i, dim) in dims.iter_mut().enumerate() {
            let l = if i < rank - lhs.rank() {
                1
            } else {
                lhs.0[i - (rank - lhs.rank())]
            };
            let r = if i < rank - rhs.rank() {
                1
            } else {
                rhs.0[i - (rank - rhs.rank())]
            };
            *dim = match (l, r) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: lhs.clone(),
                        rhs: rhs.clone(),
                        hint: format!(
                            "dim {i} from the right-aligned shapes: {l} vs {r} cannot broadcast"
                        ),
                    })
                }
            };
        }
        Ok(Shape(dims))
    }

    /// Strides for reading a tensor of this shape as if broadcast to `target`: broadcast dims
    /// get stride 0, missing leading dims too. `target` must be a valid broadcast of `self`.
    pub fn broadcast_strides(&self, target: &Shape) -> Vec<usize> {
        let own = self.strides();
        let offset = target.rank() - self.rank();
        (0..target.rank())
            .map(|i| {
                if i < offset || self.0[i - offset] == 1 {
                    0
                } else {
                    own[i - offset]
                }
            })
            .collect()
    }
}
