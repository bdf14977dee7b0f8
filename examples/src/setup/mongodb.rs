//! `setup` for MongoDB: version and topology, the checkpoint collection, pre/post images for
//! the chosen mode, and a replication user with exactly the privileges the connector uses.
//!
//! Steps print as `mongosh` commands; `--apply` runs the same commands through the driver.
//! The user gets a custom role, `powersync_replication` in `admin`, holding the privileges of
//! the connector's documentation: `listCollections`, `find` and `changeStream` on the
//! database (plus `collMod` in the default `auto_configure` post-image mode, to enable
//! `changeStreamPreAndPostImages` itself), and `createCollection`, `dropCollection`, `find`,
//! `changeStream`, `insert`, `update`, `remove` on `_powersync_checkpoints`. On Atlas, custom
//! roles are created in the Atlas UI (Database Access → Custom Roles) or with the Atlas CLI
//! rather than `createRole`; the built-in alternative is `readAnyDatabase` plus `readWrite` on
//! the database, which grants more than needed.
//!
//! [`plan`] is a pure function of [`Facts`], tested on recorded facts.

use std::io::Write;

use examples::cli::AppError;
use examples::source_url::{self, SourceKind};
use powersync_source_core::{SourceError, TableName};
use powersync_source_mongodb::bson::{doc, Bson, Document};
use powersync_source_mongodb::{MongoConfig, MongoSource, PostImages};

use super::{finish, generate_password, print_steps, Action, Options, Outcome, Step};

const CHECKPOINTS: &str = "_powersync_checkpoints";
const ROLE: &str = "powersync_replication";

/// Server topology, from `hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// A replica set member.
    #[default]
    ReplicaSet,
    /// A standalone `mongod`.
    Standalone,
    /// A `mongos` router.
    Sharded,
}

/// What the deployment looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `buildInfo.version`.
    pub version: String,
    /// Parsed (major, minor, patch).
    pub numbers: Option<(u32, u32, u32)>,
    /// From `hello`.
    pub topology: Topology,
    /// The URL's database.
    pub database: String,
    /// Selected collections that exist, with `changeStreamPreAndPostImages` enabled or not.
    pub collections: Vec<(String, bool)>,
    /// `_powersync_checkpoints` exists.
    pub checkpoints: bool,
    /// Whether the server manages users (`usersInfo` answered).
    pub user_management: bool,
    /// The role exists.
    pub role: bool,
    /// The user exists.
    pub user: bool,
}

/// One step with the command that carries it out.
#[derive(Debug, Clone)]
pub struct Planned {
    /// As printed.
    pub step: Step,
    /// The database the command runs in, and the command (None: manual).
    pub command: Option<(String, Document)>,
}

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The role's privileges for `database` in `mode`.
pub fn role_privileges(database: &str, mode: PostImages) -> Vec<Document> {
    let mut db_actions = vec!["listCollections", "find", "changeStream"];
    if mode == PostImages::AutoConfigure {
        db_actions.push("collMod");
    }
    vec![
        doc! { "resource": { "db": database, "collection": "" }, "actions": db_actions },
        doc! {
            "resource": { "db": database, "collection": CHECKPOINTS },
            "actions": ["createCollection", "dropCollection", "find", "changeStream", "insert", "update", "remove"],
        },
    ]
}

