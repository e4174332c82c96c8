//! What subscription pages and digests share: the store, the token keys, the mailer and the
//! templates; the links with tokens a subscriber gets; the confirmation and notice mails.

use std::sync::{Arc, Mutex, RwLock};

use crate::config::Config;
use crate::mail::Mailer;
use crate::store::{Store, Subscriber};
use crate::templates::Templates;
use crate::token::{Keys, Purpose};

/// What the subscription pages, the confirmation mails and the digests share.
pub struct Subscriptions {
    pub store: Mutex<Store>,
    pub keys: Keys,
    pub mailer: Mailer,
    pub templates: RwLock<Arc<Templates>>,
    /// Topics offered on the form (tags), kept current by the daemon.
    pub topics: RwLock<Vec<String>>,
}

impl Subscriptions {
    /// Opens the database, loads the token secret, the mail transport and the templates.
    pub fn open(config: &Config) -> anyhow::Result<Subscriptions> {
        let mut store = Store::connect(config)?;
        let (keys, source) = crate::secrets::load_from_env(config, &mut store)?;
        match &source {
            crate::secrets::Source::Generated(p) => {
                tracing::info!(file = %p.display(), "no token secret configured: made a random one and kept it beside the database")
            }
            other => tracing::debug!(source = ?other, "token secret loaded"),
        }
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
        let mailer = Mailer::from_config(config, credentials)?;
        Ok(Subscriptions::new(
            store,
            keys,
            mailer,
            Templates::for_config(config)?,
        ))
    }

    pub fn new(store: Store, keys: Keys, mailer: Mailer, templates: Templates) -> Subscriptions {
        Subscriptions {
            store: Mutex::new(store),
            keys,
            mailer,
            templates: RwLock::new(Arc::new(templates)),
            topics: RwLock::new(Vec::new()),
        }
    }

    /// The templates as loaded last (a reload swaps them).
    pub fn templates(&self) -> Arc<Templates> {
        self.templates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The topics the form offers now.
    pub fn topics(&self) -> Vec<String> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The database, locked (one connection, shared by the tasks of this process).
    pub fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the database (one connection, shared by the tasks of this process).
    pub fn with_store<T>(
        &self,
        f: impl FnOnce(&mut Store) -> crate::store::Result<T>,
    ) -> crate::store::Result<T> {
        f(&mut self.lock_store())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Confirm,
    Notice,
}

/// Links with tokens for a subscriber.
pub struct Links {
    pub confirm: String,
    pub unsubscribe: String,
    pub preferences: String,
}

pub fn links(config: &Config, keys: &Keys, s: &Subscriber) -> Links {
    let base = config.public_url();
    let confirm_expiry = s.created_at + config.privacy.pending_expiry.as_secs() as i64;
    Links {
        confirm: format!(
            "{base}/confirm/{}",
            keys.sign(Purpose::Confirm, s.id, &s.email, confirm_expiry)
        ),
        unsubscribe: format!(
            "{base}/unsubscribe/{}",
            keys.sign(Purpose::Unsubscribe, s.id, &s.email, 0)
        ),
        preferences: format!(
            "{base}/preferences/{}",
            keys.sign(Purpose::Preferences, s.id, &s.email, 0)
        ),
    }
}

/// What every page and mail shows: the site and its legal links.
pub fn common_context(config: &Config) -> serde_json::Value {
    let url = |u: &Option<url::Url>| u.as_ref().map(|u| u.to_string()).unwrap_or_default();
    serde_json::json!({
        "site_title": config.site.title,
        "privacy_url": url(&config.site.privacy_url),
        "imprint_url": url(&config.site.imprint_url),
        "accessibility_url": url(&config.site.accessibility_url),
        "expiry_hours": config.privacy.pending_expiry.as_secs() / 3600,
    })
}

/// Composes and sends a confirmation or notice mail now.
pub async fn send_mail(
    config: &Config,
    subs: &Subscriptions,
    s: &Subscriber,
    kind: MailKind,
) -> anyhow::Result<()> {
    let mut message = crate::mail::Outgoing::from(compose(config, subs, s, kind)?);
    message.envelope = subs
        .mailer
        .envelope(&subs.keys, 0, s.id, s.email.as_str())?;
    subs.mailer
        .send_raw(&message)
        .await
        .map_err(anyhow::Error::from)
}

fn compose(
    config: &Config,
    subs: &Subscriptions,
    s: &Subscriber,
    kind: MailKind,
) -> anyhow::Result<lettre::Message> {
    let templates = subs.templates();
    let language = templates.get(s.language.as_deref());
    let l = links(config, &subs.keys, s);
    let mut ctx = common_context(config);
    if let serde_json::Value::Object(m) = &mut ctx {
        m.insert("confirm_url".into(), l.confirm.into());
        m.insert("unsubscribe_url".into(), l.unsubscribe.into());
        m.insert("preferences_url".into(), l.preferences.into());
    }
    let name = match kind {
        MailKind::Confirm => "confirm",
        MailKind::Notice => "notice",
    };
    let subject = language.t(
        &format!("mail.{name}.subject"),
        &[("site", &config.site.title)],
    );
    let text = language.render(&format!("mail/{name}.txt"), &ctx)?;
    let html = language.render(&format!("mail/{name}.html"), &ctx)?;
    subs.mailer.compose(&s.email, &subject, &text, &html)
}
