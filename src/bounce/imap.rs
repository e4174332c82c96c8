//! The bounce mailbox over IMAP, for operators who cannot add a pipe transport: each
//! unseen message is read without marking it, handled, then moved to `processed_mailbox`;
//! an unmatched one stays and is marked `\Seen`. Nothing is deleted; where the server lacks
//! MOVE, a message is copied first and only then flagged `\Deleted` and expunged.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::handle::Retry;
use super::report::Class;
use crate::config::{Imap, Tls};

/// At most this many messages a poll; the rest wait for the next one.
const PER_POLL: usize = 500;

const TIMEOUT: Duration = Duration::from_secs(60);

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}

type Session = async_imap::Session<Box<dyn Io>>;

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    /// The class of each message handled, in the order read.
    pub classes: Vec<Class>,
    /// Messages left for the next poll (more than [`PER_POLL`], or the database was busy).
    pub left: usize,
}

/// The IMAP password: `password_file`, the credential `imap-password`, or
/// `HEROLD_IMAP_PASSWORD`.
pub fn password(imap: &Imap, credentials: Option<PathBuf>) -> anyhow::Result<String> {
    let text = match (
        &imap.password_file,
        credentials.map(|d| d.join("imap-password")),
    ) {
        (Some(f), _) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, Some(c)) if c.exists() => {
            std::fs::read_to_string(&c).with_context(|| format!("cannot read {}", c.display()))?
        }
        _ => std::env::var("HEROLD_IMAP_PASSWORD").context(
            "[bounce.imap] needs password_file, the credential imap-password or HEROLD_IMAP_PASSWORD",
        )?,
    };
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Polls the mailbox once; `handle` gets each message's bytes. A [`Retry`] from it ends the
/// poll and leaves that message (and the rest) unseen for the next one.
pub async fn poll_once(
    imap: &Imap,
    password: &str,
    mut handle: impl FnMut(&[u8]) -> Result<Class, Retry>,
) -> anyhow::Result<Polled> {
    let mut session = tokio::time::timeout(TIMEOUT, connect(imap, password))
        .await
        .with_context(|| format!("IMAP {}:{}: no answer", imap.host, imap.port()))??;
    let result = tokio::time::timeout(
        Duration::from_secs(600),
        work(&mut session, imap, &mut handle),
    )
    .await
    .context("IMAP: the poll took longer than 10 minutes")
    .and_then(|r| r);
    // A polite goodbye; the server forgets the session either way.
    let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
    result
}

async fn work(
    session: &mut Session,
    imap: &Imap,
    handle: &mut impl FnMut(&[u8]) -> Result<Class, Retry>,
) -> anyhow::Result<Polled> {
    let caps = session.capabilities().await.context("IMAP CAPABILITY")?;
    let can_move = caps.has_str("MOVE");
    let uidplus = caps.has_str("UIDPLUS");
    ensure_mailbox(session, &imap.processed_mailbox).await?;
    session
        .select(&imap.mailbox)
        .await
        .with_context(|| format!("IMAP SELECT {}", imap.mailbox))?;
    let mut uids: Vec<u32> = session
        .uid_search("UNSEEN")
        .await
        .context("IMAP SEARCH UNSEEN")?
        .into_iter()
        .collect();
    uids.sort_unstable();
    let mut polled = Polled {
        left: uids.len().saturating_sub(PER_POLL),
        ..Polled::default()
    };
    for (i, uid) in uids.iter().take(PER_POLL).enumerate() {
        let fetched: Vec<async_imap::types::Fetch> = session
            .uid_fetch(uid.to_string(), "BODY.PEEK[]")
            .await
            .context("IMAP FETCH")?
            .try_collect()
            .await
            .context("IMAP FETCH")?;
        let Some(body) = fetched.iter().find_map(|f| f.body()) else {
            // Expunged by someone else meanwhile.
            continue;
        };
        let class = match handle(body) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("bounce mailbox: {e}; the message stays for the next poll");
                polled.left += uids.len().min(PER_POLL) - i;
                return Ok(polled);
            }
        };
        if class == Class::Unmatched {
            add_flags(session, *uid, "\\Seen").await?;
        } else if can_move {
            session
                .uid_mv(uid.to_string(), &imap.processed_mailbox)
                .await
                .with_context(|| format!("IMAP MOVE to {}", imap.processed_mailbox))?;
        } else {
            // Copied first; flagged and expunged only once the copy is safe.
            session
                .uid_copy(uid.to_string(), &imap.processed_mailbox)
                .await
                .with_context(|| format!("IMAP COPY to {}", imap.processed_mailbox))?;
            add_flags(session, *uid, "\\Seen \\Deleted").await?;
            if uidplus {
                session
                    .uid_expunge(uid.to_string())
                    .await
                    .context("IMAP UID EXPUNGE")?
                    .try_collect::<Vec<_>>()
                    .await
                    .context("IMAP UID EXPUNGE")?;
            }
        }
        polled.classes.push(class);
    }
    if !can_move && !uidplus && !polled.classes.is_empty() {
        session
            .expunge()
            .await
            .context("IMAP EXPUNGE")?
            .try_collect::<Vec<_>>()
            .await
            .context("IMAP EXPUNGE")?;
    }
    Ok(polled)
}

