//! Provisioning (Cargo feature `provision`) for MongoDB: version and topology, the checkpoint
//! collection, pre/post images for the chosen mode, and a replication user with exactly the
//! privileges the connector's `check()` asks for.
//!
//! Steps print as `mongosh` commands; `--apply` runs the same commands through the driver.
//! The user gets a custom role, `powersync_replication` in `admin`, holding the privileges of
//! the connector's documentation: `listCollections`, `find` and `changeStream` on each
//! selected database (plus `collMod` in the default `auto_configure` post-image mode, to enable
//! `changeStreamPreAndPostImages` itself), `createCollection`, `dropCollection`, `find`,
//! `changeStream`, `insert`, `update`, `remove` on `_powersync_checkpoints` (markers and
//! backfill watermarks), and `createCollection`, `find`, `changeStream`, `insert` on
//! `_powersync_signals` (backfill requests, created by `setup` too). A source over
//! several databases reads one cluster-level change stream, which needs `find` and
//! `changeStream` on the whole cluster (`{db: "", collection: ""}`); only then does the role
//! hold that privilege. A role that exists but lacks some of them gets them with
//! `grantPrivilegesToRole`. On Atlas, custom
//! roles are created in the Atlas UI (Database Access → Custom Roles) or with the Atlas CLI
//! rather than `createRole`; the built-in alternative is `readAnyDatabase` plus `readWrite` on
//! the database, which grants more than needed.
//!
//! The version, topology, privilege and collection rules are the connector's own (shared
//! with `check()`); [`plan`] is a pure function of [`Facts`], tested on recorded facts, and
//! [`run`] prints it or runs its commands through the driver.

use std::io::Write;

use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use powersync_source_core::provision::{
    generate_password, Fix, Outcome, ProvisionError, Report, Request, Step,
};
use powersync_source_core::{SourceError, TableName};

use crate::catalog::{list_collections, Selection};
use crate::check::{
    enable_images, js_string, CHECKPOINT_ACTIONS, DATABASE_ACTIONS, MIN_VERSION, SIGNAL_ACTIONS,
};
use crate::driver_error::driver_error;
use crate::selection_check::CLUSTER_ACTIONS;
use crate::server_info::{
    parse_version, supports_split_event, topology, CHECKPOINTS_COLLECTION, SIGNALS_COLLECTION,
};
use crate::{MongoConfig, MongoSource, PostImages};

pub use crate::server_info::Topology;

const CHECKPOINTS: &str = CHECKPOINTS_COLLECTION;
const SIGNALS: &str = SIGNALS_COLLECTION;
/// The custom role holding exactly the connector's privileges.
pub const ROLE: &str = "powersync_replication";

/// What the deployment looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `buildInfo.version`.
    pub version: String,
    /// Parsed (major, minor, patch).
    pub numbers: Option<(u32, u32, u32)>,
    /// From `hello`.
    pub topology: Topology,
    /// The database holding `_powersync_checkpoints`.
    pub database: String,
    /// The selected databases (the checkpoint database need not be one of them).
    pub databases: Vec<String>,
    /// Selected collections that exist (`database.collection`), with
    /// `changeStreamPreAndPostImages` enabled or not.
    pub collections: Vec<(TableName, bool)>,
    /// `_powersync_checkpoints` exists.
    pub checkpoints: bool,
    /// `_powersync_signals` (backfill requests) exists in the checkpoint database.
    pub signals: bool,
    /// Whether the server manages users (`usersInfo` answered).
    pub user_management: bool,
    /// The role exists.
    pub role: bool,
    /// The role's privileges when it exists: (database, collection, actions), empty names as
    /// in the server's resource documents (`""` = any).
    pub role_grants: Vec<(String, String, Vec<String>)>,
    /// The user exists.
    pub user: bool,
}

