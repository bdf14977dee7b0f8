//! The data-shape rules of real SQL Server CDC that the connector must follow, each on the
//! model with the document or peer test that states it (the model's comments cite them too).

use powersync_source_core::{ChangeEvent, ChangeSource, StartFrom, TableName, Value};
use powersync_source_mssql::testing::SqlType;

use crate::fake::{bigint_type, text_type, FakeServer, Op};
use crate::support::*;
use crate::workload::fake_source;

async fn started(
    server: &FakeServer,
    tables: Vec<TableName>,
) -> (powersync_source_core::ChangeStream, Vec<ChangeEvent>) {
    let source = fake_source(server, tables, "");
    let mut stream = source.start(StartFrom::Beginning).await.unwrap();
    let events = read_until(&mut stream, snapshot_done).await.unwrap();
    (stream, events)
}

fn sized(name: &str, max_length: i32) -> SqlType {
    SqlType {
        name: name.into(),
        max_length,
        precision: 0,
        scale: 0,
    }
}

fn rows_of(events: &[ChangeEvent], prefix: &str) -> Vec<String> {
    summarize(events)
        .into_iter()
        .filter(|s| s.starts_with(prefix))
        .collect()
}

/// Review finding 1 (Microsoft's `cdc.fn_cdc_get_all_changes` page; Debezium PR 7452 and PR
/// 8078; Materialize `test/sql-server-cdc/varchar-max.td`): an update that does not touch a
/// `varchar(max)`/`nvarchar(max)`/`varbinary(max)` column leaves it NULL in both images. The
/// replica must keep the value: `Unchanged`, never NULL. A max column set to NULL by the update
/// (its mask bit set) is a real NULL.
#[tokio::test]
async fn unchanged_max_columns_are_unchanged_not_null() {
    let server = FakeServer::new();
    let t = TableName::new("dbo", "docs");
    server.create_table(
        &t,
        &[
            ("id", bigint_type()),
            ("title", sized("nvarchar", 100)),
            ("body", text_type()),
            ("raw", sized("varbinary", -1)),
        ],
        &["id"],
    );
    server.enable_cdc(&t, "dbo_docs");
    let (mut stream, _) = started(&server, vec![t.clone()]).await;
    let long = "x".repeat(9000);
    server.transaction(&[Op::Insert(
        t.clone(),
        vec![
            ("id".into(), Value::Integer(1)),
            ("title".into(), Value::Text("a".into())),
            ("body".into(), Value::Text(long.clone())),
            ("raw".into(), Value::Blob(vec![1, 2])),
        ],
    )]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![("title".into(), Value::Text("b".into()))],
    )]);
    server.transaction(&[Op::Update(
        t.clone(),
        vec![Value::Integer(1)],
        vec![
            ("body".into(), Value::Null),
            ("raw".into(), Value::Blob(vec![3])),
        ],
    )]);
    let events = read_until(&mut stream, |e| commits(e) >= 3).await.unwrap();
    assert_eq!(
        rows_of(&events, "update"),
        vec![
            "update docs (1,a,unchanged,unchanged) -> (1,b,unchanged,unchanged)".to_string(),
            format!("update docs (1,b,{long},[01, 02]) -> (1,b,null,[03])"),
        ]
    );
}
