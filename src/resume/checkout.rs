//! Checkout (placeholder).
