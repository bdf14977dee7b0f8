//! `MssqlSource`: the [`ChangeSource`] implementation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use powersync_source_core::position::{MssqlLsn, MssqlPosition};
use powersync_source_core::runtime::{spawn_stream, Emitter, SnapshotBook, Step, Stop};
use powersync_source_core::{
    ChangeSource, ChangeStream, CheckReport, Checkpoint, Position, Result, RetryPolicy,
    SourceError, StartFrom, StreamOptions, TableName, TableSchema,
};

use crate::backend::{
    checkpoint_table, timed, CaptureInstance, CdcBackend, CdcConnector, CheckpointShape, Marker,
};
use crate::check::{check, CHECKPOINT_TABLE_SQL};
use crate::checkpoint::StreamPoint;
use crate::config::MssqlConfig;
use crate::poller::{PollOptions, Poller};
use crate::snapshot::SnapshotPlan;
use crate::tables::{by_table, instance_for, load_instances, select, table_schema};
use crate::tds::TdsConnector;

/// A SQL Server (2019+, Azure SQL Database, Azure SQL Managed Instance) database replicated
/// by polling its CDC change tables. See the [crate docs](crate) for the consistency model,
/// the setup SQL and the latency to expect.
#[derive(Debug, Clone)]
pub struct MssqlSource {
    config: MssqlConfig,
    options: StreamOptions,
    connector: Arc<dyn CdcConnector>,
    marker_timeout: Duration,
}

impl MssqlSource {
    /// A source on `config`, replicating every CDC-enabled table of the database (except
    /// `dbo._powersync_checkpoints`) until [`MssqlSource::with_stream_options`] (or
    /// [`MssqlSource::with_tables`]) narrows it.
    pub fn new(config: MssqlConfig) -> MssqlSource {
        MssqlSource {
            connector: Arc::new(TdsConnector::new(config.clone())),
            config,
            options: StreamOptions::default(),
            marker_timeout: Duration::from_secs(60),
        }
    }

    /// Sets the stream settings every connector shares: the tables (`schema` = SQL Server
    /// schema; an empty schema means `dbo`; `None` or an empty list = every CDC-enabled
    /// table), the reconnect policy, the batch size, and the silence timeout, which bounds
    /// every single query (of the stream, and of `check`, `discover` and `write_checkpoint`):
    /// a query that does not answer within it is treated as a dead connection, which the
    /// stream reconnects.
    pub fn with_stream_options(mut self, options: StreamOptions) -> MssqlSource {
        self.options = options;
        self
    }

    /// The stream settings.
    pub fn stream_options(&self) -> &StreamOptions {
        &self.options
    }

    /// The selected tables; empty = every CDC-enabled table.
    fn tables(&self) -> &[TableName] {
        self.options.tables.as_deref().unwrap_or_default()
    }

    /// A source from a `sqlserver://` URL (see [`MssqlConfig`]).
    pub fn from_url(url: &str) -> Result<MssqlSource> {
        Ok(MssqlSource::new(MssqlConfig::parse(url)?))
    }

    /// Replicates only these tables (`schema` = SQL Server schema; an empty schema means
    /// `dbo`). An empty list means every CDC-enabled table. Shorthand for
    /// [`StreamOptions::with_tables`].
    pub fn with_tables(mut self, tables: Vec<TableName>) -> MssqlSource {
        self.options.tables = Some(tables);
        self
    }

