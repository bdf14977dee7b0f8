//! The conformance scenarios and the golden type table against a real SQL Server (2019+ or
//! Azure SQL) named by `MSSQL_TEST_URL`, e.g.
//! `sqlserver://sa:Secret123!@127.0.0.1:1433/powersync_test?encrypt=false`. The user must be
//! able to create tables and enable CDC (db_owner; `sysadmin` for `sp_cdc_enable_db` on SQL
//! Server) and to kill its own sessions (`ALTER ANY CONNECTION`) for the restart scenario. The
//! capture job must run, and the server must be SQL Server 2019+ (a `_UTF8` collation case).
//! The setup case creates the login `powersync_setup_test` (sysadmin needed). Without the
//! variable the suite prints one line and passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use powersync_source_core::{
    ChangeEvent, ChangeSource, Result, SourceError, StartFrom, TableName, Value,
};
use powersync_source_mssql::{MssqlConfig, MssqlSource};
use powersync_source_testkit::conformance::{self as c, Dml, Workload};
use tiberius::{AuthMethod, Client, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

const TABLE: &str = "powersync_conformance";

fn url() -> Option<String> {
    std::env::var("MSSQL_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

type Admin = Client<Compat<TcpStream>>;

async fn admin(config: &MssqlConfig) -> Admin {
    let mut cfg = tiberius::Config::new();
    cfg.host(&config.host);
    cfg.port(config.port);
    cfg.database(&config.database);
    cfg.application_name("powersync-tests");
    cfg.authentication(AuthMethod::sql_server(
        &config.user,
        config.password.expose(),
    ));
    cfg.encryption(match config.encrypt {
        powersync_source_mssql::Encrypt::Required => EncryptionLevel::Required,
        powersync_source_mssql::Encrypt::Off => EncryptionLevel::Off,
        powersync_source_mssql::Encrypt::NotSupported => EncryptionLevel::NotSupported,
    });
    if config.trust_server_certificate {
        cfg.trust_cert();
    }
    let tcp = TcpStream::connect(cfg.get_addr())
        .await
        .expect("connect to MSSQL_TEST_URL");
    tcp.set_nodelay(true).ok();
    Client::connect(cfg, tcp.compat_write())
        .await
        .expect("log in to MSSQL_TEST_URL")
}

fn err(e: tiberius::error::Error) -> SourceError {
    SourceError::connection(format!("test SQL failed: {e}"))
}

async fn exec(client: &mut Admin, sql: &str) -> Result<()> {
    client
        .simple_query(sql)
        .await
        .map_err(err)?
        .into_results()
        .await
        .map_err(err)?;
    Ok(())
}

fn lit(s: &str) -> String {
    format!("N'{}'", s.replace('\'', "''"))
}

struct RealWorkload {
    url: String,
    config: MssqlConfig,
    admin: tokio::sync::Mutex<Admin>,
    version: std::sync::atomic::AtomicU32,
}

impl RealWorkload {
    async fn new(url: String) -> RealWorkload {
        let config = MssqlConfig::parse(&url).expect("MSSQL_TEST_URL parses");
        let mut a = admin(&config).await;
        exec(
            &mut a,
            "IF (SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()) = 0 EXEC sys.sp_cdc_enable_db;
             IF (SELECT snapshot_isolation_state FROM sys.databases WHERE database_id = DB_ID()) = 0
                 EXEC('ALTER DATABASE CURRENT SET ALLOW_SNAPSHOT_ISOLATION ON');
             IF OBJECT_ID(N'dbo._powersync_checkpoints', N'U') IS NULL
             BEGIN
                 CREATE TABLE dbo._powersync_checkpoints (id bigint IDENTITY PRIMARY KEY, token varchar(64) NOT NULL,
                     created_at datetime2 NOT NULL DEFAULT SYSUTCDATETIME());
                 EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints',
                     @role_name = NULL, @supports_net_changes = 0;
             END",
        )
        .await
        .expect("prepare the database");
        RealWorkload {
            url,
            config,
            admin: tokio::sync::Mutex::new(a),
            version: std::sync::atomic::AtomicU32::new(0),
        }
    }

    fn table() -> TableName {
        TableName::new("dbo", TABLE)
    }

    async fn new_instance(&self) -> Result<()> {
        let n = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let mut a = self.admin.lock().await;
        // Two instances at most: drop the oldest first.
        exec(
            &mut a,
            &format!(
                "DECLARE @old sysname = NULL;
                 IF (SELECT COUNT(*) FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.{TABLE}')) >= 2
                     SET @old = (SELECT TOP (1) capture_instance FROM cdc.change_tables
                         WHERE source_object_id = OBJECT_ID(N'dbo.{TABLE}') ORDER BY create_date);
                 IF @old IS NOT NULL EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'{TABLE}', @capture_instance = @old;
                 EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{TABLE}', @role_name = NULL,
                     @capture_instance = N'dbo_{TABLE}_v{n}', @supports_net_changes = 0;"
            ),
        )
        .await
    }
}

#[async_trait]
impl Workload for RealWorkload {
    fn source(&self) -> Arc<dyn ChangeSource> {
        Arc::new(
            MssqlSource::from_url(&self.url)
                .expect("url")
                .with_tables(vec![Self::table()]),
        )
    }

    fn source_with_wrong_password(&self) -> Arc<dyn ChangeSource> {
        let mut config = self.config.clone();
        config.password = powersync_source_core::Secret::new("not-the-password");
        Arc::new(MssqlSource::new(config).with_tables(vec![Self::table()]))
    }

    async fn source_missing_prerequisite(&self) -> Result<(Arc<dyn ChangeSource>, String)> {
        let mut a = self.admin.lock().await;
        exec(
            &mut a,
            "IF OBJECT_ID(N'dbo.powersync_no_cdc', N'U') IS NULL CREATE TABLE dbo.powersync_no_cdc (id bigint PRIMARY KEY);",
        )
        .await?;
        Ok((
            Arc::new(
                MssqlSource::from_url(&self.url)?
                    .with_tables(vec![TableName::new("dbo", "powersync_no_cdc")]),
            ),
            "cdc table dbo.powersync_no_cdc".into(),
        ))
    }

    async fn reset(&self) -> Result<()> {
        {
            let mut a = self.admin.lock().await;
            exec(
                &mut a,
                &format!(
                    "IF OBJECT_ID(N'dbo.{TABLE}', N'U') IS NOT NULL
                     BEGIN
                         IF EXISTS (SELECT 1 FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.{TABLE}'))
                             EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'{TABLE}', @capture_instance = N'all';
                         DROP TABLE dbo.{TABLE};
                     END
                     CREATE TABLE dbo.{TABLE} (id bigint PRIMARY KEY, v nvarchar(max) NULL);"
                ),
            )
            .await?;
        }
        self.version.store(0, std::sync::atomic::Ordering::SeqCst);
        self.new_instance().await
    }

    async fn apply(&self, txn: &[Dml]) -> Result<()> {
        let mut sql = String::from("SET XACT_ABORT ON; BEGIN TRANSACTION;\n");
        for d in txn {
            match d {
                Dml::Insert { id, v } => sql.push_str(&format!(
                    "INSERT INTO dbo.{TABLE} (id, v) VALUES ({id}, {});\n",
                    lit(v)
                )),
                Dml::Update { id, v } => sql.push_str(&format!(
                    "UPDATE dbo.{TABLE} SET v = {} WHERE id = {id};\n",
                    lit(v)
                )),
                Dml::Delete { id } => {
                    sql.push_str(&format!("DELETE FROM dbo.{TABLE} WHERE id = {id};\n"))
                }
                Dml::Truncate => sql.push_str(&format!("DELETE FROM dbo.{TABLE};\n")),
            }
        }
        sql.push_str("COMMIT;");
        let mut a = self.admin.lock().await;
        exec(&mut a, &sql).await
    }

    async fn add_column(&self, name: &str) -> Result<()> {
        {
            let mut a = self.admin.lock().await;
            exec(
                &mut a,
                &format!("ALTER TABLE dbo.{TABLE} ADD [{name}] nvarchar(max) NULL;"),
            )
            .await?;
        }
        self.new_instance().await
    }

    async fn set_column(&self, id: i64, name: &str, value: &str) -> Result<()> {
        let mut a = self.admin.lock().await;
        exec(
            &mut a,
            &format!(
                "UPDATE dbo.{TABLE} SET [{name}] = {} WHERE id = {id};",
                lit(value)
            ),
        )
        .await
    }

    async fn drop_column(&self, name: &str) -> Result<()> {
        {
            let mut a = self.admin.lock().await;
            exec(
                &mut a,
                &format!("ALTER TABLE dbo.{TABLE} DROP COLUMN [{name}];"),
            )
            .await?;
        }
        self.new_instance().await
    }

    async fn read(&self) -> Result<BTreeMap<i64, BTreeMap<String, Value>>> {
        let mut a = self.admin.lock().await;
        let rows = a
            .simple_query(format!("SELECT * FROM dbo.{TABLE}"))
            .await
            .map_err(err)?
            .into_first_result()
            .await
            .map_err(err)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let mut cols = BTreeMap::new();
            let mut id = 0;
            for (col, data) in row.cells() {
                let v = match data {
                    tiberius::ColumnData::I64(Some(i)) => {
                        id = *i;
                        Value::Integer(*i)
                    }
                    tiberius::ColumnData::String(Some(s)) => Value::Text(s.to_string()),
                    _ => Value::Null,
                };
                cols.insert(col.name().to_string(), v);
            }
            out.insert(id, cols);
        }
        Ok(out)
    }

    async fn kill_and_restart(&self) -> Result<()> {
        // A remote server cannot be restarted from here: kill the connector's sessions instead.
        let mut a = self.admin.lock().await;
        exec(
            &mut a,
            "DECLARE @sql nvarchar(max) = N'';
             SELECT @sql += N'KILL ' + CAST(session_id AS nvarchar(10)) + N'; '
             FROM sys.dm_exec_sessions WHERE program_name = N'powersync' AND session_id <> @@SPID;
             EXEC (@sql);",
        )
        .await
    }

    async fn lose_history(&self) -> Result<()> {
        self.apply(&[Dml::Insert {
            id: 900_001,
            v: "a".into(),
        }])
        .await?;
        self.apply(&[Dml::Insert {
            id: 900_002,
            v: "b".into(),
        }])
        .await?;
        // Let the capture job record both, then move the low-water mark past them.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let mut a = self.admin.lock().await;
        exec(
            &mut a,
            &format!(
                "DECLARE @i sysname = (SELECT TOP (1) capture_instance FROM cdc.change_tables
                     WHERE source_object_id = OBJECT_ID(N'dbo.{TABLE}') ORDER BY create_date DESC);
                 DECLARE @lsn binary(10) = sys.fn_cdc_get_max_lsn();
                 EXEC sys.sp_cdc_cleanup_change_table @capture_instance = @i, @low_water_mark = @lsn, @threshold = 100000;"
            ),
        )
        .await
    }
}

/// The golden type table end to end: (column definition, literal, expected value).
fn golden() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let t = |s: &str| Value::Text(s.into());
    vec![
        ("c_tinyint", "tinyint", "255", Value::Integer(255)),
        ("c_smallint", "smallint", "-32768", Value::Integer(-32768)),
        ("c_int", "int", "2147483647", Value::Integer(2_147_483_647)),
        ("c_bigint", "bigint", "-9223372036854775808", Value::Integer(i64::MIN)),
        ("c_bit", "bit", "1", Value::Integer(1)),
        ("c_decimal", "decimal(10,2)", "-123.45", t("-123.45")),
        ("c_numeric", "numeric(38,0)", "99999999999999999999999999999999999999", t("99999999999999999999999999999999999999")),
        ("c_money", "money", "922337203685477.5807", t("922337203685477.5807")),
        ("c_smallmoney", "smallmoney", "-214748.3648", t("-214748.3648")),
        ("c_real", "real", "1.5", Value::Real(1.5)),
        ("c_float", "float", "-2.25E300", Value::Real(-2.25e300)),
        ("c_date", "date", "'0001-01-01'", t("0001-01-01")),
        ("c_time", "time(7)", "'23:59:59.9999999'", t("23:59:59.9999999")),
        ("c_datetime2", "datetime2(7)", "'2024-01-01T00:00:00.0000001'", t("2024-01-01T00:00:00.0000001")),
        ("c_datetimeoffset", "datetimeoffset(7)", "'2024-01-01T12:00:00.1234567+02:00'", t("2024-01-01T10:00:00.1234567Z")),
        ("c_datetime", "datetime", "'2024-01-01T00:00:00.003'", t("2024-01-01T00:00:00.003")),
        ("c_smalldatetime", "smalldatetime", "'2024-01-01T01:01:00'", t("2024-01-01T01:01:00")),
        ("c_char", "char(4)", "'ab'", t("ab  ")),
        ("c_nchar", "nchar(2)", "N'✓'", t("✓ ")),
        ("c_varchar", "varchar(10)", "'x'", t("x")),
        ("c_nvarchar", "nvarchar(max)", "N'héllo'", t("héllo")),
        ("c_text", "text", "'long'", t("long")),
        ("c_ntext", "ntext", "N'long'", t("long")),
        ("c_xml", "xml", "N'<a b=\"1\"/>'", t("<a b=\"1\"/>")),
        ("c_binary", "binary(3)", "0x0001FF", Value::Blob(vec![0, 1, 255])),
        ("c_varbinary", "varbinary(max)", "0x07", Value::Blob(vec![7])),
        ("c_image", "image", "0x07", Value::Blob(vec![7])),
        ("c_guid", "uniqueidentifier", "'6F9619FF-8B86-D011-B42D-00C04FC964FF'", t("6f9619ff-8b86-d011-b42d-00c04fc964ff")),
        ("c_geometry", "geometry", "geometry::STGeomFromText('POINT (5 10)', 0)", t(r#"{"type":"Point","coordinates":[5,10]}"#)),
        ("c_geography", "geography", "geography::Point(47.651, -122.349, 4326)", t(r#"{"type":"Point","coordinates":[-122.349,47.651]}"#)),
        ("c_polygon", "geometry", "geometry::STGeomFromText('POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0), (2 2, 3 2, 3 3, 2 2))', 0)", t(r#"{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[2,2],[3,2],[3,3],[2,2]]]}"#)),
        ("c_hierarchyid", "hierarchyid", "'/1/2/'", t("/1/2/")),
        ("c_variant", "sql_variant", "CAST(42 AS int)", Value::Integer(42)),
        ("c_variant_dto", "sql_variant", "CAST('2024-01-01T12:00:00.1234567+02:00' AS datetimeoffset(7))", t("2024-01-01T10:00:00.1234567Z")),
    ]
}

async fn golden_table(w: &RealWorkload) {
    let cols = golden();
    {
        let mut a = w.admin.lock().await;
        let defs: Vec<String> = cols
            .iter()
            .map(|(n, ty, _, _)| format!("{n} {ty} NULL"))
            .collect();
        exec(
            &mut a,
            &format!(
                "IF OBJECT_ID(N'dbo.powersync_golden', N'U') IS NOT NULL
                 BEGIN
                     IF EXISTS (SELECT 1 FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.powersync_golden'))
                         EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'powersync_golden', @capture_instance = N'all';
                     DROP TABLE dbo.powersync_golden;
                 END
                 CREATE TABLE dbo.powersync_golden (id int PRIMARY KEY, {}, c_rowversion rowversion);
                 EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'powersync_golden', @role_name = NULL;",
                defs.join(", ")
            ),
        )
        .await
        .expect("golden table");
    }
    let insert = |id: i32| {
        let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
        let values: Vec<&str> = cols.iter().map(|c| c.2).collect();
        format!(
            "INSERT INTO dbo.powersync_golden (id, {}) VALUES ({id}, {});",
            names.join(", "),
            values.join(", ")
        )
    };
    exec(&mut *w.admin.lock().await, &insert(1))
        .await
        .expect("insert");
    let source = MssqlSource::from_url(&w.url)
        .unwrap()
        .with_tables(vec![TableName::new("dbo", "powersync_golden")]);
    let mut stream = source.start(StartFrom::Beginning).await.expect("start");
    exec(&mut *w.admin.lock().await, &insert(2))
        .await
        .expect("insert");
    let mut rows = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while rows.len() < 2 && std::time::Instant::now() < deadline {
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            for e in batch.expect("batch").events {
                if let ChangeEvent::Row(r) = e {
                    rows.push(r);
                }
            }
        }
    }
    assert_eq!(rows.len(), 2, "a snapshot row and a streamed row");
    for (row, how) in rows.iter().zip(["snapshot", "stream"]) {
        let new = row.new.as_ref().expect("new image");
        for (name, ty, _, want) in &cols {
            let got = new
                .get_by_name(&row.table, name)
                .unwrap_or_else(|| panic!("{how}: no column {name}"));
            assert_eq!(got, want, "{how}: {name} ({ty})");
        }
        match new.get_by_name(&row.table, "c_rowversion") {
            Some(Value::Blob(b)) => assert_eq!(b.len(), 8, "{how}: rowversion"),
            other => panic!("{how}: rowversion is {other:?}"),
        }
    }
}

/// Drops (CDC off first) and creates table `dbo.<name>` with `columns`, then enables CDC with
/// capture instance `dbo_<name>`.
async fn fresh_table(w: &RealWorkload, name: &str, columns: &str) {
    let mut a = w.admin.lock().await;
    exec(
        &mut a,
        &format!(
            "IF OBJECT_ID(N'dbo.{name}', N'U') IS NOT NULL
             BEGIN
                 IF EXISTS (SELECT 1 FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'dbo.{name}'))
                     EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'{name}', @capture_instance = N'all';
                 DROP TABLE dbo.{name};
             END
             CREATE TABLE dbo.{name} ({columns});
             EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{name}', @role_name = NULL,
                 @capture_instance = N'dbo_{name}', @supports_net_changes = 0;"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

async fn sql(w: &RealWorkload, statement: &str) {
    exec(&mut *w.admin.lock().await, statement)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Row events of a stream until `done` holds for them (or 120 s pass: the capture job may run
/// every 5 s).
async fn rows_until(
    stream: &mut powersync_source_core::ChangeStream,
    done: impl Fn(&[powersync_source_core::RowChange]) -> bool,
) -> Vec<powersync_source_core::RowChange> {
    let mut rows = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !done(&rows) {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; rows so far: {rows:#?}"
        );
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            for e in batch.expect("batch").events {
                if let ChangeEvent::Row(r) = e {
                    rows.push(r);
                }
            }
        }
    }
    rows
}

fn source_for(w: &RealWorkload, table: &str, options: &str) -> MssqlSource {
    MssqlSource::from_url(&format!("{}{options}", w.url))
        .expect("url")
        .with_tables(vec![TableName::new("dbo", table)])
}

fn col<'a>(r: &'a powersync_source_core::RowChange, name: &str) -> Option<&'a Value> {
    r.new
        .as_ref()
        .or(r.old.as_ref())
        .and_then(|row| row.get_by_name(&r.table, name))
}

/// The cases only a server can confirm (review §7.6), each the counterpart of a model test.
async fn cdc_rules(w: &RealWorkload) {
    // 1. An nvarchar(max) value over 8000 characters (off-row) left unchanged by an update:
    //    never NULL on the replica (cdc_rules::unchanged_max_columns_are_unchanged_not_null).
    fresh_table(
        w,
        "ps_maxcol",
        "id int PRIMARY KEY, title nvarchar(50), body nvarchar(max)",
    )
    .await;
    let mut stream = source_for(w, "ps_maxcol", "")
        .start(StartFrom::Beginning)
        .await
        .expect("start");
    sql(w, "INSERT INTO dbo.ps_maxcol VALUES (1, N'a', REPLICATE(CAST(N'x' AS nvarchar(max)), 9000)); UPDATE dbo.ps_maxcol SET title = N'b' WHERE id = 1;").await;
    let rows = rows_until(&mut stream, |r| r.len() >= 2).await;
    match col(&rows[1], "body") {
        Some(Value::Unchanged) => {}
        Some(Value::Text(t)) => assert_eq!(t.len(), 9000),
        other => panic!("unchanged nvarchar(max) arrived as {other:?}"),
    }
    drop(stream);

    // 2. A computed column: left out of snapshot and stream
    //    (cdc_rules::computed_columns_are_left_out_of_snapshot_and_stream).
    fresh_table(
        w,
        "ps_computed",
        "id int PRIMARY KEY, qty int, total AS qty * 10",
    )
    .await;
    sql(w, "INSERT INTO dbo.ps_computed (id, qty) VALUES (1, 2);").await;
    let mut stream = source_for(w, "ps_computed", "")
        .start(StartFrom::Beginning)
        .await
        .expect("start");
    sql(w, "INSERT INTO dbo.ps_computed (id, qty) VALUES (2, 3);").await;
    let rows = rows_until(&mut stream, |r| r.len() >= 2).await;
    for r in &rows {
        assert!(
            r.table.columns.iter().all(|c| c.name != "total"),
            "{:?}",
            r.table
        );
    }
    drop(stream);

    // 3. A key update: a delete and an insert (cdc_rules::key_updates_arrive_as_deletes_and_inserts).
    fresh_table(w, "ps_keyupd", "id int PRIMARY KEY, v nvarchar(20)").await;
    let mut stream = source_for(w, "ps_keyupd", "")
        .start(StartFrom::Beginning)
        .await
        .expect("start");
    sql(w, "INSERT INTO dbo.ps_keyupd VALUES (1, N'a'); UPDATE dbo.ps_keyupd SET id = 10 WHERE id = 1;").await;
    let rows = rows_until(&mut stream, |r| r.len() >= 3).await;
    let ops: Vec<&str> = rows.iter().map(|r| r.op.as_str()).collect();
    assert_eq!(ops, ["insert", "delete", "insert"]);
    assert_eq!(col(&rows[2], "id"), Some(&Value::Integer(10)));
    drop(stream);

    // 4. varchar keys with hyphens and apostrophes under SQL_Latin1_General_CP1_CI_AS, read in
    //    chunks of one row: each exactly once (select::key_parameters_take_the_key_type_and_collation).
    fresh_table(
        w,
        "ps_varkey",
        "code varchar(20) COLLATE SQL_Latin1_General_CP1_CI_AS PRIMARY KEY, n int",
    )
    .await;
    // Hyphens and apostrophes, plus the keys of Estuary's real-server golden
    // `TestCollatedCapture-VarChar` (CP1252 characters whose order under the SQL collation
    // differs from code-point order).
    let mut keys: Vec<String> = [
        "a-b", "ab", "a-c", "ac", "a'b", "a b", "-a", "b", "co-op", "coop", "co'op", "Z",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    let estuary = [
        "?", "a", "b", "c", "€", "Š", "’", "•", "À", "Á", "Â", "Ö", "×", "Ø", "ß", "÷", "ÿ",
    ];
    for (i, c) in estuary.iter().enumerate() {
        keys.push(format!("a{c}a {i:03}"));
        keys.push(format!("a{c}b {i:03}"));
    }
    let values: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("(N'{}', {i})", k.replace('\'', "''")))
        .collect();
    sql(
        w,
        &format!("INSERT INTO dbo.ps_varkey VALUES {};", values.join(", ")),
    )
    .await;
    let mut stream = source_for(w, "ps_varkey", "&snapshot_chunk_rows=1")
        .start(StartFrom::Beginning)
        .await
        .expect("start");
    let rows = rows_until(&mut stream, |r| r.len() >= keys.len()).await;
    let mut seen: Vec<String> = rows
        .iter()
        .filter_map(|r| match col(r, "code") {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    seen.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(seen, want, "every key exactly once");
    drop(stream);

    // 5. A _UTF8-collated varchar column decodes to the right text (the server converts it).
    fresh_table(
        w,
        "ps_utf8",
        "id int PRIMARY KEY, s varchar(60) COLLATE Latin1_General_100_CI_AS_SC_UTF8",
    )
    .await;
    sql(w, "INSERT INTO dbo.ps_utf8 VALUES (1, N'héllo ✓ 😀');").await;
    let mut stream = source_for(w, "ps_utf8", "")
        .start(StartFrom::Beginning)
        .await
        .expect("start");
    sql(w, "INSERT INTO dbo.ps_utf8 VALUES (2, N'ünï ✓');").await;
    let rows = rows_until(&mut stream, |r| r.len() >= 2).await;
    assert_eq!(col(&rows[0], "s"), Some(&Value::Text("héllo ✓ 😀".into())));
    assert_eq!(col(&rows[1], "s"), Some(&Value::Text("ünï ✓".into())));
    drop(stream);

    // 6. A column dropped without a new capture instance: NULL, no error 207
    //    (cdc_rules::a_column_dropped_without_a_new_instance_reads_null).
    fresh_table(
        w,
        "ps_dropcol",
        "id int PRIMARY KEY, v nvarchar(20), old nvarchar(20)",
    )
    .await;
    sql(w, "INSERT INTO dbo.ps_dropcol VALUES (1, N'a', N'x'); ALTER TABLE dbo.ps_dropcol DROP COLUMN old;").await;
    let mut stream = source_for(w, "ps_dropcol", "")
        .start(StartFrom::Beginning)
        .await
        .expect("start after DROP COLUMN");
    sql(w, "INSERT INTO dbo.ps_dropcol VALUES (2, N'b');").await;
    let rows = rows_until(&mut stream, |r| r.len() >= 2).await;
    for r in &rows {
        assert_eq!(col(r, "old"), Some(&Value::Null));
    }
    drop(stream);

    // 7. Two instances with equal start LSNs after cleanup: a fresh stream takes the newer
    //    (create_date), so dropping the older changes nothing
    //    (cdc_rules::equal_start_lsns_after_cleanup_pick_the_newest_instance).
    fresh_table(w, "ps_twoinst", "id int PRIMARY KEY, v nvarchar(20)").await;
    sql(w, "ALTER TABLE dbo.ps_twoinst ADD w nvarchar(20) NULL;
            EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'ps_twoinst', @role_name = NULL,
                @capture_instance = N'dbo_ps_twoinst_a', @supports_net_changes = 0;
            INSERT INTO dbo.ps_twoinst VALUES (1, N'a', N'w');").await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    sql(w, "DECLARE @lsn binary(10) = sys.fn_cdc_get_max_lsn();
            EXEC sys.sp_cdc_cleanup_change_table @capture_instance = N'dbo_ps_twoinst', @low_water_mark = @lsn, @threshold = 100000;
            EXEC sys.sp_cdc_cleanup_change_table @capture_instance = N'dbo_ps_twoinst_a', @low_water_mark = @lsn, @threshold = 100000;").await;
    let mut stream = source_for(w, "ps_twoinst", "")
        .start(StartFrom::Beginning)
        .await
        .expect("start");
    rows_until(&mut stream, |r| !r.is_empty()).await;
    sql(w, "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'ps_twoinst', @capture_instance = N'dbo_ps_twoinst';
            INSERT INTO dbo.ps_twoinst VALUES (2, N'b', N'x');").await;
    let rows = rows_until(&mut stream, |r| r.len() >= 2).await;
    assert_eq!(col(&rows[1], "w"), Some(&Value::Text("x".into())));
    drop(stream);
}

/// A database prepared by PowerSync's own instructions (`module-mssql` `ci/init-mssql.sql`):
/// `_powersync_checkpoints (id INT IDENTITY PRIMARY KEY, last_updated DATETIME)` with CDC gated
/// by `cdc_reader` (cdc_rules::a_powersync_service_prepared_database_works_as_it_is). The
/// connector's own table is set aside meanwhile and restored afterwards.
async fn powersync_service_shape(w: &RealWorkload) {
    sql(w, "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints', @capture_instance = N'all';
            EXEC sp_rename N'dbo._powersync_checkpoints', N'_powersync_checkpoints_connector';
            IF DATABASE_PRINCIPAL_ID(N'cdc_reader') IS NULL CREATE ROLE cdc_reader;
            CREATE TABLE dbo._powersync_checkpoints (id INT IDENTITY PRIMARY KEY, last_updated DATETIME);
            EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints',
                @role_name = N'cdc_reader', @supports_net_changes = 0;").await;
    fresh_table(w, "ps_service", "id int PRIMARY KEY, v nvarchar(20)").await;
    sql(w, "INSERT INTO dbo.ps_service VALUES (1, N'a');").await;
    let source = source_for(w, "ps_service", "");
    let outcome = async {
        let report = source.check().await?;
        let mut stream = source.start(StartFrom::Beginning).await?;
        let checkpoint = source.write_checkpoint().await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut observed = false;
        while !observed && std::time::Instant::now() < deadline {
            if let Ok(Some(batch)) =
                tokio::time::timeout(Duration::from_secs(1), stream.next()).await
            {
                observed = batch?
                    .events
                    .iter()
                    .any(|e| matches!(e, ChangeEvent::CheckpointObserved(c) if *c == checkpoint));
            }
        }
        Ok::<_, SourceError>((report, observed))
    }
    .await;
    sql(w, "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints', @capture_instance = N'all';
            DROP TABLE dbo._powersync_checkpoints;
            EXEC sp_rename N'dbo._powersync_checkpoints_connector', N'_powersync_checkpoints';
            EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'_powersync_checkpoints',
                @role_name = NULL, @supports_net_changes = 0;").await;
    let (report, observed) = outcome.expect("stream on a PowerSync-service-shaped database");
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.severity != powersync_source_core::Severity::Error),
        "{:?}",
        report.problems
    );
    assert!(observed, "the write checkpoint was observed");
}

/// `setup --apply` twice: the second run has nothing required left (review findings 7, 8).
async fn setup_twice(w: &RealWorkload) {
    use powersync_source_core::provision::{Outcome, Request};
    let request = Request {
        apply: true,
        user: "powersync_setup_test".into(),
        tables: vec![TableName::new("dbo", "ps_keyupd")],
    };
    let mut out = Vec::new();
    let first = powersync_source_mssql::provision::run(&w.config, &request, &mut out)
        .await
        .expect("first setup run");
    assert_ne!(first, Outcome::Failed, "{}", String::from_utf8_lossy(&out));
    let mut out = Vec::new();
    let second = powersync_source_mssql::provision::run(&w.config, &request, &mut out)
        .await
        .expect("second setup run");
    assert_eq!(second, Outcome::Ready, "{}", String::from_utf8_lossy(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_suite() {
    let Some(url) = url() else {
        eprintln!("SKIPPED: SQL Server suite (conformance + golden table): MSSQL_TEST_URL is not set and no SQL Server can run here");
        return;
    };
    let w = RealWorkload::new(url).await;
    golden_table(&w).await;
    c::bad_credentials(&w, "not-the-password")
        .await
        .expect("bad_credentials");
    c::missing_prerequisite(&w)
        .await
        .expect("missing_prerequisite");
    c::snapshot_while_writing(&w)
        .await
        .expect("snapshot_while_writing");
    c::resume_from_checkpoint(&w)
        .await
        .expect("resume_from_checkpoint");
    c::large_transaction(&w, 20_000, 4096)
        .await
        .expect("large_transaction");
    c::add_drop_column(&w).await.expect("add_drop_column");
    c::idle_write_checkpoint(&w, Duration::from_secs(30))
        .await
        .expect("idle_write_checkpoint");
    c::server_restart(&w)
        .await
        .expect("server_restart (sessions killed)");
    c::history_lost(&w).await.expect("history_lost");
    cdc_rules(&w).await;
    powersync_service_shape(&w).await;
    setup_twice(&w).await;
}
