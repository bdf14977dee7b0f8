//! The steps that make a PostgreSQL server ready ([`plan`]): a pure function of the
//! [`Facts`], so recorded facts are tested without a server. The rules it shares with the
//! connector's `check()` (oldest version, keyless tables, published operations, quoting)
//! come from the check module.

use std::collections::{BTreeMap, BTreeSet};

use powersync_source_core::provision::{Fix, Plan, Step};
use powersync_source_core::TableName;

use super::facts::{Facts, TableFacts, Wanted};
use super::provider::Provider;
use crate::check::{
    add_tables, create_publication, create_signal_table, ident, lacks_row_identity,
    publish_everything, qualified, replica_identity_full, signal_table, too_old,
};

/// Schemas a provider keeps for itself: with no `--table`, their tables are left out of the
/// publication (a `FOR TABLE` list is used instead of `FOR ALL TABLES`).
pub fn internal_schemas(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Supabase => &[
            "auth",
            "storage",
            "realtime",
            "_realtime",
            "supabase_functions",
            "supabase_migrations",
            "extensions",
            "graphql",
            "graphql_public",
            "net",
            "pgsodium",
            "pgsodium_masks",
            "vault",
            "pgbouncer",
            "cron",
            "_analytics",
            "pgmq",
        ],
        _ => &[],
    }
}

/// Which tables the replication covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `FOR ALL TABLES`: every user table, also those created later.
    AllTables,
    /// A list: `--table`, the existing publication's tables, or (where `FOR ALL TABLES` is
    /// not possible or not wise) every user table outside the provider's schemas.
    Listed(Vec<TableName>),
}

fn sql(reason: impl Into<String>, statement: impl Into<String>) -> Step {
    Step::required(reason, Fix::Sql(statement.into()))
}

