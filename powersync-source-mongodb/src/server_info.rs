//! Decisions on what the server says about itself (`hello`, `buildInfo`, `connectionStatus`):
//! pure functions, so each documented response shape is unit-tested.

use mongodb::bson::{Bson, Document};

/// The collection `write_checkpoint` and the snapshot barrier write to.
pub const CHECKPOINTS_COLLECTION: &str = "_powersync_checkpoints";

/// The collection backfill requests are inserted into (in the checkpoint database); see
/// `backfill_docs`.
pub const SIGNALS_COLLECTION: &str = powersync_source_core::backfill::SIGNAL_TABLE;

/// What kind of deployment `hello` describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// A replica-set member (`setName` present).
    ReplicaSet(String),
    /// A `mongos` router (`msg: "isdbgrid"`).
    Sharded,
    /// Neither: a standalone `mongod`.
    Standalone,
}

/// Reads the topology from a `hello` (or legacy `isMaster`) response.
pub fn topology(hello: &Document) -> Topology {
    if let Ok(name) = hello.get_str("setName") {
        return Topology::ReplicaSet(name.to_owned());
    }
    if hello.get_str("msg") == Ok("isdbgrid") {
        return Topology::Sharded;
    }
    Topology::Standalone
}

/// `major.minor.patch` of a version string (`"6.0.9"`, `"7.0.2-rc1"`).
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether the server knows `$changeStreamSplitLargeEvent` (7.0+, and 6.0.9+).
pub fn supports_split_event(version: (u32, u32, u32)) -> bool {
    version >= (6, 0, 9)
}

/// The privileges a user holds, from `connectionStatus` with `showPrivileges: true`.
#[derive(Debug, Clone, Default)]
pub struct Privileges {
    /// `None` when no user is authenticated (authorization disabled: everything allowed).
    grants: Option<Vec<Grant>>,
}

#[derive(Debug, Clone)]
struct Grant {
    /// `None` = any database (cluster-wide resource `{db: ""}` or `anyResource`).
    db: Option<String>,
    /// `None` = every collection of `db`.
    collection: Option<String>,
    actions: Vec<String>,
}

impl Privileges {
    /// Reads a `connectionStatus` response.
    pub fn from_connection_status(status: &Document) -> Privileges {
        let Ok(info) = status.get_document("authInfo") else {
            return Privileges::default();
        };
        let authenticated = info
            .get_array("authenticatedUsers")
            .map(|u| !u.is_empty())
            .unwrap_or(false);
        if !authenticated {
            return Privileges::default();
        }
        let mut grants = Vec::new();
        for p in info
            .get_array("authenticatedUserPrivileges")
            .map(|a| a.as_slice())
            .unwrap_or_default()
        {
            let Bson::Document(p) = p else { continue };
            let Ok(resource) = p.get_document("resource") else {
                continue;
            };
            let actions: Vec<String> = p
                .get_array("actions")
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if resource.get_bool("anyResource") == Ok(true) {
                grants.push(Grant {
                    db: None,
                    collection: None,
                    actions,
                });
                continue;
            }
            let (Ok(db), Ok(coll)) = (resource.get_str("db"), resource.get_str("collection"))
            else {
                continue;
            };
            grants.push(Grant {
                db: (!db.is_empty()).then(|| db.to_owned()),
                collection: (!coll.is_empty()).then(|| coll.to_owned()),
                actions,
            });
        }
        Privileges {
            grants: Some(grants),
        }
    }

    /// Whether authorization is in force (a user is authenticated).
    pub fn is_enforced(&self) -> bool {
        self.grants.is_some()
    }

    /// Whether `action` is allowed on `db.collection` (`collection` `None` = the database
    /// level resource).
    pub fn allows(&self, action: &str, db: &str, collection: Option<&str>) -> bool {
        let Some(grants) = &self.grants else {
            return true;
        };
        grants.iter().any(|g| {
            g.actions.iter().any(|a| a == action)
                && g.db.as_deref().filter(|d| *d != db).is_none()
                && match (&g.collection, collection) {
                    (None, _) => true,
                    (Some(c), Some(want)) => c == want,
                    (Some(_), None) => false,
                }
        })
    }

