//! The HTTP server: feeds with validators and compression, health and metrics. One router,
//! built by [`app`], so tests can drive it on a real port or with `oneshot`.

mod feeds;
mod pages;
pub mod subscribe;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::subscriptions::Subscriptions;

/// The schedule lease as a node last saw it (PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder's node name, if anyone holds it.
    pub holder: Option<String>,
    pub fence: i64,
    /// Whether this node is the holder.
    pub mine: bool,
}

/// What the handlers share. The configuration is swapped as a whole on reload.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    feed_cache: feeds::Cache,
    /// The subscription routes' state; without it they answer 404.
    pub subs: Option<Arc<Subscriptions>>,
    /// The rate limit of `POST /subscribe`.
    limiter: subscribe::Limiter,
    /// PostgreSQL: who holds the schedule lease, as this node saw it last; `None` on SQLite.
    pub lease: RwLock<Option<LeaseView>>,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        subs: Option<Arc<Subscriptions>>,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            config: RwLock::new(config),
            metrics,
            feed_cache: feeds::Cache::default(),
            subs,
            limiter: subscribe::Limiter::default(),
            lease: RwLock::new(None),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// The largest request body accepted (a subscription form is a few hundred bytes).
pub const MAX_BODY: usize = 16 * 1024;

/// The whole HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(subscribe::form))
        .route("/subscribe", post(subscribe::subscribe))
        .route(
            "/confirm/{token}",
            get(subscribe::confirm_page).post(subscribe::confirm),
        )
        .route(
            "/unsubscribe/{token}",
            get(subscribe::unsubscribe_page).post(subscribe::unsubscribe),
        )
        .route(
            "/preferences/{token}",
            get(subscribe::preferences_page).post(subscribe::save_preferences),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route("/feeds/{*path}", get(feeds::serve))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(pages::serve)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .with_state(state)
}

/// Alive; on PostgreSQL also whether this node runs the digest schedules.
async fn healthz(State(state): State<Arc<AppState>>) -> String {
    match &*state.lease.read().unwrap_or_else(|e| e.into_inner()) {
        None => "ok\n".into(),
        Some(LeaseView {
            holder: Some(node),
            fence,
            mine: true,
        }) => format!("ok\nschedule: this node ({node}) holds the lease, fence {fence}\n"),
        Some(LeaseView {
            holder: Some(node),
            fence,
            mine: false,
        }) => format!(
            "ok\nschedule: {node} holds the lease, fence {fence}; this node is {}\n",
            crate::store::node_id()
        ),
        Some(LeaseView { holder: None, .. }) => {
            "ok\nschedule: nobody holds the lease right now\n".into()
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render();
    if let Some(lease) = &*state.lease.read().unwrap_or_else(|e| e.into_inner()) {
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "# HELP herold_schedule_lease_held 1 while this node runs the digest schedules (PostgreSQL).\n# TYPE herold_schedule_lease_held gauge\nherold_schedule_lease_held{{node=\"{}\"}} {}\n",
                crate::store::node_id(),
                u8::from(lease.mine)
            ),
        );
    }
    if let Some(subs) = &state.subs {
        // Bounces are handled by other processes too (`herold bounce` from the MTA): their
        // counts live in the database.
        let counts = subs.with_store(|s| Ok((s.bounce_counts()?, s.suspended_count()?)));
        match counts {
            Ok((counts, suspended)) => text.push_str(&crate::metrics::bounces(&counts, suspended)),
            Err(e) => tracing::debug!("metrics: bounce counts: {e}"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// Counts every response by route pattern (never the raw path) and status.
async fn count_responses(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.http_response(
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
    );
    response
}

/// Formats a time as an HTTP date: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}