    /// Replaces the reconnect policy of the stream. Shorthand for
    /// [`StreamOptions::with_retry`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> MssqlSource {
        self.options.retry = retry;
        self
    }

    /// How long `write_checkpoint` (and the snapshot start) wait for the capture job to record
    /// the marker row (default 60 s; the capture job's own interval is 5 s by default, 1 s
    /// recommended, about 20 s on Azure SQL Database).
    pub fn with_marker_timeout(mut self, timeout: Duration) -> MssqlSource {
        self.marker_timeout = timeout;
        self
    }

    /// Replaces how connections are opened: the seam that lets the whole connector run on
    /// an in-memory CDC model (the tests do). Every SQL call goes through the [`CdcBackend`]s
    /// it opens.
    #[cfg(feature = "testing")]
    pub fn with_connector(mut self, connector: Arc<dyn CdcConnector>) -> MssqlSource {
        self.connector = connector;
        self
    }

    /// The connection settings.
    pub fn config(&self) -> &MssqlConfig {
        &self.config
    }

    fn poll_options(&self) -> PollOptions {
        PollOptions {
            interval: self.config.polling_interval,
            batch_size: self.config.polling_batch_size,
            page_rows: self.config.page_rows,
            retry: self.options.retry.clone(),
            call_timeout: self.options.silence_timeout,
        }
    }

    async fn connect(&self) -> Result<Box<dyn CdcBackend>> {
        timed(self.config.connect_timeout, self.connector.connect()).await
    }

    /// The checkpoint table's newest capture instance and the table's shape.
    async fn checkpoint_instance(
        &self,
        b: &mut dyn CdcBackend,
    ) -> Result<(CaptureInstance, CheckpointShape)> {
        let all = load_instances(b, self.options.silence_timeout).await?;
        let instance = all
            .into_iter()
            .filter(|i| i.table == checkpoint_table())
            .max_by_key(|i| (i.start_lsn, i.create_date))
            .ok_or_else(|| {
                SourceError::prerequisite(
                    "dbo._powersync_checkpoints is missing or has no CDC capture instance",
                )
                .with_hint(CHECKPOINT_TABLE_SQL)
            })?;
        let shape = CheckpointShape::of(&instance).ok_or_else(|| {
            SourceError::prerequisite(
                "dbo._powersync_checkpoints has neither the connector's columns (token, created_at) nor the PowerSync service's (id, last_updated)",
            )
            .with_hint(CHECKPOINT_TABLE_SQL)
        })?;
        Ok((instance, shape))
    }

    /// Starts the exact snapshot (a new snapshot connection, the table locks, the marker). A
    /// lock timeout (1222) or a lost deadlock (1205) of the lock transaction is retried a few
    /// times: each attempt holds writers of the locked tables back for at most the short lock
    /// timeout, where one long wait would stall them all that time.
    async fn begin_exact_snapshot(
        &self,
        tables: &[TableName],
        shape: CheckpointShape,
    ) -> Result<(Box<dyn CdcBackend>, Marker)> {
        let mut attempt = 1;
        loop {
            let mut snap = self.connect().await?;
            let token = token();
            let result = timed(
                self.options.silence_timeout,
                snap.begin_snapshot(tables, Some((shape, &token))),
            )
            .await;
            match result {
                Ok(Some(marker)) => return Ok((snap, marker)),
                Ok(None) => {
                    return Err(SourceError::internal(
                        "the snapshot start inserted no marker row",
                    ))
                }
                Err(e)
                    if attempt < SNAPSHOT_LOCK_ATTEMPTS
                        && matches!(e.code(), Some("1222" | "1205")) =>
                {
                    tracing::info!(attempt, error = %e, "snapshot table locks not granted; trying again");
                    tokio::time::sleep(Duration::from_millis(250) * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the capture job recorded the marker row, bounded by the marker timeout.
    async fn wait_marker(
        &self,
        b: &mut dyn CdcBackend,
        instance: &CaptureInstance,
        marker: &Marker,
    ) -> Result<MssqlLsn> {
        let deadline = Instant::now() + self.marker_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(lsn) =
                timed(self.options.silence_timeout, b.marker_lsn(instance, marker)).await?
            {
                return Ok(lsn);
            }
            if Instant::now() >= deadline {
                return Err(SourceError::connection(format!(
                    "the CDC capture job did not record the checkpoint row within {:?}",
                    self.marker_timeout
                ))
                .with_hint("check that the capture job runs (EXEC sys.sp_cdc_help_jobs; SQL Server Agent must be running)"));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// The stream task: the snapshot (when there is one), then polling.
async fn stream(
    connector: &Arc<dyn CdcConnector>,
    mut poller: Poller,
    snapshot: Option<(Box<dyn CdcBackend>, SnapshotPlan)>,
    control: Box<dyn CdcBackend>,
    opts: &PollOptions,
    out: &mut Emitter,
) -> Step<()> {
    if let Some((snap, plan)) = snapshot {
        crate::snapshot::run(connector, snap, plan, opts, out).await?;
        poller.schemas_sent();
    }
    poller.run(out, Some(control)).await
}

/// Ends the stream task: a failure reaches the host after the events before it; the task
/// itself then ends quietly (the error is already on its way).
async fn finish(out: &mut Emitter, result: Step<()>) -> Step<()> {
    match result {
        Ok(()) => out.flush().await,
        Err(Stop::Failed(e)) => {
            out.fail(e).await;
            Ok(())
        }
        Err(Stop::Closed) => Err(Stop::Closed),
    }
}

/// Attempts at the exact snapshot start's table locks (see `begin_exact_snapshot`).
const SNAPSHOT_LOCK_ATTEMPTS: u32 = 6;

fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[async_trait]
impl ChangeSource for MssqlSource {
    fn kind(&self) -> &'static str {
        MssqlPosition::SOURCE
    }

    async fn check(&self) -> Result<CheckReport> {
        let mut b = self.connect().await?;
        check(b.as_mut(), self.tables(), self.options.silence_timeout).await
    }

    async fn discover(&self) -> Result<Vec<TableSchema>> {
        let mut b = self.connect().await?;
        let all = by_table(&load_instances(b.as_mut(), self.options.silence_timeout).await?);
        let tables = select(&all, self.tables())?;
        let max = timed(self.options.silence_timeout, b.max_lsn())
            .await?
            .unwrap_or_default();
        Ok(tables
            .iter()
            .filter_map(|t| {
                let list = all.get(t)?;
                let i = instance_for(list, max.increment()).or(list.last())?;
                Some((*table_schema(i)).clone())
            })
            .collect())
    }

    /// Runs [`ChangeSource::check`] first and fails with every error-level problem it finds
    /// (as one [`ErrorKind::Prerequisite`](powersync_source_core::ErrorKind::Prerequisite)
    /// error), then starts the snapshot and the polling loop.
    async fn start(&self, from: StartFrom) -> Result<ChangeStream> {
        let mut control = self.connect().await?;
        check(
            control.as_mut(),
            self.tables(),
            self.options.silence_timeout,
        )
        .await?
        .into_result()?;
        let all = by_table(&load_instances(control.as_mut(), self.options.silence_timeout).await?);
        let tables = select(&all, self.tables())?;
        let opts = self.poll_options();
        let connector = self.connector.clone();

        let (poller, snapshot) = match from {
            StartFrom::Beginning => {
                let (ckpt, shape) = self.checkpoint_instance(control.as_mut()).await?;
                let (snap, marker) = self.begin_exact_snapshot(&tables, shape).await?;
                let lsn = self.wait_marker(control.as_mut(), &ckpt, &marker).await?;
                let start = StreamPoint::after(lsn, BTreeMap::new());
                let poller = Poller::new(
                    connector.clone(),
                    control.as_mut(),
                    opts.clone(),
                    &start,
                    &tables,
                )
                .await?;
                let plan = SnapshotPlan {
                    tables: poller.instances(),
                    book: SnapshotBook::new(poller.point(lsn).to_checkpoint()),
                    chunk_rows: self.config.snapshot_chunk_rows,
                };
                (poller, Some((snap, plan)))
            }
            StartFrom::Snapshot(resume) => {
                let start = StreamPoint::from_checkpoint(&resume.stream_from)?;
                let poller = Poller::new(
                    connector.clone(),
                    control.as_mut(),
                    opts.clone(),
                    &start,
                    &tables,
                )
                .await?;
                let mut snap = self.connect().await?;
                timed(
                    self.options.silence_timeout,
                    snap.begin_snapshot(&tables, None),
                )
                .await?;
                let plan = SnapshotPlan {
                    tables: poller.instances(),
                    book: SnapshotBook::resume(&resume),
                    chunk_rows: self.config.snapshot_chunk_rows,
                };
                (poller, Some((snap, plan)))
            }
            StartFrom::Checkpoint(c) => {
                let start = StreamPoint::from_checkpoint(&c)?;
                if !start.position.is_transaction_boundary() {
                    return Err(SourceError::config(format!(
                        "checkpoint `{c}` is inside a transaction; this connector only emits and resumes from transaction boundaries"
                    )));
                }
                let poller = Poller::new(
                    connector.clone(),
                    control.as_mut(),
                    opts.clone(),
                    &start,
                    &tables,
                )
                .await?;
                (poller, None)
            }
        };
        Ok(spawn_stream(
            MssqlPosition::SOURCE,
            &self.options,
            move |mut out, _acks| async move {
                // CDC retention is time based: acknowledgements release nothing on the server.
                let result = stream(&connector, poller, snapshot, control, &opts, &mut out).await;
                finish(&mut out, result).await
            },
        ))
    }

    async fn write_checkpoint(&self) -> Result<Checkpoint> {
        let mut b = self.connect().await?;
        let (ckpt, shape) = self.checkpoint_instance(b.as_mut()).await?;
        let token = token();
        let marker = timed(self.options.silence_timeout, b.insert_marker(shape, &token)).await?;
        let lsn = self.wait_marker(b.as_mut(), &ckpt, &marker).await?;
        // Old markers were observed long ago; failing to delete them is harmless.
        if let Err(e) = timed(self.options.silence_timeout, b.delete_old_markers(shape)).await {
            tracing::debug!(error = %e, "could not delete old checkpoint rows");
        }
        Ok(MssqlPosition::after_transaction(lsn).to_checkpoint())
    }
}
