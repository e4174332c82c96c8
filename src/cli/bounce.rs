//! `herold bounce`: one returned message from an MTA's pipe (or a file), or one poll of the
//! bounce mailbox over IMAP. Prints the class of each message. Exit 0 when handled, 75
//! (EX_TEMPFAIL) when it cannot be handled now, so the MTA delivers it again later.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::bounce::handle::{self, Matcher, Unmatched};
use crate::config::Config;
use crate::store::Store;

/// sysexits.h `EX_TEMPFAIL`: Postfix's pipe (and every MTA) defers the message.
pub const TEMPFAIL: u8 = 75;

/// The largest message read; what lies beyond is not kept either.
const MAX_MESSAGE: u64 = 32 << 20;

pub fn run(config: &Config, recipient: Option<&str>, file: Option<&Path>) -> ExitCode {
    let raw = match read_message(file) {
        Ok(raw) => raw,
        Err(Input::Usage(e)) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
        Err(Input::Io(e)) => {
            tracing::error!("cannot read the message: {e}");
            return ExitCode::from(TEMPFAIL);
        }
    };
    match handle_one(config, recipient, &raw) {
        Ok(class) => {
            println!("{class}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}; the message is left to the mail server to deliver again");
            ExitCode::from(TEMPFAIL)
        }
    }
}

fn handle_one(
    config: &Config,
    recipient: Option<&str>,
    raw: &[u8],
) -> anyhow::Result<&'static str> {
    let now = crate::clock::unix_seconds();
    let mut store = Store::connect(config)?;
    let (keys, _) = crate::secrets::load_from_env(config, &mut store)?;
    let matcher = Matcher::new(config, &keys)?;
    let handled = handle::handle(
        raw,
        recipient,
        &matcher,
        &mut store,
        Unmatched::Keep,
        now as i64,
    )?;
    let purged = handle::purge_unmatched(&matcher.unmatched_dir, matcher.keep, now);
    if purged > 0 {
        tracing::info!(
            deleted = purged,
            "unmatched bounces past bounce.keep deleted"
        );
    }
    Ok(handled.class.as_str())
}

enum Input {
    Usage(String),
    Io(std::io::Error),
}

fn read_message(file: Option<&Path>) -> Result<Vec<u8>, Input> {
    let mut raw = Vec::new();
    match file {
        Some(p) if p != Path::new("-") => {
            let f = std::fs::File::open(p)
                .map_err(|e| Input::Usage(format!("cannot open {}: {e}", p.display())))?;
            f.take(MAX_MESSAGE)
                .read_to_end(&mut raw)
                .map_err(Input::Io)?;
        }
        _ => {
            std::io::stdin()
                .lock()
                .take(MAX_MESSAGE)
                .read_to_end(&mut raw)
                .map_err(Input::Io)?;
        }
    }
    Ok(raw)
}

/// `herold bounce --imap`: one poll of `[bounce.imap]`.
pub fn run_imap(config: &Config) -> anyhow::Result<ExitCode> {
    let Some(imap) = &config.bounce.imap else {
        tracing::error!("herold bounce --imap needs a [bounce.imap] section");
        return Ok(ExitCode::from(2));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let polled = runtime.block_on(crate::bounce::poll_mailbox(config, imap))?;
    for class in &polled.classes {
        println!("{}", class.as_str());
    }
    Ok(if polled.left > 0 && polled.classes.is_empty() {
        ExitCode::from(TEMPFAIL)
    } else {
        ExitCode::SUCCESS
    })
}
