//! What people and programs read about sessions (SPEC.md §9, §13): full-text search
//! ([`search`]), spending ([`stats`]), the rows every listing shows and the filter bar
//! ([`listing`]), tables that fit the terminal ([`table`]), the full-screen deck ([`deck`]), tables and transcripts
//! ([`render`]), session pages as HTML ([`html`]), the local web view ([`web`]) and exports for other tools ([`export`]). Views read
//! the store; they never change a session.

pub mod deck;
pub mod export;
pub mod html;
pub mod listing;
pub mod render;
pub mod search;
pub mod stats;
pub mod table;
pub mod web;
