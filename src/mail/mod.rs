//! Sending mail: the transports (`file`, `smtp`, `sendmail`), the composition of
//! `multipart/alternative` messages with inlined CSS, messages prepared once for many
//! recipients (`mime`) and their DKIM signatures (`dkim`).

pub mod dkim;
pub mod mime;

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
    /// The site's time zone: `Date` headers carry its offset.
    pub timezone: chrono_tz::Tz,
    /// For SMTP without TLS or with STARTTLS: how workers open connections of their own.
    direct: Option<Direct>,
    /// `mail.return_path`: the envelope sender, with a token per mail (VERP) or fixed;
    /// `None`: the From address.
    pub return_path: Option<crate::email::ReturnPath>,
}

/// What a worker needs to open its own SMTP connection.
#[derive(Clone)]
struct Direct {
    host: String,
    port: u16,
    starttls: bool,
    credentials: Option<lettre::transport::smtp::authentication::Credentials>,
    timeout: Duration,
}

/// A message ready for the wire: who it goes to, and its bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope: lettre::address::Envelope,
    pub bytes: Vec<u8>,
}

impl From<Message> for Outgoing {
    fn from(m: Message) -> Outgoing {
        Outgoing {
            envelope: m.envelope().clone(),
            bytes: m.formatted(),
        }
    }
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
        let mut direct = None;
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
                let mut smtp_credentials = None;
                if let Some(user) = &smtp.username {
                    let password = match (&smtp.password_file, credentials.map(|d| d.join("smtp-password"))) {
                        (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
                        (None, Some(c)) if c.exists() => std::fs::read_to_string(&c).with_context(|| format!("cannot read {}", c.display()))?,
                        _ => std::env::var("HEROLD_SMTP_PASSWORD").context("mail.smtp.username needs password_file, the credential smtp-password or HEROLD_SMTP_PASSWORD")?,
                    };
                    let c = lettre::transport::smtp::authentication::Credentials::new(
                        user.clone(),
                        password.trim().to_string(),
                    );
                    b = b.credentials(c.clone());
                    smtp_credentials = Some(c);
                }
                if smtp.tls != Tls::Tls {
                    direct = Some(Direct {
                        host: smtp.host.clone(),
                        port: smtp
                            .port
                            .unwrap_or(if smtp.tls == Tls::Starttls { 587 } else { 25 }),
                        starttls: smtp.tls == Tls::Starttls,
                        credentials: smtp_credentials,
                        timeout: smtp.timeout,
                    });
                }
                Inner::Smtp(b.build())
            }
        };
        let return_path = match &config.mail.return_path {
            Some(r) => Some(
                crate::email::ReturnPath::parse(r)
                    .map_err(|e| anyhow::anyhow!("mail.return_path {e}"))?,
            ),
            None => None,
        };
        Ok(Mailer {
            inner,
            from,
            reply_to,
            timezone: config.site.timezone,
            direct,
            return_path,
        })
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        self.send_raw(&Outgoing::from(message)).await
    }

    /// The envelope of the mail of `subscriber` in `run` (0: outside a digest) to `to`: its
    /// sender is the return path, with the delivery's signed token when it has `{token}`.
    pub fn envelope(
        &self,
        keys: &crate::token::Keys,
        run: i64,
        subscriber: i64,
        to: &str,
    ) -> anyhow::Result<lettre::address::Envelope> {
        let from = match &self.return_path {
            Some(r) => r.address(|| keys.sign_return(run, subscriber)).parse()?,
            None => self.from.email.clone(),
        };
        Ok(lettre::address::Envelope::new(
            Some(from),
            vec![to.parse()?],
        )?)
    }

    /// Sends bytes already assembled (and signed).
    pub async fn send_raw(&self, out: &Outgoing) -> Result<(), SendError> {
        let (envelope, bytes) = (&out.envelope, out.bytes.as_slice());
        let result = match &self.inner {
            Inner::File(t) => t
                .send_raw(envelope, bytes)
                .await
                .map(|_| ())
                .map_err(|e| (false, e.to_string())),
            Inner::Sendmail(t) => t
                .send_raw(envelope, bytes)
                .await
                .map(|_| ())
                .map_err(|e| (false, e.to_string())),
            Inner::Smtp(t) => t
                .send_raw(envelope, bytes)
                .await
                .map(|_| ())
                .map_err(|e| (e.is_permanent(), e.to_string())),
        };
        result.map_err(|(permanent, message)| SendError {
            permanent,
            message: crate::email::redact(&message),
        })
    }

    /// A sender for one worker: with SMTP (no TLS or STARTTLS) a connection of its own,
    /// opened with `TCP_NODELAY` (lettre's pool leaves Nagle's algorithm on, which stalls
    /// each message for a delayed ACK) and reused for every message; otherwise the shared
    /// transport.
    pub fn connection(&self) -> Connection<'_> {
        Connection {
            mailer: self,
            conn: None,
        }
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
        let mut message = b.multipart(
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
        )?;
        set_date(&mut message, crate::clock::now_utc(), self.timezone);
        Ok(message)
    }
}

