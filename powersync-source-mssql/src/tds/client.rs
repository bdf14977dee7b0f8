//! One tiberius client owned by one task, driven through a channel.
//!
//! tiberius clients are not `Clone` and every call borrows them mutably, so each connection
//! lives in its own task; [`TdsClient`] sends it requests and awaits the answers. Dropping the
//! handle ends the task and closes the connection, which rolls back an open transaction on the
//! server.

use std::borrow::Cow;
use std::sync::Mutex;

use powersync_source_core::{Result, SourceError};
use tiberius::{AuthMethod, Client, ColumnData, EncryptionLevel, Row, ToSql};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::config::{Encrypt, MssqlConfig};
use crate::tds::error::sql_error;

/// A query parameter.
#[derive(Debug, Clone)]
pub enum Param {
    /// `varbinary`.
    Bytes(Vec<u8>),
    /// `nvarchar`.
    Str(String),
    /// `bigint`.
    I64(i64),
    /// `float`.
    F64(f64),
    /// `NULL`.
    Null,
}

impl ToSql for Param {
    fn to_sql(&self) -> ColumnData<'_> {
        match self {
            Param::Bytes(b) => ColumnData::Binary(Some(Cow::Borrowed(b))),
            Param::Str(s) => ColumnData::String(Some(Cow::Borrowed(s))),
            Param::I64(i) => ColumnData::I64(Some(*i)),
            Param::F64(f) => ColumnData::F64(Some(*f)),
            Param::Null => ColumnData::I32(None),
        }
    }
}

type Reply<T> = oneshot::Sender<std::result::Result<T, tiberius::error::Error>>;

enum Request {
    Query(String, Vec<Param>, Reply<Vec<Row>>),
    Execute(String, Vec<Param>, Reply<u64>),
    Batch(String, Reply<()>),
}

/// Handle of a connection task.
#[derive(Debug)]
pub struct TdsClient {
    tx: mpsc::Sender<Request>,
    /// The connection task; taken when it ended, to tell a panic from a lost connection.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for TdsClient {
    fn drop(&mut self) {
        // A request stuck on a half-open connection must not keep the task (and socket)
        // alive: aborting drops the client, which closes the connection.
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

type Conn = Client<Compat<TcpStream>>;

impl TdsClient {
    /// Connects and logs in (following one Azure gateway redirect).
    pub async fn connect(config: &MssqlConfig) -> Result<TdsClient> {
        let mut cfg = tiberius_config(config, &config.host, config.port);
        let client = match open(cfg.clone()).await {
            Err(tiberius::error::Error::Routing { host, port }) => {
                cfg = tiberius_config(config, &host, port);
                open(cfg).await
            }
            other => other,
        }
        .map_err(|e| sql_error(e, &format!("connecting to {}", config.redacted_url())))?;
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(serve(client, rx));
        Ok(TdsClient {
            tx,
            task: Mutex::new(Some(task)),
        })
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request, what: &str) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(make(reply)).await.is_ok();
        match rx.await {
            Ok(r) if sent => r.map_err(|e| sql_error(e, what)),
            _ => Err(self.ended(what).await),
        }
    }

    /// The error for a connection task that ended under a request (it has dropped the
    /// request, so it is finishing). tiberius 0.12 panics on some server data (`todo!` for
    /// UDT and sql_variant metadata): that is a bug to report ([`ErrorKind::Internal`]), not a
    /// lost connection to retry for `give_up_after`.
    ///
    /// [`ErrorKind::Internal`]: powersync_source_core::ErrorKind::Internal
    async fn ended(&self, what: &str) -> SourceError {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if let Err(e) = task.await {
                if e.is_panic() {
                    return SourceError::internal(format!(
                        "{what}: the TDS client (tiberius) panicked on data the server sent (a column of a type it cannot decode)"
                    ));
                }
            }
        }
        SourceError::connection(format!("{what}: the connection task ended"))
    }

    /// Runs a query and returns the rows of its first result set.
    pub async fn query(&self, sql: String, params: Vec<Param>, what: &str) -> Result<Vec<Row>> {
        self.call(|r| Request::Query(sql, params, r), what).await
    }

    /// Runs a statement and returns the rows affected.
    pub async fn execute(&self, sql: String, params: Vec<Param>, what: &str) -> Result<u64> {
        self.call(|r| Request::Execute(sql, params, r), what).await
    }

    /// Runs a batch without parameters, discarding results.
    pub async fn batch(&self, sql: String, what: &str) -> Result<()> {
        self.call(|r| Request::Batch(sql, r), what).await
    }
}

fn tiberius_config(config: &MssqlConfig, host: &str, port: u16) -> tiberius::Config {
    let mut cfg = tiberius::Config::new();
    cfg.host(host);
    cfg.port(port);
    cfg.database(&config.database);
    cfg.application_name(&config.application_name);
    cfg.authentication(AuthMethod::sql_server(
        &config.user,
        config.password.expose(),
    ));
    cfg.encryption(match config.encrypt {
        Encrypt::Required => EncryptionLevel::Required,
        Encrypt::Off => EncryptionLevel::Off,
        Encrypt::NotSupported => EncryptionLevel::NotSupported,
    });
    if config.trust_server_certificate {
        cfg.trust_cert();
    }
    cfg
}

async fn open(cfg: tiberius::Config) -> std::result::Result<Conn, tiberius::error::Error> {
    let tcp = TcpStream::connect(cfg.get_addr()).await?;
    tcp.set_nodelay(true)?;
    Client::connect(cfg, tcp.compat_write()).await
}

async fn serve(mut client: Conn, mut rx: mpsc::Receiver<Request>) {
    while let Some(req) = rx.recv().await {
        match req {
            Request::Query(sql, params, reply) => {
                let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
                let r = match client.query(sql, &refs).await {
                    Ok(stream) => stream.into_first_result().await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
            Request::Execute(sql, params, reply) => {
                let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
                let r = client.execute(sql, &refs).await.map(|r| r.total());
                let _ = reply.send(r);
            }
            Request::Batch(sql, reply) => {
                let r = match client.simple_query(sql).await {
                    Ok(stream) => stream.into_results().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            }
        }
    }
    let _ = client.close().await;
}
