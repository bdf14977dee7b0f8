//! The Data Sync API of `FakeConvex` (`POST /api/v1/data/sync`,
//! `POST /api/data_sync_cursor_from_deltas`), held to the server's documented behaviour,
//! spoken to directly (the connector's use of it is tested in `data_sync.rs` and by the
//! conformance suite).

use powersync_source_convex::testing::{bytes, float, int64, FakeConvex};
use serde_json::{json, Value as Json};

use crate::behaviour::seed;
use crate::workload::KEY;

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    fn new(fake: &FakeConvex) -> Client {
        Client {
            http: reqwest::Client::new(),
            url: fake.url(),
        }
    }

    async fn post(&self, route: &str, body: Json) -> (u16, Json) {
        let answer = self
            .http
            .post(format!("{}/api/{route}", self.url))
            .header("Authorization", format!("Convex {KEY}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Json::Null))
    }

    /// One page; returns it and the next cursor.
    async fn page(&self, cursor: Option<&str>) -> (Json, String) {
        let (status, page) = self
            .post(
                "v1/data/sync",
                json!({ "cursor": cursor, "selection": items_only() }),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["pagination"]["hasMore"], json!(true));
        let next = page["pagination"]["nextCursor"]
            .as_str()
            .unwrap()
            .to_string();
        (page, next)
    }
}

/// The selection of the root component's `items` only.
fn items_only() -> Json {
    json!({ "_other": "excluded", "": { "_other": "excluded", "items": { "_other": "included" } } })
}

fn truncated(page: &Json) -> Vec<String> {
    page["truncates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["component"].as_str().unwrap(),
                t["table"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sync_snapshots_then_follows_the_log() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    fake.set_page_sizes(2, 128);
    seed(&fake, "items", 3);
    seed(&fake, "other", 2);
    let client = Client::new(&fake);
    // Snapshotting: a truncate where the table starts, then pages of documents by id.
    let (page, cursor) = client.page(None).await;
    assert_eq!(page["status"], json!({"type": "snapshotting"}));
    assert_eq!(truncated(&page), vec!["/items"]);
    assert_eq!(page["values"].as_array().unwrap().len(), 2);
    let v = &page["values"][0];
    assert_eq!(v["component"], json!(""));
    assert_eq!(v["table"], json!("items"));
    assert_eq!(v["deleted"], json!(false));
    // export_json: Int64 as a JSON integer.
    assert_eq!(v["value"]["n"], json!(0));
    assert!(v["value"]["_id"].is_string() && v["value"]["_creationTime"].is_f64());
    let sync_id = page["syncId"].clone();
    let (page, cursor) = client.page(Some(&cursor)).await;
    assert_eq!(page["values"].as_array().unwrap().len(), 1);
    assert_eq!(page["status"]["type"], json!("upToDate"));
    let snapshot_ts = page["status"]["snapshotTs"].as_i64().unwrap();
    assert_eq!(page["syncId"], sync_id);
    // Then the log: an insert and a tombstone, in timestamp order, only `items`.
    let id = fake
        .insert(
            "items",
            json!({"n": int64(-5), "f": float(f64::NAN), "z": float(-0.0), "b": bytes(b"\xfb\xff")}),
        )
        .unwrap();
    seed(&fake, "other", 1);
    fake.delete("items", &id).unwrap();
    let (page, cursor) = client.page(Some(&cursor)).await;
    let values = page["values"].as_array().unwrap();
    assert_eq!(values.len(), 2, "{page}");
    assert_eq!(values[0]["value"]["n"], json!(-5));
    assert!(values[0]["value"]["f"]["$float"].is_string());
    assert_eq!(values[0]["value"]["z"].to_string(), "-0.0");
    assert_eq!(values[0]["value"]["b"], json!({"$bytes": "+/8="}));
    assert_eq!(values[1]["deleted"], json!(true));
    assert_eq!(values[1]["value"], json!({ "_id": id }));
    assert!(values[0]["ts"].as_i64().unwrap() > snapshot_ts);
    assert!(values[1]["ts"].as_i64().unwrap() > values[0]["ts"].as_i64().unwrap());
    assert_eq!(page["status"]["type"], json!("upToDate"));
    assert!(page["status"]["snapshotTs"].as_i64().unwrap() >= values[1]["ts"].as_i64().unwrap());
    // A replaced table starts over: truncate, then its new documents.
    let new_ids = fake
        .replace_table("items", vec![json!({"n": int64(100)})])
        .unwrap();
    let (page, cursor) = client.page(Some(&cursor)).await;
    assert_eq!(truncated(&page), vec!["/items"]);
    let mut seen: Vec<Json> = page["values"].as_array().unwrap().clone();
    if page["status"]["type"] == json!("snapshotting") || seen.is_empty() {
        let (next, _) = client.page(Some(&cursor)).await;
        seen.extend(next["values"].as_array().unwrap().iter().cloned());
    }
    let ids: Vec<&str> = seen
        .iter()
        .map(|v| v["value"]["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, new_ids.iter().map(String::as_str).collect::<Vec<_>>());
    // A garbled cursor is a 400.
    let (status, answer) = client
        .post("v1/data/sync", json!({ "cursor": "not a cursor" }))
        .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (400, json!("InvalidDataSyncCursor"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deltas_cursor_becomes_a_data_sync_cursor() {
    let fake = FakeConvex::start(KEY).await.unwrap();
    seed(&fake, "items", 2);
    let client = Client::new(&fake);
    // The deltas cursor of "now": everything up to it counts as synced.
    let now = {
        let (status, answer) = client.post("query_ts", json!({})).await;
        assert_eq!(status, 200);
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD
            .decode(answer["ts"].as_str().unwrap())
            .unwrap();
        i64::from_le_bytes(b.try_into().unwrap())
    };
    seed(&fake, "items", 1);
    let (status, answer) = client
        .post(
            "data_sync_cursor_from_deltas",
            json!({ "cursor": now, "selection": items_only() }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (page, _) = client.page(answer["cursor"].as_str()).await;
    assert!(truncated(&page).is_empty());
    assert_eq!(page["values"].as_array().unwrap().len(), 1, "{page}");
    assert!(page["values"][0]["ts"].as_i64().unwrap() > now);
    // Deployments without the Data Sync API answer 404.
    fake.set_data_sync_available(false);
    let (status, _) = client.post("v1/data/sync", json!({})).await;
    assert_eq!(status, 404);
}
