//! The subscription pages: `GET /`, `POST /subscribe`, and the confirm, unsubscribe and
//! preferences links. A `GET` never changes anything (mail gateways open every link); the
//! change is always the `POST` of a one-button form, or an RFC 8058 one-click `POST`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use crate::config::Config;
use crate::email::Email;
use crate::store::{Choice, Confirmed, Requested, Store, Subscriber};
use crate::subscriptions::{MailKind, Subscriptions, links};
use crate::templates::Templates;
use crate::token::Purpose;

/// Requests to `POST /subscribe` one client address may make per window.
pub const REQUESTS_PER_WINDOW: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(600);

/// The rate limit of `POST /subscribe`: a fixed window per client address.
#[derive(Default)]
pub struct Limiter(Mutex<HashMap<IpAddr, (Instant, u32)>>);

impl Limiter {
    /// Whether `ip` may make another request now.
    fn allow(&self, ip: IpAddr) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= REQUESTS_PER_WINDOW
    }
}

/// Runs `f` on the database; a failure becomes the error page.
fn with_store<T>(
    subs: &Subscriptions,
    f: impl FnOnce(&mut Store) -> crate::store::Result<T>,
) -> Result<T, Page> {
    subs.with_store(f).map_err(|e| {
        tracing::error!("database: {e}");
        Page::message(StatusCode::INTERNAL_SERVER_ERROR, "error")
    })
}

/// A page to answer with: a template, a status, what the template shows, and in which
/// language (`None`: the site's).
pub struct Page {
    status: StatusCode,
    template: &'static str,
    context: serde_json::Value,
    lang: Option<String>,
}

impl Page {
    fn message(status: StatusCode, kind: &str) -> Page {
        Page {
            status,
            template: "message.html",
            context: serde_json::json!({ "kind": kind }),
            lang: None,
        }
    }

    fn in_language(mut self, lang: Option<&str>) -> Page {
        self.lang = lang.map(str::to_string);
        self
    }

    fn render(self, state: &AppState, subs: &Subscriptions) -> Response {
        let config = state.config();
        let templates = subs.templates();
        let language = templates.get(self.lang.as_deref());
        let mut context = common_context(&config, &templates);
        if let (serde_json::Value::Object(base), serde_json::Value::Object(extra)) =
            (&mut context, self.context)
        {
            base.extend(extra);
        }
        match language.render(self.template, &context) {
            Ok(html) => html_response(self.status, html),
            Err(e) => {
                tracing::error!("{e:#}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
            }
        }
    }
}

fn common_context(config: &Config, templates: &Templates) -> serde_json::Value {
    let mut context = crate::subscriptions::common_context(config);
    if let serde_json::Value::Object(m) = &mut context {
        m.insert(
            "languages".into(),
            serde_json::to_value(templates.choices()).expect("serialises"),
        );
        m.insert("switch_url".into(), "".into());
        m.insert("action".into(), "".into());
    }
    context
}

/// HTML with the headers every page carries: no caching of token pages, no referrer (the
/// URL holds a token), a strict content security policy.
fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    r
}

/// One checkbox of a form.
#[derive(Serialize)]
struct Checkbox {
    name: String,
    title: String,
    checked: bool,
}

fn digest_choices(config: &Config, chosen: &[String]) -> Vec<Checkbox> {
    config
        .digest
        .iter()
        .enumerate()
        .map(|(i, d)| Checkbox {
            name: d.name.clone(),
            title: d.title.clone().unwrap_or_else(|| d.name.clone()),
            checked: if chosen.is_empty() {
                i == 0
            } else {
                chosen.contains(&d.name)
            },
        })
        .collect()
}

fn topic_choices(offered: &[String], chosen: &[String]) -> Vec<Checkbox> {
    offered
        .iter()
        .map(|t| Checkbox {
            name: t.clone(),
            title: t.clone(),
            checked: chosen.contains(t),
        })
        .collect()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// `GET /` (and `/?lang=en`): the subscription form.
pub async fn form(
    State(state): State<Arc<AppState>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(subs) = state.subs.clone() else {
        return not_found();
    };
    let lang = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "lang")
            .and_then(|(_, v)| subs.templates().find(&v).map(|l| l.code.clone()))
    });
    form_page(
        &state,
        &subs,
        StatusCode::OK,
        "",
        None,
        &Choice {
            language: lang,
            ..Choice::default()
        },
    )
}

