//! Bounces and complaints (SPEC 12): what a returned message says (`report`), which
//! delivery it is about and what that changes (`handle`), and the bounce mailbox over IMAP
//! (`imap`).

pub mod handle;
pub mod imap;
pub mod report;

pub use report::{Class, Report};

use handle::{Matcher, Unmatched};

use crate::config::Config;
use crate::store::Store;

/// One poll of the bounce mailbox, with a connection of its own to the database (the
/// daemon calls it too).
pub async fn poll_mailbox(
    config: &Config,
    settings: &crate::config::Imap,
) -> anyhow::Result<imap::Polled> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let password = imap::password(settings, credentials)?;
    let mut store = Store::connect(config)?;
    let (keys, _) = crate::secrets::load_from_env(config, &mut store)?;
    let matcher = Matcher::new(config, &keys)?;
    let polled = imap::poll_once(settings, &password, |raw| {
        let now = crate::clock::unix_seconds() as i64;
        handle::handle(raw, None, &matcher, &mut store, Unmatched::Leave, now).map(|h| h.class)
    })
    .await?;
    tracing::info!(
        handled = polled.classes.len(),
        left = polled.left,
        "bounce mailbox polled"
    );
    Ok(polled)
}