async fn add_flags(session: &mut Session, uid: u32, flags: &str) -> anyhow::Result<()> {
    let what = || format!("IMAP STORE {flags}");
    session
        .uid_store(uid.to_string(), format!("+FLAGS.SILENT ({flags})"))
        .await
        .with_context(what)?
        .try_collect::<Vec<_>>()
        .await
        .with_context(what)?;
    Ok(())
}

/// Creates `name` unless it exists.
async fn ensure_mailbox(session: &mut Session, name: &str) -> anyhow::Result<()> {
    let exists = {
        let found: Vec<_> = session
            .list(None, Some(name))
            .await
            .context("IMAP LIST")?
            .try_collect()
            .await
            .context("IMAP LIST")?;
        !found.is_empty()
    };
    if !exists {
        session
            .create(name)
            .await
            .with_context(|| format!("IMAP CREATE {name}"))?;
        tracing::info!(
            mailbox = name,
            "bounce mailbox: created the mailbox for handled messages"
        );
    }
    Ok(())
}

async fn connect(imap: &Imap, password: &str) -> anyhow::Result<Session> {
    let address = (imap.host.as_str(), imap.port());
    let tcp = TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to IMAP {}:{}", imap.host, imap.port()))?;
    tcp.set_nodelay(true)?;
    let client = match imap.tls {
        Tls::Tls => {
            let tls = tls_wrap(tcp, &imap.host).await?;
            let mut client = async_imap::Client::new(Box::new(tls) as Box<dyn Io>);
            greeting(&mut client).await?;
            client
        }
        Tls::Starttls => {
            let mut plain = async_imap::Client::new(tcp);
            greeting(&mut plain).await?;
            plain
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .context("IMAP STARTTLS")?;
            let tls = tls_wrap(plain.into_inner(), &imap.host).await?;
            async_imap::Client::new(Box::new(tls) as Box<dyn Io>)
        }
        Tls::None => {
            let mut client = async_imap::Client::new(Box::new(tcp) as Box<dyn Io>);
            greeting(&mut client).await?;
            client
        }
    };
    client
        .login(&imap.username, password)
        .await
        .map_err(|(e, _)| {
            anyhow::anyhow!("IMAP login failed (bounce.imap.username and its password): {e}")
        })
}

async fn greeting<T: AsyncRead + AsyncWrite + Unpin + Send + Debug>(
    client: &mut async_imap::Client<T>,
) -> anyhow::Result<()> {
    client
        .read_response()
        .await
        .context("IMAP greeting")?
        .context("IMAP: the server closed the connection before its greeting")?;
    Ok(())
}

async fn tls_wrap(
    tcp: TcpStream,
    host: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .with_context(|| format!("`{host}` is not a host name for TLS"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with IMAP {host}"))
}