fn form_page(
    state: &AppState,
    subs: &Subscriptions,
    status: StatusCode,
    email: &str,
    error: Option<&str>,
    choice: &Choice,
) -> Response {
    let (topics, digests) = (&choice.topics, &choice.digests);
    let config = state.config();
    let offered = subs.topics();
    let templates = subs.templates();
    Page {
        status,
        template: "subscribe.html",
        context: serde_json::json!({
            "action": format!("{}/subscribe", config.public_url()),
            "email": email,
            "error": error,
            "topics": topic_choices(&offered, topics),
            "digests": digest_choices(&config, digests),
            "consent_html": templates.get(choice.language.as_deref()).consent_html,
            "switch_url": format!("{}/", config.public_url()),
            "news_url": config.site_link().to_string(),
            "feed_url": format!("{}/{}", config.feeds_base_url(), config.feeds.formats.first().copied().unwrap_or(crate::config::Format::Atom).file_name()),
        }),
        lang: choice.language.clone(),
    }
    .render(state, subs)
}

/// The fields of a subscription request, from a form or JSON.
struct Request {
    email: String,
    topics: Vec<String>,
    digests: Vec<String>,
    language: Option<String>,
    json: bool,
}

fn parse_request(headers: &HeaderMap, body: &[u8]) -> Option<Request> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            email: String,
            #[serde(default)]
            topics: Vec<String>,
            #[serde(default)]
            digests: Vec<String>,
            #[serde(default)]
            language: Option<String>,
        }
        // Only an object: serde would take a struct from an array (`["a@x.de"]`) too.
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        if !value.is_object() {
            return None;
        }
        let j: Json = serde_json::from_value(value).ok()?;
        return Some(Request {
            email: j.email,
            topics: j.topics,
            digests: j.digests,
            language: j.language,
            json: true,
        });
    }
    if !content_type.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let mut r = Request {
        email: String::new(),
        topics: Vec::new(),
        digests: Vec::new(),
        language: None,
        json: false,
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "email" => r.email = v.into_owned(),
            "topics" => r.topics.push(v.into_owned()),
            "digests" => r.digests.push(v.into_owned()),
            "language" => r.language = Some(v.into_owned()),
            _ => {}
        }
    }
    Some(r)
}

/// The client's address: the peer, or the last address in `X-Forwarded-For` that is not a
/// trusted proxy when the peer is one.
pub fn client_ip(config: &Config, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = |ip: IpAddr| config.server.trusted_proxies.iter().any(|c| c.contains(ip));
    let mut ip = peer.ip();
    if !trusted(ip) {
        return ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for hop in forwarded.into_iter().rev() {
        ip = hop;
        if !trusted(hop) {
            break;
        }
    }
    ip
}

/// `POST /subscribe`: answers the same for new, pending and active addresses.
pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(subs) = state.subs.clone() else {
        return not_found();
    };
    let config = state.config();
    let ip = client_ip(&config, peer, &headers);
    if !state.limiter.allow(ip) {
        let mut r = Page::message(StatusCode::TOO_MANY_REQUESTS, "too_many").render(&state, &subs);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
        return r;
    }
    let Some(req) = parse_request(&headers, &body) else {
        return Page::message(StatusCode::BAD_REQUEST, "bad_request").render(&state, &subs);
    };
    let Some(language) = request_language(&subs, req.language.as_deref()) else {
        if req.json {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({"error": "unknown language"})),
            )
                .into_response();
        }
        return Page::message(StatusCode::BAD_REQUEST, "bad_request").render(&state, &subs);
    };
    let email = match Email::parse(&req.email) {
        Ok(e) => e,
        Err(_) if req.json => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({"error": "invalid email"})),
            )
                .into_response();
        }
        Err(_) => {
            let msg = subs
                .templates()
                .get(language.as_deref())
                .t("subscribe.invalid_email", &[]);
            let shown: String = req
                .email
                .chars()
                .filter(|c| !c.is_control())
                .take(254)
                .collect();
            return form_page(
                &state,
                &subs,
                StatusCode::UNPROCESSABLE_ENTITY,
                &shown,
                Some(&msg),
                &Choice {
                    topics: req.topics,
                    digests: req.digests,
                    language,
                },
            );
        }
    };
    let (topics, digests) = choices(&config, &subs, req.topics, req.digests);
    let choice = Choice {
        topics,
        digests,
        language,
    };
    let client = config.privacy.record_client_address.then(|| ip.to_string());
    let now = crate::clock::unix_seconds() as i64;
    let version = subs.templates().consent_version.clone();
    let outcome = match with_store(&subs, |s| {
        s.request(&email, &choice, &version, client.as_deref(), now)
    }) {
        Ok(o) => o,
        Err(page) => return page.render(&state, &subs),
    };
    match outcome {
        Requested::Confirm(s) => spawn_mail(&state, &subs, s, MailKind::Confirm),
        Requested::AlreadyActive(s) => spawn_mail(&state, &subs, s, MailKind::Notice),
        Requested::Quiet => {
            tracing::info!("subscription request without mail: the address had enough mails today")
        }
    }
    if req.json {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "check your inbox"})),
        )
            .into_response();
    }
    Page::message(StatusCode::OK, "check_inbox")
        .in_language(choice.language.as_deref())
        .render(&state, &subs)
}

