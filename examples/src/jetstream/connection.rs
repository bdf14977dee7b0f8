//! Connecting to NATS, creating the stream, reading the last commit marker; NATS errors as
//! [`SourceError`]s so that transient ones (server down, timeouts) are retried with backoff
//! and permanent ones (bad URL, credentials, a stream with other subjects) stop the program.

use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use async_nats::{ConnectErrorKind, ConnectOptions};
use powersync_source_core::secret::redact_url;
use powersync_source_core::{ErrorKind, SourceError};

use super::ids;
use super::marker::{self, Marker};

/// Where the changes go.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    /// `nats://…` (may hold credentials: never logged as is).
    pub url: String,
    /// The JetStream stream name.
    pub stream: String,
    /// Subject prefix `P` (subjects `P.<schema>.<table>` and `P._commit`).
    pub prefix: String,
}

/// How `publish` creates a missing stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Replicas (1 for a single server; 3 or 5 in a cluster).
    pub replicas: usize,
    /// JetStream's duplicate window: how long message ids are remembered.
    pub duplicate_window: Duration,
    /// Stream size limit in bytes (`None`: unlimited). When full, publishing waits.
    pub max_bytes: Option<i64>,
}

/// Connects (one attempt; callers retry).
pub async fn connect(url: &str, client_name: &str) -> Result<async_nats::Client, SourceError> {
    let shown = redact_url(url);
    ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| {
            let kind = match e.kind() {
                ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                    ErrorKind::Auth
                }
                ConnectErrorKind::ServerParse => ErrorKind::Config,
                _ => ErrorKind::Connection,
            };
            SourceError::new(kind, format!("cannot connect to NATS at {shown}: {e}"))
                .with_hint("is nats-server running with JetStream enabled (`nats-server -js`)?")
        })
}

/// A NATS failure while talking to JetStream: transient.
pub fn transient(what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::connection(format!("JetStream: {what}: {e}"))
}

/// Gets the stream, creating it if missing (file storage, subjects `P.>`, discard-new so a
/// full stream rejects publishes instead of dropping old messages). An existing stream must
/// capture `P.>`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    target: &StreamTarget,
    settings: &StreamSettings,
) -> Result<stream::Stream, SourceError> {
    let subjects = ids::stream_subjects(&target.prefix);
    match js.get_stream(&target.stream).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(|e| transient("stream info", e))?;
            if !info.config.subjects.contains(&subjects) {
                return Err(SourceError::config(format!(
                    "stream `{}` exists with subjects {:?}, not `{subjects}`",
                    target.stream, info.config.subjects
                ))
                .with_hint("pick another --stream, or the --subject-prefix it was created with"));
            }
            if info.config.duplicate_window < settings.duplicate_window {
                tracing::warn!(
                    "stream `{}` has a duplicate window of {:?} (asked {:?}); restarts after \
                     a longer outage rely on the consumer's de-duplication",
                    target.stream,
                    info.config.duplicate_window,
                    settings.duplicate_window
                );
            }
            Ok(s)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js_err)
                if js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                create_stream(js, target, settings, subjects).await
            }
            GetStreamErrorKind::JetStream(js_err)
                if js_err.error_code() == jetstream::ErrorCode::JETSTREAM_NOT_ENABLED
                    || js_err.error_code()
                        == jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT =>
            {
                Err(SourceError::new(
                    ErrorKind::Prerequisite,
                    format!("JetStream is not enabled on this NATS server: {js_err}"),
                )
                .with_hint("start nats-server with -js"))
            }
            GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => Err(
                SourceError::config(format!("invalid stream name `{}`", target.stream))
                    .with_hint("stream names may not contain spaces, `.`, `*`, `>`"),
            ),
            _ => Err(transient("looking up the stream", e)),
        },
    }
}

async fn create_stream(
    js: &jetstream::Context,
    target: &StreamTarget,
    settings: &StreamSettings,
    subjects: String,
) -> Result<stream::Stream, SourceError> {
    let config = stream::Config {
        name: target.stream.clone(),
        description: Some("powersync-source change stream".into()),
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        discard: stream::DiscardPolicy::New,
        max_bytes: settings.max_bytes.unwrap_or(-1),
        allow_direct: true,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(s) => {
            tracing::info!(
                "created stream `{}` (file storage, {} replica(s), duplicate window {:?})",
                target.stream,
                settings.replicas,
                settings.duplicate_window
            );
            Ok(s)
        }
        Err(e) => {
            use async_nats::jetstream::context::CreateStreamErrorKind as K;
            match e.kind() {
                K::TimedOut | K::JetStreamUnavailable | K::Response => {
                    Err(transient("creating the stream", e))
                }
                _ => Err(SourceError::new(
                    ErrorKind::Prerequisite,
                    format!("cannot create stream `{}`: {e}", target.stream),
                )
                .with_hint(
                    "check --replicas against the cluster size and the account's JetStream limits",
                )),
            }
        }
    }
}

/// The stream's last commit marker (the last of a batch) and its stream sequence, or `None`
/// if it has none.
pub async fn last_marker(
    stream: &stream::Stream,
    prefix: &str,
) -> Result<Option<(u64, Marker)>, SourceError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
    match stream
        .get_last_raw_message_by_subject(&ids::commit_subject(prefix))
        .await
    {
        Ok(msg) => {
            let decode_error = |e: String| {
                SourceError::new(
                    ErrorKind::Decode,
                    format!(
                        "the stream's last commit marker (sequence {}): {e}",
                        msg.sequence
                    ),
                )
            };
            // A batch closes several units: the last one is where the stream stands.
            let marker = marker::parse_markers(&msg.payload)
                .map_err(decode_error)?
                .pop()
                .ok_or_else(|| decode_error("an empty marker batch".into()))?;
            Ok(Some((msg.sequence, marker)))
        }
        Err(e) if matches!(e.kind(), K::NoMessageFound) => Ok(None),
        Err(e) => Err(transient("reading the last commit marker", e)),
    }
}
