//! Mapping (placeholder).