/// One step with the command that carries it out: MongoDB steps print as `mongosh`
/// commands ([`Fix::Sql`] holds that text) and run as the equivalent database command.
#[derive(Debug, Clone)]
pub struct Planned {
    /// As printed.
    pub step: Step,
    /// The database the command runs in, and the command (None: manual).
    pub command: Option<(String, Document)>,
}

/// The role's privileges for the selected `databases` (their own actions, in `mode`), the
/// checkpoint collection in `checkpoint_database`, and, when the source reads a cluster-level
/// change stream (more than one database involved), `find` and `changeStream` on the whole
/// cluster.
pub fn role_privileges(
    databases: &[String],
    checkpoint_database: &str,
    mode: PostImages,
) -> Vec<Document> {
    let mut db_actions = DATABASE_ACTIONS.to_vec();
    if mode == PostImages::AutoConfigure {
        db_actions.push("collMod");
    }
    let mut privileges = Vec::new();
    let cluster = databases.len() > 1 || databases.iter().all(|d| d != checkpoint_database);
    if cluster {
        privileges.push(doc! {
            "resource": { "db": "", "collection": "" },
            "actions": CLUSTER_ACTIONS,
        });
    }
    for database in databases {
        privileges.push(
            doc! { "resource": { "db": database.as_str(), "collection": "" }, "actions": db_actions.clone() },
        );
    }
    privileges.push(doc! {
        "resource": { "db": checkpoint_database, "collection": CHECKPOINTS },
        "actions": CHECKPOINT_ACTIONS,
    });
    privileges.push(doc! {
        "resource": { "db": checkpoint_database, "collection": SIGNALS },
        "actions": SIGNAL_ACTIONS,
    });
    privileges
}

