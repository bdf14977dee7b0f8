//! Shared test plumbing: servers, URLs, driver clients.

use std::time::Duration;

use powersync_source_core::RetryPolicy;
use powersync_source_mongodb::mongodb::Client;
use powersync_source_testkit::{or_skip, SecantusServer};

/// A fast reconnect policy for tests.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        give_up_after: Some(Duration::from_secs(90)),
        ..RetryPolicy::default()
    }
}

/// Starts SecantusDB with extra arguments, or prints one skip line and returns `None`.
pub async fn secantus(args: &[&str]) -> Option<SecantusServer> {
    powersync_source_testkit::init_tracing();
    let mut builder = SecantusServer::builder();
    for a in args {
        builder = builder.arg(*a);
    }
    or_skip(builder.start().await)
}

/// `mongodb://127.0.0.1:PORT/<db>?directConnection=true` plus `extra` query parameters.
pub fn url(server: &SecantusServer, db: &str, extra: &str) -> String {
    let mut u = format!(
        "mongodb://127.0.0.1:{}/{db}?directConnection=true",
        server.port()
    );
    if !extra.is_empty() {
        u.push('&');
        u.push_str(extra);
    }
    u
}

/// A driver client for test writes and reads.
pub async fn client(url: &str) -> Client {
    Client::with_uri_str(url).await.expect("driver client")
}
