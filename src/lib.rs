//! herold publishes an organisation's news as RSS 2.0, Atom 1.0 and JSON Feed 1.1.
//!
//! The pure core ([`content`], [`feed`]) decides; the shell ([`output`], [`build`], [`cli`])
//! reads and writes. See `ARCHITECTURE.md` for the map.

pub mod bounce;
pub mod build;
pub mod cli;
pub mod clock;
pub mod config;
pub mod content;
pub mod daemon;
pub mod digest;
pub mod email;
pub mod feed;
pub mod import;
pub mod lock;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod output;
pub mod pages;
pub mod schedule;
pub mod secrets;
pub mod store;
pub mod subscriptions;
pub mod templates;
pub mod token;
pub mod web;
pub mod websub;

/// A small seeded random source for the tests that compare two ways of doing one thing on
/// many generated inputs: `next(n)` gives a number below `n`, the same sequence every run.
#[cfg(test)]
pub(crate) fn test_rng(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}