/// The language of a request as the site spells it: `Some(None)` when none was given,
/// `None` when it is not one of the site's languages.
fn request_language(subs: &Subscriptions, language: Option<&str>) -> Option<Option<String>> {
    match language.map(str::trim).filter(|l| !l.is_empty()) {
        None => Some(None),
        Some(l) => subs.templates().find(l).map(|l| Some(l.code.clone())),
    }
}

/// The topics and digests of a request that the site offers (others are dropped), sorted;
/// no digest chosen means the first.
fn choices(
    config: &Config,
    subs: &Subscriptions,
    topics: Vec<String>,
    digests: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let offered = subs.topics();
    let mut topics: Vec<String> = topics.into_iter().filter(|t| offered.contains(t)).collect();
    topics.sort();
    topics.dedup();
    let mut digests: Vec<String> = digests
        .into_iter()
        .filter(|d| config.digest.iter().any(|x| &x.name == d))
        .collect();
    digests.sort();
    digests.dedup();
    if digests.is_empty() {
        digests.extend(config.digest.first().map(|d| d.name.clone()));
    }
    (topics, digests)
}

/// Sends the confirmation (or notice) mail in the background: the answer to the request
/// does not wait for, or reveal, what the mail server does.
fn spawn_mail(state: &AppState, subs: &Arc<Subscriptions>, s: Subscriber, kind: MailKind) {
    let config = state.config();
    let subs = subs.clone();
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        let id = s.id;
        match crate::subscriptions::send_mail(&config, &subs, &s, kind).await {
            Ok(()) => {
                metrics
                    .mails_sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(subscriber = id, "subscription mail sent");
            }
            Err(e) => {
                metrics
                    .mails_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(subscriber = id, "subscription mail not sent: {e:#}");
            }
        }
    });
}

/// Checks a token for `purpose` and loads its subscriber; `None` for anything invalid.
fn subscriber_for(
    subs: &Subscriptions,
    token: &str,
    purpose: Purpose,
) -> Result<Option<Subscriber>, Page> {
    let now = crate::clock::unix_seconds() as i64;
    let Some(claims) = subs.keys.claims(token, purpose, now) else {
        return Ok(None);
    };
    let s = with_store(subs, |st| st.get(claims.subscriber))?;
    Ok(s.filter(|s| subs.keys.verify(token, &s.email)))
}

fn invalid(state: &AppState, subs: &Subscriptions) -> Response {
    Page::message(StatusCode::NOT_FOUND, "invalid_link").render(state, subs)
}

macro_rules! subs_or_return {
    ($state:expr) => {
        match $state.subs.clone() {
            Some(s) => s,
            None => return not_found(),
        }
    };
}

macro_rules! subscriber_or_return {
    ($state:expr, $subs:expr, $token:expr, $purpose:expr) => {
        match subscriber_for(&$subs, &$token, $purpose) {
            Ok(Some(s)) => s,
            Ok(None) => return invalid(&$state, &$subs),
            Err(page) => return page.render(&$state, &$subs),
        }
    };
}

fn action_page(
    state: &AppState,
    subs: &Subscriptions,
    s: &Subscriber,
    kind: &str,
    path: &str,
) -> Response {
    let action = format!("{}{path}", state.config().public_url());
    Page {
        status: StatusCode::OK,
        template: "message.html",
        context: serde_json::json!({ "kind": kind, "action": action }),
        lang: s.language.clone(),
    }
    .render(state, subs)
}

