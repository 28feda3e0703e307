//! Optimizers (placeholder while written).