    /// The actions of `wanted` not granted on every database at once (`{db: "", collection:
    /// ""}` or `anyResource`), as a cluster-level change stream needs.
    pub fn missing_everywhere<'a>(&self, wanted: &[&'a str]) -> Vec<&'a str> {
        let Some(grants) = &self.grants else {
            return Vec::new();
        };
        wanted
            .iter()
            .copied()
            .filter(|action| {
                !grants.iter().any(|g| {
                    g.db.is_none()
                        && g.collection.is_none()
                        && g.actions.iter().any(|a| a == action)
                })
            })
            .collect()
    }

    /// The actions of `wanted` missing on `db.collection`.
    pub fn missing<'a>(
        &self,
        wanted: &[&'a str],
        db: &str,
        collection: Option<&str>,
    ) -> Vec<&'a str> {
        wanted
            .iter()
            .copied()
            .filter(|a| !self.allows(a, db, collection))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    #[test]
    fn topology_from_documented_hello_shapes() {
        // Replica-set primary (MongoDB manual, hello: "setName", "isWritablePrimary").
        let rs =
            doc! {"isWritablePrimary": true, "setName": "rs0", "hosts": ["a:27017"], "ok": 1.0};
        assert_eq!(topology(&rs), Topology::ReplicaSet("rs0".into()));
        // mongos answers msg: "isdbgrid".
        let mongos = doc! {"isWritablePrimary": true, "msg": "isdbgrid", "ok": 1.0};
        assert_eq!(topology(&mongos), Topology::Sharded);
        // A standalone mongod: neither.
        let standalone = doc! {"isWritablePrimary": true, "maxWireVersion": 21, "ok": 1.0};
        assert_eq!(topology(&standalone), Topology::Standalone);
        // Legacy isMaster of a standalone.
        let legacy = doc! {"ismaster": true, "ok": 1.0};
        assert_eq!(topology(&legacy), Topology::Standalone);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.0.9"), Some((6, 0, 9)));
        assert_eq!(parse_version("7.0.2-rc1"), Some((7, 0, 2)));
        assert_eq!(parse_version("8"), Some((8, 0, 0)));
        assert_eq!(parse_version("x"), None);
        assert!(supports_split_event((6, 0, 9)));
        assert!(!supports_split_event((6, 0, 8)));
        assert!(supports_split_event((7, 0, 0)));
        assert!(!supports_split_event((5, 0, 20)));
    }

    #[test]
    fn privileges_from_connection_status() {
        let status = doc! {"authInfo": {
            "authenticatedUsers": [{"user": "sync", "db": "admin"}],
            "authenticatedUserPrivileges": [
                {"resource": {"db": "app", "collection": ""}, "actions": ["find", "listCollections", "changeStream"]},
                {"resource": {"db": "app", "collection": "_powersync_checkpoints"}, "actions": ["insert", "update"]},
                {"resource": {"cluster": true}, "actions": ["serverStatus"]},
            ]
        }, "ok": 1.0};
        let p = Privileges::from_connection_status(&status);
        assert!(p.is_enforced());
        assert!(p.allows("find", "app", None));
        assert!(p.allows("find", "app", Some("users")));
        assert!(!p.allows("find", "other", None));
        assert!(p.allows("insert", "app", Some(CHECKPOINTS_COLLECTION)));
        assert!(!p.allows("insert", "app", None));
        assert_eq!(
            p.missing(&["find", "collMod"], "app", None),
            vec!["collMod"]
        );
        let open = doc! {"authInfo": {"authenticatedUsers": [], "authenticatedUserPrivileges": []}};
        assert!(Privileges::from_connection_status(&open).allows("anything", "x", None));
        let root = doc! {"authInfo": {"authenticatedUsers": [{"user": "r"}],
        "authenticatedUserPrivileges": [{"resource": {"anyResource": true}, "actions": ["collMod"]}]}};
        assert!(Privileges::from_connection_status(&root).allows("collMod", "x", Some("y")));
    }

    #[test]
    fn cluster_wide_privileges() {
        let status = |privileges: Vec<Document>| {
            Privileges::from_connection_status(&doc! {"authInfo": {
                "authenticatedUsers": [{"user": "sync", "db": "admin"}],
                "authenticatedUserPrivileges": privileges,
            }})
        };
        // Per-database grants, however many, are not the whole cluster.
        let per_db = status(vec![
            doc! {"resource": {"db": "app", "collection": ""}, "actions": ["find", "changeStream"]},
            doc! {"resource": {"db": "billing", "collection": ""}, "actions": ["find", "changeStream"]},
        ]);
        assert_eq!(
            per_db.missing_everywhere(&["find", "changeStream"]),
            vec!["find", "changeStream"]
        );
        // `{db: "", collection: ""}` (the seed's custom role) is; a collection-only one is not.
        let cluster = status(vec![
            doc! {"resource": {"db": "", "collection": ""}, "actions": ["find", "changeStream"]},
            doc! {"resource": {"db": "", "collection": "x"}, "actions": ["insert"]},
        ]);
        assert!(cluster
            .missing_everywhere(&["find", "changeStream"])
            .is_empty());
        assert_eq!(cluster.missing_everywhere(&["insert"]), vec!["insert"]);
        assert!(cluster.allows("find", "anything", None));
        let open = Privileges::from_connection_status(&doc! {});
        assert!(open.missing_everywhere(&["find"]).is_empty());
    }
}
