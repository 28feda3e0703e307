//! Layers (placeholder while written).