/// The privileges of `wanted` (as [`role_privileges`] lists them) that `grants` lacks, each
/// narrowed to its missing actions.
fn lacking_privileges(
    wanted: &[Document],
    grants: &[(String, String, Vec<String>)],
) -> Vec<Document> {
    let mut out = Vec::new();
    for privilege in wanted {
        let resource = privilege
            .get_document("resource")
            .cloned()
            .unwrap_or_default();
        let db = resource.get_str("db").unwrap_or_default();
        let coll = resource.get_str("collection").unwrap_or_default();
        let actions: Vec<&str> = privilege
            .get_array("actions")
            .map(|a| a.iter().filter_map(Bson::as_str).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = actions
            .into_iter()
            .filter(|action| {
                !grants.iter().any(|(g_db, g_coll, g_actions)| {
                    // A grant covers the wanted resource when it is the same or wider.
                    (g_db.is_empty() || g_db == db)
                        && (g_coll.is_empty() || g_coll == coll)
                        && g_actions.iter().any(|a| a == action)
                })
            })
            .collect();
        if !missing.is_empty() {
            out.push(doc! { "resource": resource, "actions": missing });
        }
    }
    out
}

fn shell_privileges(privileges: &[Document]) -> String {
    privileges
        .iter()
        .map(|d| Bson::Document(d.clone()).into_relaxed_extjson().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The steps for `user` in `mode`.
pub fn plan(facts: &Facts, user: &str, mode: PostImages) -> (Vec<Planned>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let db = &facts.database;
    let manual = |reason: String, step: String, restart: bool| Planned {
        step: Step::required(reason, Fix::Manual { step, restart }),
        command: None,
    };
    match facts.numbers {
        Some(v) if v < MIN_VERSION => steps.push(manual(
            format!("MongoDB {} is older than 6.0 (change streams with pre/post images)", facts.version),
            "upgrade the deployment to MongoDB 6.0 or later (7.0+ recommended)".into(),
            true,
        )),
        Some(v) if !supports_split_event(v) => notes.push(format!(
            "MongoDB {} cannot split change events over 16 MB ($changeStreamSplitLargeEvent needs 6.0.9+ or 7.0+)",
            facts.version
        )),
        _ => {}
    }
    match facts.topology {
        Topology::Standalone => steps.push(manual(
            "the server is a standalone mongod: change streams need a replica set".into(),
            "restart mongod with --replSet rs0 (or replication.replSetName: rs0 in mongod.conf), then run rs.initiate() once; a one-member replica set is enough".into(),
            true,
        )),
        Topology::Sharded => steps.push(manual(
            "the URL points at a mongos router: the connector reads one replica set's change stream".into(),
            "connect to a replica set, not a sharded cluster".into(),
            false,
        )),
        Topology::ReplicaSet(_) => {}
    }
    if !facts.checkpoints {
        steps.push(Planned {
            step: Step::required(
                format!("the checkpoint collection {db}.{CHECKPOINTS} is missing (write checkpoints and the snapshot barrier)"),
                Fix::Sql(format!(
                    "db.getSiblingDB({}).createCollection({})",
                    js_string(db),
                    js_string(CHECKPOINTS)
                )),
            ),
            command: Some((db.clone(), doc! { "create": CHECKPOINTS })),
        });
    }
    if !facts.signals {
        steps.push(Planned {
            step: Step {
                reason: format!("the backfill signal collection {db}.{SIGNALS} is missing (backfill requests are inserted into it)"),
                fix: Fix::Sql(format!(
                    "db.getSiblingDB({}).createCollection({})",
                    js_string(db),
                    js_string(SIGNALS)
                )),
                // Streams work without it; only backfill requests need it (`check` warns).
                required: false,
            },
            command: Some((db.clone(), doc! { "create": SIGNALS })),
        });
    }
    if mode != PostImages::Off {
        for (table, enabled) in &facts.collections {
            if *enabled {
                continue;
            }
            let (db, name) = (&table.schema, &table.name);
            steps.push(Planned {
                step: Step {
                    reason: format!(
                        "collection {db}.{name} has no changeStreamPreAndPostImages (post_images={} needs them{})",
                        mode.as_str(),
                        if mode == PostImages::AutoConfigure { "; the connector would enable them itself with collMod" } else { "" }
                    ),
                    fix: Fix::Sql(enable_images(db, name)),
                    // auto_configure enables them on its own; read_only cannot start without.
                    required: mode == PostImages::ReadOnly,
                },
                command: Some((
                    db.clone(),
                    doc! { "collMod": name.as_str(), "changeStreamPreAndPostImages": { "enabled": true } },
                )),
            });
        }
    }
    if !facts.user_management {
        notes.push("the server answers no usersInfo (no access control): no user to create; use a user with the privileges of the powersync_replication role where access control is on".into());
        return (steps, notes);
    }
    let wanted = role_privileges(&facts.databases, db, mode);
    if !facts.role {
        steps.push(Planned {
            step: Step::required(
                format!("the role admin.{ROLE} (the connector's privileges) does not exist"),
                Fix::Sql(format!(
                    "db.getSiblingDB(\"admin\").createRole({{ role: {}, privileges: [{}], roles: [] }})",
                    js_string(ROLE),
                    shell_privileges(&wanted)
                )),
            ),
            command: Some((
                "admin".into(),
                doc! { "createRole": ROLE, "privileges": wanted, "roles": [] },
            )),
        });
    } else {
        let lacking = lacking_privileges(&wanted, &facts.role_grants);
        if !lacking.is_empty() {
            steps.push(Planned {
                step: Step::required(
                    format!("the role admin.{ROLE} lacks privileges this selection needs"),
                    Fix::Sql(format!(
                        "db.getSiblingDB(\"admin\").grantPrivilegesToRole({}, [{}])",
                        js_string(ROLE),
                        shell_privileges(&lacking)
                    )),
                ),
                command: Some((
                    "admin".into(),
                    doc! { "grantPrivilegesToRole": ROLE, "privileges": lacking },
                )),
            });
        }
    }
    if !facts.user {
        steps.push(Planned {
            step: Step::required(
                format!("the replication user `{user}` does not exist"),
                Fix::CreateUser {
                    head: format!(
                        "db.getSiblingDB(\"admin\").createUser({{ user: {}, pwd: ",
                        js_string(user)
                    ),
                    tail: format!(
                        ", roles: [{{ role: {}, db: \"admin\" }}] }})",
                        js_string(ROLE)
                    ),
                },
            ),
            // `pwd` is set when the command runs.
            command: Some((
                "admin".into(),
                doc! { "createUser": user, "roles": [{ "role": ROLE, "db": "admin" }] },
            )),
        });
    }
    (steps, notes)
}

/// Reads what [`plan`] needs for `selection`.
pub async fn read_facts(
    client: &Client,
    selection: &Selection,
    user: &str,
) -> Result<Facts, SourceError> {
    let admin = client.database("admin");
    let build = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(|e| driver_error("reading buildInfo", e))?;
    let version = build.get_str("version").unwrap_or_default().to_string();
    let hello = admin
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| driver_error("running hello", e))?;
    let database = selection.checkpoint_database();
    let existing = list_collections(&client.database(database)).await?;
    let checkpoints = existing.iter().any(|c| c.name == CHECKPOINTS);
    let signals = existing.iter().any(|c| c.name == SIGNALS);
    let mut collections = Vec::new();
    for db in selection.databases() {
        for c in list_collections(&client.database(db)).await? {
            if selection.contains(db, &c.name) {
                collections.push((TableName::new(db, c.name), c.images));
            }
        }
    }
    let mut facts = Facts {
        numbers: parse_version(&version),
        version,
        topology: topology(&hello),
        database: database.to_string(),
        databases: selection.databases().map(str::to_owned).collect(),
        collections,
        checkpoints,
        signals,
        user_management: false,
        role: false,
        role_grants: Vec::new(),
        user: false,
    };
    if let Ok(users) = admin
        .run_command(doc! { "usersInfo": { "user": user, "db": "admin" } })
        .await
    {
        facts.user_management = true;
        facts.user = users.get_array("users").is_ok_and(|u| !u.is_empty());
        let roles = admin
            .run_command(
                doc! { "rolesInfo": { "role": ROLE, "db": "admin" }, "showPrivileges": true },
            )
            .await
            .ok();
        let role = roles
            .as_ref()
            .and_then(|r| r.get_array("roles").ok())
            .and_then(|a| a.first())
            .and_then(Bson::as_document);
        facts.role = role.is_some();
        facts.role_grants = role.map(role_grants).unwrap_or_default();
    }
    Ok(facts)
}

/// A `rolesInfo` role's privileges (with `showPrivileges`), inherited ones included.
fn role_grants(role: &Document) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for key in ["privileges", "inheritedPrivileges"] {
        for p in role
            .get_array(key)
            .map(|a| a.as_slice())
            .unwrap_or_default()
        {
            let Some(p) = p.as_document() else { continue };
            let Ok(resource) = p.get_document("resource") else {
                continue;
            };
            let (Ok(db), Ok(coll)) = (resource.get_str("db"), resource.get_str("collection"))
            else {
                continue;
            };
            let actions = p
                .get_array("actions")
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.push((db.to_owned(), coll.to_owned(), actions));
        }
    }
    out
}

/// The topology as the report's header names it.
fn topology_label(topology: &Topology) -> &'static str {
    match topology {
        Topology::ReplicaSet(_) => "ReplicaSet",
        Topology::Standalone => "Standalone",
        Topology::Sharded => "Sharded",
    }
}

