//! WebSub (W3C): after feeds change, tell each hub with `hub.mode=publish`. Every ping runs
//! on its own task with retries and backoff, so a slow or dead hub never holds up a build.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::metrics::Metrics;

/// How often a ping is tried before it is given up.
pub const ATTEMPTS: u32 = 6;

/// Pings every hub for every changed feed URL, in the background.
pub fn publish(
    client: &reqwest::Client,
    hubs: &[url::Url],
    feed_urls: &[String],
    metrics: &Arc<Metrics>,
) {
    for hub in hubs {
        for feed in feed_urls {
            let (client, hub, feed, metrics) =
                (client.clone(), hub.clone(), feed.clone(), metrics.clone());
            tokio::spawn(async move {
                ping(&client, &hub, &feed, &metrics, Duration::from_secs(1)).await
            });
        }
    }
}

/// One publish notification, retried with exponential backoff (with jitter) on failure.
pub async fn ping(
    client: &reqwest::Client,
    hub: &url::Url,
    feed: &str,
    metrics: &Metrics,
    first_delay: Duration,
) -> bool {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", "publish")
        .append_pair("hub.url", feed)
        .finish();
    let mut delay = first_delay;
    for attempt in 1..=ATTEMPTS {
        let result = client
            .post(hub.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.clone())
            .send()
            .await;
        let reason = match result {
            Ok(r) if r.status().is_success() => {
                metrics.websub_ok.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(hub = %hub, feed, attempt, "websub hub notified");
                return true;
            }
            Ok(r) => format!("hub answered {}", r.status()),
            Err(e) => format!("{e}"),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(hub = %hub, feed, attempts = attempt, "websub ping given up: {reason}");
            break;
        }
        tracing::debug!(hub = %hub, feed, attempt, "websub ping failed, retrying: {reason}");
        tokio::time::sleep(crate::clock::jitter(delay)).await;
        delay = (delay * 2).min(Duration::from_secs(300));
    }
    metrics.websub_failed.fetch_add(1, Ordering::Relaxed);
    false
}

/// The HTTP client for hubs (and imports): rustls, timeouts, an identifying user agent.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("herold/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("the HTTP client can be built")
}