fn manual(reason: impl Into<String>, step: impl Into<String>, restart: bool) -> Step {
    Step::required(
        reason,
        Fix::Manual {
            step: step.into(),
            restart,
        },
    )
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

/// Which tables the replication covers: `--table`, else the existing publication's, else
/// every table (`FOR ALL TABLES`, or a list where that is not possible or not wise).
pub fn scope(f: &Facts, wanted: &Wanted, provider: Provider) -> Scope {
    let internal = internal_schemas(provider);
    if !wanted.tables.is_empty() {
        Scope::Listed(wanted.tables.clone())
    } else {
        match &f.publication {
            Some(publication) if publication.all_tables => Scope::AllTables,
            Some(publication) => Scope::Listed(publication.tables.iter().cloned().collect()),
            None => {
                let no_all_tables = !internal.is_empty()
                    || (provider == Provider::SelfHosted && !f.admin.superuser);
                if no_all_tables {
                    Scope::Listed(
                        f.tables
                            .iter()
                            .filter(|t| {
                                t.kind == 'r' && !internal.contains(&t.name.schema.as_str())
                            })
                            .map(|t| t.name.clone())
                            .collect(),
                    )
                } else {
                    Scope::AllTables
                }
            }
        }
    }
}

/// One line on what is replicated, for the report's header.
pub fn describe_scope(f: &Facts, wanted: &Wanted, scope: &Scope) -> String {
    match scope {
        Scope::AllTables => format!(
            "every table (FOR ALL TABLES; {} now)",
            f.tables.iter().filter(|t| t.kind == 'r').count()
        ),
        Scope::Listed(names) if wanted.tables.is_empty() && f.publication.is_some() => {
            format!("the publication's {} table(s)", names.len())
        }
        Scope::Listed(names) => format!(
            "{} table(s): {}",
            names.len(),
            names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The steps that make the server ready for `wanted`, in order.
pub fn plan(f: &Facts, wanted: &Wanted, provider: Provider, host: &str) -> Plan {
    let mut plan = Plan {
        notes: provider.connection_notes(host),
        ..Default::default()
    };
    let u = ident(&wanted.user);

    // ---- server ----
    if let Some((reason, fix)) = too_old(&f.version, f.version_num) {
        plan.steps.push(Step::required(reason, fix));
    }
    if f.wal_level != "logical" {
        let reason = format!(
            "wal_level is `{}`: logical decoding needs `logical`",
            f.wal_level
        );
        match provider.enable_logical(&f.signals.settings) {
            Some(todo) => plan.steps.push(manual(reason, todo, true)),
            None => {
                let command_line = f.wal_level_source == "command line";
                let mut restart = String::from(
                    "restart PostgreSQL (e.g. `pg_ctlcluster <version> main restart`, `sudo systemctl restart postgresql`, or `pg_ctl restart -D <data directory>`)",
                );
                if command_line {
                    restart.push_str(
                        "; the server was started with `-c wal_level=…` on its command line, which overrides postgresql.conf and ALTER SYSTEM: remove that option from its start command first",
                    );
                }
                if f.wal_level_in_file.as_deref() == Some("logical") {
                    plan.steps.push(manual(
                        format!(
                            "wal_level = logical is already in the configuration files, but the server still runs with `{}`: the setting only changes at a restart",
                            f.wal_level
                        ),
                        restart,
                        true,
                    ));
                } else {
                    if f.can_alter_system {
                        plan.steps.push(Step::required(
                            format!("{reason} (ALTER SYSTEM writes it to postgresql.auto.conf)"),
                            Fix::SqlAlone("ALTER SYSTEM SET wal_level = logical".into()),
                        ));
                    } else {
                        plan.steps.push(manual(
                            format!("{reason}; `{}` may not run ALTER SYSTEM", f.admin.name),
                            "as a superuser run `ALTER SYSTEM SET wal_level = logical;`, or set `wal_level = logical` in postgresql.conf",
                            false,
                        ));
                    }
                    plan.steps.push(manual(
                        "restart needed: wal_level only takes effect when the server starts",
                        restart,
                        true,
                    ));
                }
            }
        }
    }

    // ---- which tables ----
    let existing: BTreeMap<&TableName, &TableFacts> =
        f.tables.iter().map(|t| (&t.name, t)).collect();
    let internal = internal_schemas(provider);
    let scope = scope(f, wanted, provider);
    let selected: Vec<&TableFacts> = match &scope {
        Scope::AllTables => f.tables.iter().filter(|t| t.kind == 'r').collect(),
        Scope::Listed(names) => names
            .iter()
            .filter_map(|n| existing.get(n).copied())
            .collect(),
    };
    if wanted.tables.is_empty() && f.publication.is_none() {
        if !internal.is_empty() {
            plan.notes.push(format!(
                "{provider}: the publication lists the tables outside {provider}'s own schemas instead of FOR ALL TABLES; run setup again (or ALTER PUBLICATION … ADD TABLE) for tables created later"
            ));
        } else if matches!(scope, Scope::Listed(_)) {
            plan.notes.push(format!(
                "`{}` is not a superuser and cannot create a publication FOR ALL TABLES: the current tables are listed instead",
                f.admin.name
            ));
        }
    }
    if let Scope::Listed(names) = &scope {
        for name in names.iter().filter(|n| !existing.contains_key(n)) {
            plan.steps.push(manual(
                format!("table {name} does not exist in database {}", f.database),
                "create it, or correct the --table name (`schema.name`; `public` is the default schema)",
                false,
            ));
        }
        if names.is_empty() {
            plan.notes.push(format!(
                "publication `{}` publishes no tables: pass --table NAME to add some",
                wanted.publication
            ));
        }
    }

    // ---- the replication user ----
    let user_all_powerful = f.user.as_ref().is_some_and(|r| r.superuser);
    let rls_tables: Vec<&TableFacts> = selected
        .iter()
        .copied()
        .filter(|t| t.rls && !t.user_owner)
        .collect();
    let replication_role = provider.replication_role();
    match &f.user {
        None => {
            let mut attributes = vec!["LOGIN"];
            if replication_role.is_none() {
                attributes.push("REPLICATION");
            }
            if !rls_tables.is_empty() {
                attributes.push("BYPASSRLS");
            }
            plan.steps.push(Step::required(
                format!(
                    "the replication user `{}` does not exist: create it with {}{}",
                    wanted.user,
                    attributes.join(", "),
                    if rls_tables.is_empty() {
                        String::new()
                    } else {
                        format!(" (BYPASSRLS: row-level security on {} table(s) would hide rows from the snapshot)", rls_tables.len())
                    }
                ),
                // The password goes in as a SCRAM verifier when the step runs (see `apply`).
                Fix::CreateUser {
                    head: format!("CREATE ROLE {u} WITH {} PASSWORD ", attributes.join(" ")),
                    tail: String::new(),
                },
            ));
            if let Some(role) = replication_role {
                plan.steps.push(sql(
                    format!("on {provider} the REPLICATION right comes from membership in {role}"),
                    format!("GRANT {role} TO {u}"),
                ));
            }
        }
        Some(role) if !role.superuser => {
            let mut missing = Vec::new();
            if !role.login {
                missing.push("LOGIN");
            }
            let has_replication = role.replication
                || replication_role.is_some_and(|r| role.member_of.iter().any(|m| m == r));
            if !has_replication && replication_role.is_none() {
                missing.push("REPLICATION");
            }
            if !rls_tables.is_empty() && !role.bypassrls {
                missing.push("BYPASSRLS");
            }
            if !missing.is_empty() {
                plan.steps.push(sql(
                    format!("user `{}` exists but lacks {}", wanted.user, missing.join(", ")),
                    format!("ALTER ROLE {u} WITH {}", missing.join(" ")),
                ));
            }
            if let Some(r) = replication_role.filter(|_| !has_replication) {
                plan.steps.push(sql(
                    format!("user `{}` has no REPLICATION right: on {provider} it comes from membership in {r}", wanted.user),
                    format!("GRANT {r} TO {u}"),
                ));
            }
            plan.notes.push(format!(
                "user `{}` already exists: its password is left as it is (and never shown)",
                wanted.user
            ));
        }
        Some(_) => plan.notes.push(format!(
            "user `{}` is a superuser: it needs no further rights (a user with only REPLICATION and SELECT is safer)",
            wanted.user
        )),
    }

    // ---- rights on the tables ----
    if !user_all_powerful {
        let schemas: BTreeSet<&str> = selected
            .iter()
            .filter(|t| !t.user_schema_usage)
            .map(|t| t.name.schema.as_str())
            .collect();
        if !schemas.is_empty() {
            let names: Vec<String> = schemas.iter().map(|s| ident(s)).collect();
            plan.steps.push(sql(
                format!(
                    "`{}` needs USAGE on schema {} to read its tables",
                    wanted.user,
                    schemas.iter().copied().collect::<Vec<_>>().join(", ")
                ),
                format!("GRANT USAGE ON SCHEMA {} TO {u}", list(&names)),
            ));
        }
        let unreadable: Vec<&TableFacts> = selected
            .iter()
            .copied()
            .filter(|t| !t.user_select && !t.user_owner)
            .collect();
        if !unreadable.is_empty() {
            let reason = format!(
                "the initial snapshot reads every replicated table: `{}` cannot SELECT from {} of them",
                wanted.user,
                unreadable.len()
            );
            let statement = if scope == Scope::AllTables {
                let schemas: BTreeSet<&str> =
                    unreadable.iter().map(|t| t.name.schema.as_str()).collect();
                let names: Vec<String> = schemas.iter().map(|s| ident(s)).collect();
                format!(
                    "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {u}",
                    list(&names)
                )
            } else {
                let names: Vec<String> = unreadable.iter().map(|t| qualified(&t.name)).collect();
                format!("GRANT SELECT ON TABLE {} TO {u}", list(&names))
            };
            plan.steps.push(sql(reason, statement));
        }
        if scope == Scope::AllTables {
            let schemas: BTreeSet<&str> = selected
                .iter()
                .map(|t| t.name.schema.as_str())
                .filter(|s| !f.default_select.contains(*s))
                .collect();
            if !schemas.is_empty() {
                let names: Vec<String> = schemas.iter().map(|s| ident(s)).collect();
                plan.steps.push(Step::recommended(
                    format!(
                        "recommended: FOR ALL TABLES also publishes tables created later; let `{}` read the tables `{}` creates in {} from now on",
                        wanted.user,
                        f.admin.name,
                        schemas.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                    Fix::Sql(format!(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {u}",
                        list(&names)
                    )),
                ));
            }
        }
    }

    // ---- the backfill signal table ----
    // Recommended, not required: streaming works without it; backfills are requested
    // through its rows (`check()` warns when it is missing).
    let signal = signal_table();
    let signal_facts = existing.get(&signal).copied();
    if signal_facts.is_none() {
        plan.steps.push(Step::recommended(
            format!(
                "backfills (re-reading tables while streaming) are requested through rows inserted into {signal}"
            ),
            Fix::Sql(create_signal_table()),
        ));
    }
    if !user_all_powerful && signal_facts.is_none_or(|t| !t.user_select && !t.user_owner) {
        plan.steps.push(Step::recommended(
            format!(
                "`{}` reads {signal} in the stream and inserts a host's backfill requests into it",
                wanted.user
            ),
            Fix::Sql(format!(
                "GRANT SELECT, INSERT ON {} TO {u}",
                qualified(&signal)
            )),
        ));
    }

    // ---- the publication ----
    let listed_existing: Vec<&TableName> = match &scope {
        Scope::AllTables => Vec::new(),
        Scope::Listed(names) => names.iter().filter(|n| existing.contains_key(n)).collect(),
    };
    // The signal table exists by now (created above when missing), and streams with them.
    let mut with_signal = listed_existing.clone();
    if scope != Scope::AllTables && !with_signal.contains(&&signal) {
        with_signal.push(&signal);
    }
    match &f.publication {
        None if scope == Scope::AllTables || !listed_existing.is_empty() => {
            plan.steps.push(Step::required(
                format!(
                    "publication `{}` does not exist: it names the tables the slot streams",
                    wanted.publication
                ),
                create_publication(&wanted.publication, &with_signal),
            ))
        }
        None => {}
        Some(publication) => {
            if !publication.all_tables {
                let missing: Vec<&TableName> = listed_existing
                    .iter()
                    .copied()
                    .filter(|t| !publication.tables.contains(*t))
                    .collect();
                if !missing.is_empty() {
                    plan.steps.push(Step::required(
                        format!(
                            "publication `{}` misses {} selected table(s)",
                            wanted.publication,
                            missing.len()
                        ),
                        add_tables(&wanted.publication, &missing),
                    ));
                }
            }
            if !publication.all_tables && !publication.tables.contains(&signal) {
                plan.steps.push(Step::recommended(
                    format!(
                        "publication `{}` does not publish the signal table {signal}",
                        wanted.publication
                    ),
                    add_tables(&wanted.publication, &[&signal]),
                ));
            }
            let missing_ops: Vec<&str> = [
                ("insert", publication.insert),
                ("update", publication.update),
                ("delete", publication.delete),
                ("truncate", publication.truncate),
            ]
            .into_iter()
            .filter(|(_, on)| !on)
            .map(|(op, _)| op)
            .collect();
            if !missing_ops.is_empty() {
                plan.steps.push(Step::required(
                    format!(
                        "publication `{}` does not publish {}: those changes would be lost",
                        wanted.publication,
                        missing_ops.join(", ")
                    ),
                    publish_everything(&wanted.publication),
                ));
            }
        }
    }

    // ---- row identity ----
    for t in &selected {
        if t.kind == 'r' && lacks_row_identity(t.replident, t.has_pk) {
            plan.steps.push(Step::required(
                format!(
                    "table {} has no primary key: with no replica identity its updates and deletes cannot be keyed (and fail while it is published)",
                    t.name
                ),
                replica_identity_full(&t.name),
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::facts::{PublicationFacts, RoleFacts};

    fn table(schema: &str, name: &str, pk: bool) -> TableFacts {
        TableFacts {
            name: TableName::new(schema, name),
            kind: 'r',
            replident: 'd',
            has_pk: pk,
            rls: false,
            user_select: false,
            user_owner: false,
            user_schema_usage: schema == "public",
        }
    }

    fn facts() -> Facts {
        Facts {
            version: "16.3".into(),
            version_num: 160_003,
            database: "app".into(),
            admin: RoleFacts {
                name: "postgres".into(),
                superuser: true,
                ..Default::default()
            },
            wal_level: "logical".into(),
            wal_level_source: "configuration file".into(),
            can_alter_system: true,
            tables: vec![
                table("app", "things", true),
                table("public", "items", true),
                table("public", "log", false),
            ],
            ..Default::default()
        }
    }

    fn wanted(tables: &[&str]) -> Wanted {
        Wanted {
            user: "powersync".into(),
            publication: "powersync".into(),
            tables: tables
                .iter()
                .map(|t| TableName::parse(t, "public"))
                .collect(),
        }
    }

    fn statements(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(|s| s.fix.to_string()).collect()
    }

    #[test]
    fn fresh_self_hosted_server() {
        let mut f = facts();
        f.wal_level = "replica".into();
        let plan = plan(&f, &wanted(&[]), Provider::SelfHosted, "localhost");
        let s = statements(&plan);
        assert_eq!(s[0], "ALTER SYSTEM SET wal_level = logical;");
        assert!(s[1].contains("restart PostgreSQL"), "{s:?}");
        assert!(
            s[2].starts_with("CREATE ROLE powersync WITH LOGIN REPLICATION PASSWORD '"),
            "{s:?}"
        );
        assert_eq!(s[3], "GRANT USAGE ON SCHEMA app TO powersync;");
        assert_eq!(
            s[4],
            "GRANT SELECT ON ALL TABLES IN SCHEMA app, public TO powersync;"
        );
        assert_eq!(
            s[5],
            "ALTER DEFAULT PRIVILEGES IN SCHEMA app, public GRANT SELECT ON TABLES TO powersync;"
        );
        assert!(!plan.steps[5].required);
        // The signal table (recommended: backfills need it, streaming does not).
        assert_eq!(s[6], "CREATE TABLE IF NOT EXISTS public._powersync_signals (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL);");
        assert!(!plan.steps[6].required);
        assert_eq!(
            s[7],
            "GRANT SELECT, INSERT ON public._powersync_signals TO powersync;"
        );
        assert_eq!(s[8], "CREATE PUBLICATION powersync FOR ALL TABLES;");
        assert_eq!(s[9], "ALTER TABLE public.log REPLICA IDENTITY FULL;");
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn file_already_logical_means_restart_only() {
        let mut f = facts();
        f.wal_level = "replica".into();
        f.wal_level_in_file = Some("logical".into());
        let plan = plan(&f, &wanted(&["items"]), Provider::SelfHosted, "localhost");
        assert!(matches!(
            &plan.steps[0].fix,
            Fix::Manual { restart: true, .. }
        ));
        assert!(!statements(&plan)
            .iter()
            .any(|s| s.contains("ALTER SYSTEM SET")));
    }

    #[test]
    fn rds_uses_rds_replication_and_the_parameter_group() {
        let mut f = facts();
        f.wal_level = "replica".into();
        f.admin.superuser = false;
        f.admin.member_of = vec!["rds_superuser".into()];
        f.signals
            .settings
            .insert("rds.logical_replication".into(), "off".into());
        let plan = plan(
            &f,
            &wanted(&["items"]),
            Provider::Rds,
            "db.x.eu-west-1.rds.amazonaws.com",
        );
        let s = statements(&plan);
        assert!(s[0].contains("rds.logical_replication = 1"), "{s:?}");
        assert!(
            s[1].starts_with("CREATE ROLE powersync WITH LOGIN PASSWORD"),
            "{s:?}"
        );
        assert_eq!(s[2], "GRANT rds_replication TO powersync;");
        assert_eq!(s[3], "GRANT SELECT ON TABLE public.items TO powersync;");
        assert_eq!(s[4], "CREATE TABLE IF NOT EXISTS public._powersync_signals (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL);");
        assert_eq!(
            s[6],
            "CREATE PUBLICATION powersync FOR TABLE public.items, public._powersync_signals;"
        );
    }

    #[test]
    fn existing_publication_gets_tables_and_operations() {
        let mut f = facts();
        f.user = Some(RoleFacts {
            name: "powersync".into(),
            replication: true,
            login: true,
            ..Default::default()
        });
        for t in &mut f.tables {
            t.user_select = true;
            t.user_schema_usage = true;
        }
        f.publication = Some(PublicationFacts {
            insert: true,
            update: true,
            tables: [TableName::new("public", "items")].into_iter().collect(),
            ..Default::default()
        });
        let plan = plan(
            &f,
            &wanted(&["items", "app.things", "nope"]),
            Provider::SelfHosted,
            "h",
        );
        let s = statements(&plan);
        assert!(
            plan.steps[0].reason.contains("public.nope does not exist"),
            "{s:?}"
        );
        assert_eq!(s[1], "CREATE TABLE IF NOT EXISTS public._powersync_signals (id text PRIMARY KEY, kind text NOT NULL, tables text NOT NULL);");
        assert_eq!(
            s[2],
            "GRANT SELECT, INSERT ON public._powersync_signals TO powersync;"
        );
        assert_eq!(s[3], "ALTER PUBLICATION powersync ADD TABLE app.things;");
        assert_eq!(
            s[4],
            "ALTER PUBLICATION powersync ADD TABLE public._powersync_signals;"
        );
        assert_eq!(
            s[5],
            "ALTER PUBLICATION powersync SET (publish = 'insert, update, delete, truncate');"
        );
        assert_eq!(s.len(), 6, "{s:?}");
    }

    #[test]
    fn ready_server_has_no_steps() {
        let mut f = facts();
        f.tables.push(table("public", "_powersync_signals", true));
        f.user = Some(RoleFacts {
            name: "powersync".into(),
            replication: true,
            login: true,
            ..Default::default()
        });
        for t in &mut f.tables {
            t.user_select = true;
            t.user_schema_usage = true;
            t.replident = if t.has_pk { 'd' } else { 'f' };
        }
        f.publication = Some(PublicationFacts {
            all_tables: true,
            insert: true,
            update: true,
            delete: true,
            truncate: true,
            ..Default::default()
        });
        f.default_select = ["app".to_string(), "public".to_string()]
            .into_iter()
            .collect();
        let plan = plan(&f, &wanted(&[]), Provider::SelfHosted, "h");
        assert!(plan.steps.is_empty(), "{:?}", statements(&plan));
    }

    #[test]
    fn supabase_lists_tables_outside_its_schemas() {
        let mut f = facts();
        f.admin.superuser = false;
        f.tables.push(table("auth", "users", true));
        f.tables[0].rls = true;
        let plan = plan(&f, &wanted(&[]), Provider::Supabase, "db.x.supabase.co");
        let s = statements(&plan);
        assert!(s[0].contains("LOGIN REPLICATION BYPASSRLS"), "{s:?}");
        let create = s
            .iter()
            .find(|s| s.starts_with("CREATE PUBLICATION"))
            .unwrap();
        assert_eq!(
            create,
            "CREATE PUBLICATION powersync FOR TABLE app.things, public.items, public.log, public._powersync_signals;"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("powersync"), "powersync");
        assert_eq!(ident("PowerSync"), "\"PowerSync\"");
        assert_eq!(ident("user"), "\"user\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(ident("9lives"), "\"9lives\"");
        assert_eq!(qualified(&TableName::new("app", "Order")), "app.\"Order\"");
    }
}
