//! Sending mail: the transports (`file`, `smtp`, `sendmail`) and the composition of
//! `multipart/alternative` messages with inlined CSS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart, SinglePart, header};
use lettre::{
    AsyncFileTransport, AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message,
    Tokio1Executor,
};

use crate::config::{Config, Tls, Transport};
use crate::email::Email;

enum Inner {
    File(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
}

/// A configured transport and the sender.
pub struct Mailer {
    inner: Inner,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// A 5xx answer: sending again will not help.
    pub permanent: bool,
    pub message: String,
}

impl Mailer {
    pub fn from_config(config: &Config, credentials: Option<PathBuf>) -> anyhow::Result<Mailer> {
        let from_text = match &config.mail.from {
            Some(f) => f.clone(),
            None => format!(
                "{} <noreply@{}>",
                config.site.title,
                config.site.base_url.host_str().unwrap_or("localhost")
            ),
        };
        let from: Mailbox = from_text
            .parse()
            .with_context(|| format!("mail.from `{from_text}` is not an address"))?;
        let reply_to = match &config.mail.reply_to {
            Some(r) => Some(
                r.parse()
                    .with_context(|| format!("mail.reply_to `{r}` is not an address"))?,
            ),
            None => None,
        };
        let inner = match config.mail.transport {
            Transport::File => {
                std::fs::create_dir_all(&config.mail.outbox).with_context(|| {
                    format!("cannot create the outbox {}", config.mail.outbox.display())
                })?;
                Inner::File(AsyncFileTransport::<Tokio1Executor>::new(
                    &config.mail.outbox,
                ))
            }
            Transport::Sendmail => Inner::Sendmail(AsyncSendmailTransport::<Tokio1Executor>::new()),
            Transport::Smtp => {
                let smtp = config
                    .mail
                    .smtp
                    .as_ref()
                    .context("mail.transport = \"smtp\" needs [mail.smtp]")?;
                let mut b = match smtp.tls {
                    Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                    Tls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    Tls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                };
                if let Some(p) = smtp.port {
                    b = b.port(p);
                }
                b = b.timeout(Some(smtp.timeout)).pool_config(
                    lettre::transport::smtp::PoolConfig::new()
                        .max_size(config.mail.concurrency as u32)
                        .idle_timeout(Duration::from_secs(60)),
                );
                if let Some(user) = &smtp.username {
                    let password = match (&smtp.password_file, credentials.map(|d| d.join("smtp-password"))) {
                        (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
                        (None, Some(c)) if c.exists() => std::fs::read_to_string(&c).with_context(|| format!("cannot read {}", c.display()))?,
                        _ => std::env::var("HEROLD_SMTP_PASSWORD").context("mail.smtp.username needs password_file, the credential smtp-password or HEROLD_SMTP_PASSWORD")?,
                    };
                    b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
                        user.clone(),
                        password.trim().to_string(),
                    ));
                }
                Inner::Smtp(b.build())
            }
        };
        Ok(Mailer {
            inner,
            from,
            reply_to,
        })
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        let result = match &self.inner {
            Inner::File(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (false, e.to_string())),
            Inner::Sendmail(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (false, e.to_string())),
            Inner::Smtp(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (e.is_permanent(), e.to_string())),
        };
        result.map_err(|(permanent, message)| SendError { permanent, message })
    }

    /// A `multipart/alternative` message: `text` and `html` (its CSS inlined).
    pub fn compose(
        &self,
        to: &Email,
        subject: &str,
        text: &str,
        html: &str,
    ) -> anyhow::Result<Message> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to.as_str().parse()?)
            .subject(subject);
        if let Some(r) = &self.reply_to {
            b = b.reply_to(r.clone());
        }
        let html = inline_css(html);
        Ok(b.multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(header::ContentType::TEXT_PLAIN)
                        .body(text.to_string()),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(header::ContentType::TEXT_HTML)
                        .body(html),
                ),
        )?)
    }
}

/// Moves the `<style>` rules into `style` attributes (many mail clients drop `<style>`).
pub fn inline_css(html: &str) -> String {
    css_inline::CSSInliner::options()
        .keep_style_tags(false)
        .build()
        .inline(html)
        .unwrap_or_else(|_| html.to_string())
}
