//! herold's integration tests: one binary, a module per area.

mod build;
mod cli;
mod daemon;
mod helpers;
mod import;
mod nasty;
mod snapshots;
mod systemd;
