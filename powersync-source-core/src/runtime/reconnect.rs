//! The reconnect loop's bookkeeping: one retry budget per outage.

use std::time::Duration;

use crate::error::SourceError;
use crate::retry::{Backoff, RetryPolicy};
use crate::runtime::emitter::{Emitter, Step, Stop};

/// Decides, after each failure of a stream's connection, whether and when to reconnect.
///
/// The budget of [`RetryPolicy`] (`max_attempts`, `give_up_after`) counts from the first
/// failure of an outage and is reset by [`Reconnect::healthy`], which the loop calls after its
/// first successful read from the source. A stream that has run for days therefore survives a
/// server restart exactly as a new one does.
///
/// ```no_run
/// # use powersync_source_core::runtime::{Emitter, Reconnect, Step, Stop};
/// # async fn session(out: &mut Emitter, r: &mut Reconnect) -> Step<()> { Ok(()) }
/// # async fn run(out: &mut Emitter, policy: powersync_source_core::RetryPolicy) -> Step<()> {
/// let mut reconnect = Reconnect::new(policy);
/// loop {
///     match session(out, &mut reconnect).await {   // calls reconnect.healthy() once data flows
///         Ok(()) => return Ok(()),
///         Err(Stop::Closed) => return Err(Stop::Closed),
///         Err(Stop::Failed(e)) => reconnect.after_failure(e, out).await?,
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Reconnect {
    policy: RetryPolicy,
    outage: Option<Backoff>,
}

impl Reconnect {
    /// A reconnect state with no outage in progress.
    pub fn new(policy: RetryPolicy) -> Self {
        Reconnect {
            policy,
            outage: None,
        }
    }

    /// The source delivered something after (re)connecting: any outage is over, and the next
    /// failure starts a fresh budget.
    pub fn healthy(&mut self) {
        self.outage = None;
    }

    /// Whether the loop is inside an outage (failed and not yet healthy again).
    pub fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// The delay before the next attempt after `error`, counting the reconnect in the stream's
    /// statistics, or `None` when the stream must give up (not retryable, or the budget of
    /// this outage is spent).
    pub fn next_delay(&mut self, error: &SourceError, out: &Emitter) -> Option<Duration> {
        let policy = &self.policy;
        let delay = self
            .outage
            .get_or_insert_with(|| policy.backoff())
            .next_delay(error)?;
        out.stats().record_reconnect();
        Some(delay)
    }

    /// Handles a failed session: when the error is retryable and the budget allows, tells the
    /// host to discard an open transaction ([`Emitter::abort_open_transaction`]), logs, waits
    /// the backoff delay and returns `Ok(())` (reconnect now); otherwise returns the error as
    /// final. Returns [`Stop::Closed`] when the host goes away while waiting.
    pub async fn after_failure(&mut self, error: SourceError, out: &mut Emitter) -> Step<()> {
        let Some(delay) = self.next_delay(&error, out) else {
            return Err(Stop::Failed(error));
        };
        out.abort_open_transaction().await?;
        let source = out.stats().source().unwrap_or("unknown");
        let attempt = self.outage.as_ref().map_or(0, Backoff::attempts);
        // The wait runs in a span carrying the source, so what a host logs meanwhile (and
        // the connector's next connect) is attributed to this reconnect.
        let span = tracing::info_span!("reconnect", source, attempt);
        span.in_scope(|| {
            tracing::warn!(
                error = %error,
                delay_ms = delay.as_millis() as u64,
                "stream connection failed; reconnecting"
            )
        });
        let wait = async {
            tokio::select! {
                _ = tokio::time::sleep(delay) => Ok(()),
                _ = out.closed() => Err(Stop::Closed),
            }
        };
        tracing::Instrument::instrument(wait, span).await
    }
}
