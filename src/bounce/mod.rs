//! Bounces and complaints (SPEC 12): what a returned message says (`report`), which
//! delivery it is about and what that changes (`handle`), and the bounce mailbox over IMAP
//! (`imap`).

pub mod report;

pub use report::{Class, Report};
