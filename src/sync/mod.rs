//! Moving sessions between stores (SPEC.md §7, §12, §14): the [`remote::Remote`] trait every
//! transport implements, pull and push of one session over it ([`transfer`]), bundles for
//! offline transfer ([`bundle`]), storage providers and their sync schedule ([`provider`]), and
//! the per-project tracking file that remembers what was pulled from where ([`tracking`]).

pub mod bundle;
pub mod provider;
pub mod remote;
pub mod tracking;
pub mod transfer;