/// A `Date` value: `at` in `tz` (`Mon, 30 Nov 2026 09:00:00 +0100`).
pub fn date_value(at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    at.with_timezone(&tz)
        .format("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// A display name for a header phrase: as it is when ASCII, else an RFC 2047 encoded word.
pub fn encode_phrase(text: &str) -> String {
    use base64::Engine;
    if text.is_ascii() {
        return text.to_string();
    }
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    )
}

/// Header fields as lettre encodes them (RFC 2047 words, folding), as `(name, value)`.
pub fn fields(headers: &lettre::message::header::Headers) -> Vec<(String, String)> {
    let text = headers.to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push_str("\r\n");
                v.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.to_string(), value.trim_start().to_string()));
        }
    }
    out
}

/// Loads the DKIM key of `[mail.dkim]` (or the credential `dkim-key`).
pub fn dkim_signer(
    config: &Config,
    credentials: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<dkim::Signer>>> {
    let Some(d) = &config.mail.dkim else {
        return Ok(None);
    };
    let pem =
        match (&d.private_key_file, credentials.map(|c| c.join("dkim-key"))) {
            (Some(f), _) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?,
            (None, Some(c)) if c.exists() => std::fs::read_to_string(&c)
                .with_context(|| format!("cannot read {}", c.display()))?,
            _ => anyhow::bail!("[mail.dkim] needs private_key_file or the credential dkim-key"),
        };
    let signer =
        dkim::Signer::from_pem(&d.domain, &d.selector, &pem).context("[mail.dkim] private key")?;
    Ok(Some(std::sync::Arc::new(signer)))
}

/// Sets the `Date` header to `at` in `tz` (`Mon, 30 Nov 2026 09:00:00 +0100`); lettre
/// writes every date in UTC (`+0000`), which readers show as a foreign time.
pub fn set_date(message: &mut Message, at: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) {
    use lettre::message::header::{HeaderName, HeaderValue};
    let value = date_value(at, tz);
    message
        .headers_mut()
        .insert_raw(HeaderValue::dangerous_new_pre_encoded(
            HeaderName::new_from_ascii_str("Date"),
            value.clone(),
            value,
        ));
}

/// Moves the `<style>` rules into `style` attributes (many mail clients drop `<style>`).
pub fn inline_css(html: &str) -> String {
    css_inline::CSSInliner::options()
        .keep_style_tags(false)
        .build()
        .inline(html)
        .unwrap_or_else(|_| html.to_string())
}

/// A worker's sender; see [`Mailer::connection`].
pub struct Connection<'a> {
    mailer: &'a Mailer,
    conn: Option<lettre::transport::smtp::client::AsyncSmtpConnection>,
}

impl Connection<'_> {
    pub async fn send(&mut self, out: &Outgoing) -> Result<(), SendError> {
        let Some(direct) = self.mailer.direct.clone() else {
            return self.mailer.send_raw(out).await;
        };
        let temporary = |message: String| SendError {
            permanent: false,
            message,
        };
        if self.conn.as_ref().is_none_or(|c| c.has_broken()) {
            self.conn = None;
            let conn = tokio::time::timeout(direct.timeout, connect(&direct))
                .await
                .map_err(|_| {
                    temporary(format!(
                        "connecting to {}:{} timed out",
                        direct.host, direct.port
                    ))
                })?
                .map_err(|e| {
                    temporary(format!(
                        "cannot connect to {}:{}: {e}",
                        direct.host, direct.port
                    ))
                })?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match tokio::time::timeout(direct.timeout, conn.send(&out.envelope, &out.bytes)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                // lettre has closed the connection; the next message opens a new one.
                self.conn = None;
                Err(SendError {
                    permanent: e.is_permanent(),
                    // A server's answer often repeats the recipient: it never reaches a log
                    // line or the database.
                    message: crate::email::redact(&e.to_string()),
                })
            }
            Err(_) => {
                self.conn = None;
                Err(temporary("the server did not answer in time".into()))
            }
        }
    }
}

async fn connect(
    d: &Direct,
) -> anyhow::Result<lettre::transport::smtp::client::AsyncSmtpConnection> {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    let stream = tokio::net::TcpStream::connect((d.host.as_str(), d.port)).await?;
    stream.set_nodelay(true)?;
    let hello = ClientId::default();
    let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello).await?;
    if d.starttls {
        conn.starttls(TlsParameters::new(d.host.clone())?, &hello)
            .await?;
    }
    if let Some(c) = &d.credentials {
        use lettre::transport::smtp::authentication::Mechanism;
        conn.auth(&[Mechanism::Plain, Mechanism::Login], c).await?;
    }
    Ok(conn)
}
