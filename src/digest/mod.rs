//! Digests: schedules, which items each subscriber gets, and the mail.

pub mod mail;
pub mod run;
pub mod select;
