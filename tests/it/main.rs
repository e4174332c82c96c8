//! herold's integration tests: one binary, a module per area.

// Tests may read the clock to schedule items relative to now.
#![allow(clippy::disallowed_methods)]

mod bounce;
mod browser;
mod build;
mod cli;
mod daemon;
mod delivery;
mod digest;
mod helpers;
mod import;
mod languages;
mod mta;
mod nasty;
mod nodes;
mod pages;
mod snapshots;
mod subscribe;
mod subscribers;
mod systemd;