/// Prepares the deployment `config` names (with an administrative account) for `request`:
/// prints the steps as `mongosh` commands, or runs them through the driver when
/// `request.apply` is set (each on its own: a failure stops the run with what ran before it
/// kept), and says how it ended. The post-image mode is the URL's `post_images`.
pub async fn run(
    config: &MongoConfig,
    request: &Request,
    out: &mut dyn Write,
) -> Result<Outcome, ProvisionError> {
    let mode = config.post_images();
    let user = request.user.as_str();
    let tables = &request.tables;
    let client = MongoSource::new(config.clone()).client().await?;
    let selection = Selection::resolve(
        config.database(),
        config.databases(),
        tables,
        config.checkpoint_database(),
    )?;
    let database = selection.databases().collect::<Vec<_>>().join(", ");
    let facts = read_facts(&client, &selection, user).await?;
    let (planned, notes) = plan(&facts, user, mode);
    let mut report = Report::new(out);
    report.comment(format_args!(
        "setup: MongoDB {}, database {} ({}); post_images={}",
        facts.version,
        database,
        topology_label(&facts.topology),
        mode.as_str()
    ))?;
    report.comment(format_args!("replication user: {user}"))?;
    report.notes(&notes)?;
    let steps: Vec<Step> = planned.iter().map(|p| p.step.clone()).collect();
    if !request.apply || steps.is_empty() {
        report.steps(&steps)?;
        if steps.is_empty() {
            report.comment("nothing to change")?;
        } else if planned.iter().any(|p| p.command.is_some()) {
            report.blank()?;
            report.comment("run again with --apply to run these commands")?;
        }
        return Ok(report.finish(&steps)?);
    }
    let mut password = None;
    let mut failed = false;
    for (i, p) in planned.iter().enumerate() {
        report.step(i, &p.step)?;
        let Some((db, command)) = &p.command else {
            report.comment("skipped: do it as described")?;
            continue;
        };
        let mut command = command.clone();
        let creates_user = matches!(p.step.fix, Fix::CreateUser { .. });
        if creates_user {
            let generated = generate_password();
            command.insert("pwd", generated.expose());
            password = Some(generated);
        }
        match client.database(db).run_command(command).await {
            Ok(_) => report.comment("done")?,
            Err(e) => {
                if creates_user {
                    password = None;
                }
                report.step_failed(driver_error("running the setup step", e))?;
                failed = true;
                break;
            }
        }
    }
    if let Some(p) = &password {
        report.password(user, p)?;
    }
    report.blank()?;
    report.comment("checking again")?;
    let facts = read_facts(&client, &selection, user).await?;
    let (planned, _) = plan(&facts, user, mode);
    let steps: Vec<Step> = planned.into_iter().map(|p| p.step).collect();
    report.steps(&steps)?;
    if steps.is_empty() {
        report.comment("nothing left")?;
    }
    let outcome = report.finish(&steps)?;
    Ok(if failed { Outcome::Failed } else { outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Facts {
        Facts {
            version: "7.0.12".into(),
            numbers: Some((7, 0, 12)),
            topology: Topology::ReplicaSet("rs0".into()),
            database: "app".into(),
            databases: vec!["app".into()],
            collections: vec![
                (TableName::new("app", "lists"), false),
                (TableName::new("app", "todos"), true),
            ],
            checkpoints: false,
            signals: false,
            user_management: true,
            role: false,
            role_grants: Vec::new(),
            user: false,
        }
    }

    fn shown(facts: &Facts, mode: PostImages) -> Vec<String> {
        plan(facts, "powersync", mode)
            .0
            .iter()
            .map(|p| p.step.fix.to_string())
            .collect()
    }

    #[test]
    fn fresh_replica_set_golden() {
        assert_eq!(
            shown(&fresh(), PostImages::ReadOnly),
            vec![
                r#"db.getSiblingDB("app").createCollection("_powersync_checkpoints");"#,
                r#"db.getSiblingDB("app").createCollection("_powersync_signals");"#,
                r#"db.getSiblingDB("app").runCommand({ collMod: "lists", changeStreamPreAndPostImages: { enabled: true } });"#,
                r#"db.getSiblingDB("admin").createRole({ role: "powersync_replication", privileges: [{"resource":{"db":"app","collection":""},"actions":["listCollections","find","changeStream"]}, {"resource":{"db":"app","collection":"_powersync_checkpoints"},"actions":["createCollection","dropCollection","find","changeStream","insert","update","remove"]}, {"resource":{"db":"app","collection":"_powersync_signals"},"actions":["createCollection","find","changeStream","insert"]}], roles: [] });"#,
                r#"db.getSiblingDB("admin").createUser({ user: "powersync", pwd: '<generated by --apply, shown once>', roles: [{ role: "powersync_replication", db: "admin" }] });"#,
            ]
        );
    }

    /// A role's grants as `rolesInfo` would report them after creating it with `privileges`.
    fn granted(privileges: &[Document]) -> Vec<(String, String, Vec<String>)> {
        role_grants(&doc! { "privileges": privileges.to_vec() })
    }

    #[test]
    fn several_databases_need_the_cluster_privilege_once() {
        let f = Facts {
            databases: vec!["app".into(), "billing".into()],
            collections: vec![(TableName::new("billing", "invoices"), false)],
            ..fresh()
        };
        let steps = shown(&f, PostImages::ReadOnly);
        assert!(steps[2].contains(r#"getSiblingDB("billing").runCommand({ collMod: "invoices""#));
        assert!(
            steps[3].contains(r#"{"resource":{"db":"","collection":""},"actions":["find","changeStream"]}, {"resource":{"db":"app","collection":""},"actions":["listCollections","find","changeStream"]}, {"resource":{"db":"billing","collection":""}"#),
            "{}",
            steps[3]
        );
        // One database: no cluster-wide privilege.
        assert!(!shown(&fresh(), PostImages::ReadOnly)[3].contains(r#""db":"""#));

        // A role made for one database gets the rest granted, and only the rest.
        let grants = granted(&role_privileges(
            &["app".into()],
            "app",
            PostImages::ReadOnly,
        ));
        let f = Facts {
            role: true,
            role_grants: grants,
            user: true,
            checkpoints: true,
            signals: true,
            collections: Vec::new(),
            ..f
        };
        assert_eq!(
            shown(&f, PostImages::ReadOnly),
            vec![
                r#"db.getSiblingDB("admin").grantPrivilegesToRole("powersync_replication", [{"resource":{"db":"","collection":""},"actions":["find","changeStream"]}, {"resource":{"db":"billing","collection":""},"actions":["listCollections","find","changeStream"]}]);"#
            ]
        );
    }

    #[test]
    fn modes_decide_images_and_collmod() {
        let (p, _) = plan(&fresh(), "powersync", PostImages::AutoConfigure);
        assert!(!p[1].step.required, "signals are optional (check warns)");
        assert!(!p[2].step.required, "auto_configure enables images itself");
        assert!(shown(&fresh(), PostImages::AutoConfigure)[3].contains("\"collMod\""));
        let off = shown(&fresh(), PostImages::Off);
        assert!(!off
            .iter()
            .any(|s| s.contains("changeStreamPreAndPostImages")));
    }

    #[test]
    fn standalone_old_and_ready() {
        let mut f = fresh();
        f.topology = Topology::Standalone;
        f.numbers = Some((5, 0, 3));
        f.version = "5.0.3".into();
        let (p, _) = plan(&f, "powersync", PostImages::Off);
        assert!(p[0].step.reason.contains("older than 6.0"));
        assert!(p[1].step.fix.to_string().contains("rs.initiate()"));

        let ready = Facts {
            collections: vec![(TableName::new("app", "lists"), true)],
            checkpoints: true,
            signals: true,
            role: true,
            role_grants: granted(&role_privileges(
                &["app".into()],
                "app",
                PostImages::ReadOnly,
            )),
            user: true,
            ..fresh()
        };
        assert!(plan(&ready, "powersync", PostImages::ReadOnly).0.is_empty());
    }

    #[test]
    fn no_access_control_means_no_user() {
        let f = Facts {
            user_management: false,
            ..fresh()
        };
        let (p, notes) = plan(&f, "powersync", PostImages::ReadOnly);
        assert_eq!(p.len(), 3);
        assert!(notes[0].contains("no access control"));
    }
}
