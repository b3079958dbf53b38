//! What people and programs read about sessions (SPEC.md §9, §13): full-text search
//! ([`search`]), spending ([`stats`]), tables and transcripts ([`render`]) and exports for other
//! tools ([`export`]). Views read the store; they never change a session.

pub mod export;
pub mod render;
pub mod search;
pub mod stats;