/// `GET /confirm/{token}`: a page with one button; changes nothing.
pub async fn confirm_page(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Response {
    let subs = subs_or_return!(state);
    let s = subscriber_or_return!(state, subs, token, Purpose::Confirm);
    let kind = if s.status == crate::store::Status::Active {
        "already_confirmed"
    } else {
        "confirm"
    };
    action_page(&state, &subs, &s, kind, &format!("/confirm/{token}"))
}

/// `POST /confirm/{token}`.
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let subs = subs_or_return!(state);
    let s = subscriber_or_return!(state, subs, token, Purpose::Confirm);
    let config = state.config();
    let client = config
        .privacy
        .record_client_address
        .then(|| client_ip(&config, peer, &headers).to_string());
    let now = crate::clock::unix_seconds() as i64;
    match with_store(&subs, |st| st.confirm(s.id, client.as_deref(), now)) {
        Ok(Confirmed::Now(s)) => {
            tracing::info!(subscriber = s.id, "subscription confirmed");
            Page::message(StatusCode::OK, "confirmed")
                .in_language(s.language.as_deref())
                .render(&state, &subs)
        }
        Ok(Confirmed::Already(s)) => Page::message(StatusCode::OK, "already_confirmed")
            .in_language(s.language.as_deref())
            .render(&state, &subs),
        Ok(Confirmed::Unknown) => invalid(&state, &subs),
        Err(page) => page.render(&state, &subs),
    }
}

/// `GET /unsubscribe/{token}`: a page with one button; changes nothing.
pub async fn unsubscribe_page(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Response {
    let subs = subs_or_return!(state);
    let s = subscriber_or_return!(state, subs, token, Purpose::Unsubscribe);
    action_page(
        &state,
        &subs,
        &s,
        "unsubscribe",
        &format!("/unsubscribe/{token}"),
    )
}

/// `POST /unsubscribe/{token}`, also RFC 8058 one-click (`List-Unsubscribe=One-Click`):
/// answers 200 with a short page, no redirect.
pub async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Response {
    let subs = subs_or_return!(state);
    let s = subscriber_or_return!(state, subs, token, Purpose::Unsubscribe);
    let now = crate::clock::unix_seconds() as i64;
    match with_store(&subs, |st| st.unsubscribe(s.id, "unsubscribe link", now)) {
        Ok(_) => {
            tracing::info!(subscriber = s.id, "unsubscribed");
            Page::message(StatusCode::OK, "unsubscribed")
                .in_language(s.language.as_deref())
                .render(&state, &subs)
        }
        Err(page) => page.render(&state, &subs),
    }
}

/// `GET /preferences/{token}`: the subscriber's topics and digests.
pub async fn preferences_page(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Response {
    let subs = subs_or_return!(state);
    let s = subscriber_or_return!(state, subs, token, Purpose::Preferences);
    let config = state.config();
    let offered = subs.topics();
    let l = links(&config, &subs.keys, &s);
    Page {
        status: StatusCode::OK,
        template: "preferences.html",
        context: serde_json::json!({
            "action": format!("{}/preferences/{token}", config.public_url()),
            "email": s.email,
            "topics": topic_choices(&offered, &s.topics),
            "digests": digest_choices(&config, &s.digests),
            "unsubscribe_url": l.unsubscribe,
        }),
        lang: s.language.clone(),
    }
    .render(&state, &subs)
}

/// `POST /preferences/{token}`: saves topics and digests.
pub async fn save_preferences(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let subs = subs_or_return!(state);
    let s = subscriber_or_return!(state, subs, token, Purpose::Preferences);
    let Some(req) = parse_request(&headers, &body) else {
        return Page::message(StatusCode::BAD_REQUEST, "bad_request").render(&state, &subs);
    };
    let Some(language) = request_language(&subs, req.language.as_deref()) else {
        return Page::message(StatusCode::BAD_REQUEST, "bad_request").render(&state, &subs);
    };
    let config = state.config();
    let (topics, digests) = choices(&config, &subs, req.topics, req.digests);
    let choice = Choice {
        topics,
        digests,
        // A form without the choice (a site with one language) keeps what was chosen.
        language: language.or(s.language),
    };
    let now = crate::clock::unix_seconds() as i64;
    match with_store(&subs, |st| st.set_preferences(s.id, &choice, now)) {
        Ok(true) => Page::message(StatusCode::OK, "saved")
            .in_language(choice.language.as_deref())
            .render(&state, &subs),
        Ok(false) => invalid(&state, &subs),
        Err(page) => page.render(&state, &subs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let config = Config::parse(
            "[site]\ntitle = \"t\"\nbase_url = \"https://x.de\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
            "c",
            &[],
            std::path::Path::new("/"),
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        let proxy: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        let stranger: SocketAddr = "192.0.2.50:5000".parse().unwrap();
        assert_eq!(
            client_ip(&config, proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&config, stranger, &h),
            "192.0.2.50".parse::<IpAddr>().unwrap()
        );
    }
}