fn shell_privileges(database: &str, mode: PostImages) -> String {
    role_privileges(database, mode)
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
    let manual = |reason: String, todo: String, restart: bool| Planned {
        step: Step {
            reason,
            action: Action::Manual { todo, restart },
            required: true,
        },
        command: None,
    };
    match facts.numbers {
        Some(v) if v < (6, 0, 0) => steps.push(manual(
            format!("MongoDB {} is older than 6.0 (change streams with pre/post images)", facts.version),
            "upgrade the deployment to MongoDB 6.0 or later (7.0+ recommended)".into(),
            true,
        )),
        Some(v) if v < (6, 0, 9) => notes.push(format!(
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
        Topology::ReplicaSet => {}
    }
    if !facts.checkpoints {
        steps.push(Planned {
            step: Step {
                reason: format!("the checkpoint collection {db}.{CHECKPOINTS} is missing (write checkpoints and the snapshot barrier)"),
                action: Action::Sql(format!(
                    "db.getSiblingDB({}).createCollection({})",
                    js_string(db),
                    js_string(CHECKPOINTS)
                )),
                required: true,
            },
            command: Some((db.clone(), doc! { "create": CHECKPOINTS })),
        });
    }
    if mode != PostImages::Off {
        for (name, enabled) in &facts.collections {
            if *enabled {
                continue;
            }
            steps.push(Planned {
                step: Step {
                    reason: format!(
                        "collection {db}.{name} has no changeStreamPreAndPostImages (post_images={} needs them{})",
                        mode.as_str(),
                        if mode == PostImages::AutoConfigure { "; the connector would enable them itself with collMod" } else { "" }
                    ),
                    action: Action::Sql(format!(
                        "db.getSiblingDB({}).runCommand({{ collMod: {}, changeStreamPreAndPostImages: {{ enabled: true }} }})",
                        js_string(db),
                        js_string(name)
                    )),
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
    if !facts.role {
        steps.push(Planned {
            step: Step {
                reason: format!("the role admin.{ROLE} (the connector's privileges) does not exist"),
                action: Action::Sql(format!(
                    "db.getSiblingDB(\"admin\").createRole({{ role: {}, privileges: [{}], roles: [] }})",
                    js_string(ROLE),
                    shell_privileges(db, mode)
                )),
                required: true,
            },
            command: Some((
                "admin".into(),
                doc! { "createRole": ROLE, "privileges": role_privileges(db, mode), "roles": [] },
            )),
        });
    }
    if !facts.user {
        steps.push(Planned {
            step: Step {
                reason: format!("the replication user `{user}` does not exist"),
                action: Action::CreateUserSql {
                    statement: format!(
                        "db.getSiblingDB(\"admin\").createUser({{ user: {}, pwd: {{password}}, roles: [{{ role: {}, db: \"admin\" }}] }})",
                        js_string(user),
                        js_string(ROLE)
                    ),
                },
                required: true,
            },
            command: Some((
                "admin".into(),
                doc! { "createUser": user, "pwd": "{password}", "roles": [{ "role": ROLE, "db": "admin" }] },
            )),
        });
    }
    (steps, notes)
}

/// Reads what [`plan`] needs.
pub async fn read_facts(
    client: &powersync_source_mongodb::mongodb::Client,
    database: &str,
    tables: &[TableName],
    user: &str,
) -> Result<Facts, SourceError> {
    let admin = client.database("admin");
    let err = |what: &'static str| {
        move |e: powersync_source_mongodb::mongodb::error::Error| {
            SourceError::connection(format!("{what}: {e}"))
        }
    };
    let build = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(err("reading buildInfo"))?;
    let version = build.get_str("version").unwrap_or_default().to_string();
    let hello = admin
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(err("running hello"))?;
    let topology = if hello.get_str("msg").ok() == Some("isdbgrid") {
        Topology::Sharded
    } else if hello.get("setName").is_some() {
        Topology::ReplicaSet
    } else {
        Topology::Standalone
    };
    let mut numbers = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    let numbers = match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Some(a)), Some(Some(b)), c) => Some((a, b, c.flatten().unwrap_or(0))),
        _ => None,
    };
    let db = client.database(database);
    let specs: Vec<Document> = db
        .run_command(doc! { "listCollections": 1, "nameOnly": false })
        .await
        .map_err(err("listing collections"))?
        .get_document("cursor")
        .ok()
        .and_then(|c| c.get_array("firstBatch").ok())
        .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
        .unwrap_or_default();
    let images = |spec: &Document| {
        spec.get_document("options")
            .ok()
            .and_then(|o| o.get_document("changeStreamPreAndPostImages").ok())
            .and_then(|c| c.get_bool("enabled").ok())
            .unwrap_or(false)
    };
    let mut collections = Vec::new();
    let mut checkpoints = false;
    for spec in &specs {
        let name = spec.get_str("name").unwrap_or_default();
        if spec.get_str("type").unwrap_or("collection") != "collection" {
            continue;
        }
        if name == CHECKPOINTS {
            checkpoints = true;
            continue;
        }
        if name.starts_with("system.") {
            continue;
        }
        let selected = tables.is_empty()
            || tables
                .iter()
                .any(|t| t.name == name && (t.schema.is_empty() || t.schema == database));
        if selected {
            collections.push((name.to_string(), images(spec)));
        }
    }
    collections.sort();
    let mut facts = Facts {
        version,
        numbers,
        topology,
        database: database.to_string(),
        collections,
        checkpoints,
        ..Facts::default()
    };
    if let Ok(users) = admin
        .run_command(doc! { "usersInfo": { "user": user, "db": "admin" } })
        .await
    {
        facts.user_management = true;
        facts.user = users.get_array("users").is_ok_and(|u| !u.is_empty());
        facts.role = admin
            .run_command(doc! { "rolesInfo": { "role": ROLE, "db": "admin" } })
            .await
            .ok()
            .and_then(|r| r.get_array("roles").ok().map(|a| !a.is_empty()))
            .unwrap_or(false);
    }
    Ok(facts)
}

/// Runs `setup` for a `mongodb://` URL.
pub async fn run(opts: &Options, out: &mut dyn Write) -> Result<Outcome, AppError> {
    let config = MongoConfig::parse(&opts.url)?;
    let mode = config.post_images();
    let tables = source_url::table_names(SourceKind::MongoDb, &opts.tables)?;
    let client = MongoSource::new(config.clone()).client().await?;
    let database = config.database().to_string();
    let facts = read_facts(&client, &database, &tables, &opts.user).await?;
    let (planned, notes) = plan(&facts, &opts.user, mode);
    writeln!(
        out,
        "-- setup: MongoDB {}, database {} ({:?}); post_images={}",
        facts.version,
        database,
        facts.topology,
        mode.as_str()
    )?;
    writeln!(out, "-- replication user: {}", opts.user)?;
    for note in &notes {
        writeln!(out, "-- note: {note}")?;
    }
    let steps: Vec<Step> = planned.iter().map(|p| p.step.clone()).collect();
    if !opts.apply || steps.is_empty() {
        print_steps(out, &steps)?;
        if steps.is_empty() {
            writeln!(out, "-- nothing to change")?;
        } else if planned.iter().any(|p| p.command.is_some()) {
            writeln!(out)?;
            writeln!(out, "-- run again with --apply to run these commands")?;
        }
        return finish(out, &steps);
    }
    let mut password = None;
    let mut failed = false;
    for (i, p) in planned.iter().enumerate() {
        writeln!(out)?;
        writeln!(out, "-- {}. {}", i + 1, p.step.reason)?;
        writeln!(out, "{}", p.step.action.display())?;
        let Some((db, command)) = &p.command else {
            writeln!(out, "-- skipped: do it as described")?;
            continue;
        };
        let mut command = command.clone();
        if command.contains_key("createUser") {
            let generated = generate_password();
            command.insert("pwd", generated.clone());
            password = Some(generated);
        }
        match client.database(db).run_command(command).await {
            Ok(_) => writeln!(out, "-- done")?,
            Err(e) => {
                if p.step.action.display().contains("createUser") {
                    password = None;
                }
                super::step_failed(out, &e)?;
                failed = true;
                break;
            }
        }
    }
    if let Some(p) = &password {
        super::show_password(out, &opts.user, p)?;
    }
    writeln!(out)?;
    writeln!(out, "-- checking again")?;
    let facts = read_facts(&client, &database, &tables, &opts.user).await?;
    let (planned, _) = plan(&facts, &opts.user, mode);
    let steps: Vec<Step> = planned.into_iter().map(|p| p.step).collect();
    print_steps(out, &steps)?;
    if steps.is_empty() {
        writeln!(out, "-- nothing left")?;
    }
    let outcome = finish(out, &steps)?;
    Ok(if failed { Outcome::Failed } else { outcome })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Facts {
        Facts {
            version: "7.0.12".into(),
            numbers: Some((7, 0, 12)),
            topology: Topology::ReplicaSet,
            database: "app".into(),
            collections: vec![("lists".into(), false), ("todos".into(), true)],
            checkpoints: false,
            user_management: true,
            role: false,
            user: false,
        }
    }

    fn shown(facts: &Facts, mode: PostImages) -> Vec<String> {
        plan(facts, "powersync", mode)
            .0
            .iter()
            .map(|p| p.step.action.display())
            .collect()
    }

    #[test]
    fn fresh_replica_set_golden() {
        assert_eq!(
            shown(&fresh(), PostImages::ReadOnly),
            vec![
                r#"db.getSiblingDB("app").createCollection("_powersync_checkpoints");"#,
                r#"db.getSiblingDB("app").runCommand({ collMod: "lists", changeStreamPreAndPostImages: { enabled: true } });"#,
                r#"db.getSiblingDB("admin").createRole({ role: "powersync_replication", privileges: [{"resource":{"db":"app","collection":""},"actions":["listCollections","find","changeStream"]}, {"resource":{"db":"app","collection":"_powersync_checkpoints"},"actions":["createCollection","dropCollection","find","changeStream","insert","update","remove"]}], roles: [] });"#,
                r#"db.getSiblingDB("admin").createUser({ user: "powersync", pwd: '<generated by --apply, shown once>', roles: [{ role: "powersync_replication", db: "admin" }] });"#,
            ]
        );
    }

    #[test]
    fn modes_decide_images_and_collmod() {
        let (p, _) = plan(&fresh(), "powersync", PostImages::AutoConfigure);
        assert!(!p[1].step.required, "auto_configure enables images itself");
        assert!(shown(&fresh(), PostImages::AutoConfigure)[2].contains("\"collMod\""));
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
        assert!(p[1].step.action.display().contains("rs.initiate()"));

        let ready = Facts {
            collections: vec![("lists".into(), true)],
            checkpoints: true,
            role: true,
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
        assert_eq!(p.len(), 2);
        assert!(notes[0].contains("no access control"));
    }
}
