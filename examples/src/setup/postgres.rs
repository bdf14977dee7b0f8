//! PostgreSQL: what the server looks like ([`Facts`], read with the administrative
//! connection) and the steps that make it ready ([`plan`], a pure function of the facts, so
//! recorded facts can be tested without a server).

use std::collections::{BTreeMap, BTreeSet};

use powersync_source_core::{SourceError, TableName};
use tokio_postgres::Client;

use super::provider::{self, Provider, ServerSignals};
use super::{Action, Step};

/// Oldest server with everything the connector needs (pgoutput with truncate).
pub const MIN_VERSION_NUM: i32 = 110_000;

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

/// A role's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleFacts {
    /// Role name.
    pub name: String,
    /// `rolsuper`.
    pub superuser: bool,
    /// `rolcreaterole`.
    pub createrole: bool,
    /// `rolreplication`.
    pub replication: bool,
    /// `rolbypassrls`.
    pub bypassrls: bool,
    /// `rolcanlogin`.
    pub login: bool,
    /// Roles it is a member of, directly or not.
    pub member_of: Vec<String>,
}

/// The publication as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicationFacts {
    /// `FOR ALL TABLES`.
    pub all_tables: bool,
    /// Published operations: insert, update, delete, truncate.
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    /// Its tables: direct members and what `pg_publication_tables` shows (partitions).
    pub tables: BTreeSet<TableName>,
}

/// One table of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFacts {
    /// Qualified name.
    pub name: TableName,
    /// `r` (table or partition) or `p` (partitioned table).
    pub kind: char,
    /// `relreplident`: `d` default, `n` nothing, `f` full, `i` index.
    pub replident: char,
    /// Whether it has a primary key.
    pub has_pk: bool,
    /// Row-level security enabled.
    pub rls: bool,
    /// The replication user (or PUBLIC, while the user does not exist) may SELECT from it.
    pub user_select: bool,
    /// The replication user owns it (or is a member of its owner).
    pub user_owner: bool,
    /// The replication user (or PUBLIC) has USAGE on its schema.
    pub user_schema_usage: bool,
}

/// Everything the plan depends on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `server_version`.
    pub version: String,
    /// `server_version_num`.
    pub version_num: i32,
    /// `current_database()`.
    pub database: String,
    /// The administrative user (the URL's).
    pub admin: RoleFacts,
    /// The replication user, if it exists.
    pub user: Option<RoleFacts>,
    /// `wal_level` now.
    pub wal_level: String,
    /// Where the running `wal_level` comes from (`pg_settings.source`).
    pub wal_level_source: String,
    /// The `wal_level` the configuration files hold (superusers only; `None` when unknown).
    pub wal_level_in_file: Option<String>,
    /// Whether the administrator may run `ALTER SYSTEM SET wal_level`.
    pub can_alter_system: bool,
    /// version(), provider settings and roles.
    pub signals: ServerSignals,
    /// The publication, if it exists.
    pub publication: Option<PublicationFacts>,
    /// Every user table (ordinary, partitioned and partitions; permanent; outside the system
    /// schemas).
    pub tables: Vec<TableFacts>,
    /// Schemas where the administrator's default privileges already give the replication
    /// user SELECT on new tables.
    pub default_select: BTreeSet<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct Wanted {
    /// Replication user.
    pub user: String,
    /// Publication.
    pub publication: String,
    /// `--table` names; empty = every table (or the publication's).
    pub tables: Vec<TableName>,
}

fn sql_err(what: &str, e: tokio_postgres::Error) -> SourceError {
    let msg = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    let err = format!("{what}: {msg}");
    match e.code().map(|c| c.code()) {
        Some("42501") => SourceError::auth(err),
        _ => SourceError::connection(err),
    }
}

/// `version()` first, alone: it is all CockroachDB and friends are asked before they are
/// turned away.
pub async fn read_version(client: &Client) -> Result<String, SourceError> {
    let row = client
        .query_one("SELECT pg_catalog.version()", &[])
        .await
        .map_err(|e| sql_err("reading the server version", e))?;
    Ok(row.get(0))
}

/// Reads the facts for `wanted` with the administrative connection.
pub async fn read_facts(client: &Client, wanted: &Wanted) -> Result<Facts, SourceError> {
    let mut f = Facts {
        signals: ServerSignals {
            version: read_version(client).await?,
            ..Default::default()
        },
        ..Default::default()
    };
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,
                    current_database()::text",
            &[],
        )
        .await
        .map_err(|e| sql_err("reading server settings", e))?;
    f.version = row.get(0);
    f.version_num = row.get(1);
    f.database = row.get(2);

    let mut filter = String::from("name = 'wal_level'");
    for prefix in provider::PROVIDER_SETTING_PREFIXES {
        filter.push_str(&format!(" OR name LIKE '{}%'", prefix.replace('_', "\\_")));
    }
    for row in client
        .query(
            &format!("SELECT name, coalesce(setting, ''), coalesce(source, '') FROM pg_catalog.pg_settings WHERE {filter}"),
            &[],
        )
        .await
        .map_err(|e| sql_err("reading pg_settings", e))?
    {
        let name: String = row.get(0);
        if name == "wal_level" {
            f.wal_level = row.get(1);
            f.wal_level_source = row.get(2);
        } else {
            f.signals.settings.insert(name, row.get(1));
        }
    }
    let provider_roles: Vec<String> = provider::PROVIDER_ROLES
        .iter()
        .map(|r| r.to_string())
        .collect();
    f.signals.roles = client
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1) ORDER BY 1",
            &[&provider_roles],
        )
        .await
        .map_err(|e| sql_err("reading roles", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let roles = client
        .query(
            "SELECT r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
                    r.rolcanlogin,
                    ARRAY(SELECT m.rolname::text FROM pg_catalog.pg_roles m
                          WHERE m.oid <> r.oid AND pg_catalog.pg_has_role(r.oid, m.oid, 'MEMBER')
                          ORDER BY 1),
                    r.rolname = current_user
             FROM pg_catalog.pg_roles r
             WHERE r.rolname = current_user OR r.rolname = $1",
            &[&wanted.user],
        )
        .await
        .map_err(|e| sql_err("reading roles", e))?;
    for row in &roles {
        let facts = RoleFacts {
            name: row.get(0),
            superuser: row.get(1),
            createrole: row.get(2),
            replication: row.get(3),
            bypassrls: row.get(4),
            login: row.get(5),
            member_of: row.get(6),
        };
        if row.get::<_, bool>(7) {
            f.admin = facts.clone();
        }
        if facts.name == wanted.user {
            f.user = Some(facts);
        }
    }

    f.can_alter_system = f.admin.superuser;
    if f.version_num >= 150_000 && !f.can_alter_system {
        if let Ok(row) = client
            .query_one(
                "SELECT pg_catalog.has_parameter_privilege('wal_level', 'ALTER SYSTEM')",
                &[],
            )
            .await
        {
            f.can_alter_system = row.get(0);
        }
    }
    if f.admin.superuser {
        // pg_file_settings is for superusers; the last entry is the one the files set. Its
        // `error` is "setting could not be applied" for a value that waits for a restart.
        if let Ok(rows) = client
            .query(
                "SELECT setting FROM pg_catalog.pg_file_settings
                 WHERE name = 'wal_level' ORDER BY seqno DESC LIMIT 1",
                &[],
            )
            .await
        {
            f.wal_level_in_file = rows.first().map(|r| r.get(0));
        }
    }

    if let Some(row) = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
             FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&wanted.publication],
        )
        .await
        .map_err(|e| sql_err("reading publications", e))?
    {
        let mut p = PublicationFacts {
            all_tables: row.get(0),
            insert: row.get(1),
            update: row.get(2),
            delete: row.get(3),
            truncate: row.get(4),
            tables: BTreeSet::new(),
        };
        for row in client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables
                 WHERE pubname = $1
                 UNION
                 SELECT n.nspname::text, c.relname::text
                 FROM pg_catalog.pg_publication_rel pr
                 JOIN pg_catalog.pg_publication pb ON pb.oid = pr.prpubid
                 JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE pb.pubname = $1",
                &[&wanted.publication],
            )
            .await
            .map_err(|e| sql_err("reading published tables", e))?
        {
            p.tables.insert(TableName::new(
                row.get::<_, String>(0),
                row.get::<_, String>(1),
            ));
        }
        f.publication = Some(p);
    }

    // The replication user's rights; PUBLIC's while the user does not exist yet.
    let who = if f.user.is_some() {
        wanted.user.as_str()
    } else {
        "public"
    };
    let owner = if f.user.is_some() {
        "pg_catalog.pg_has_role($1::text, c.relowner, 'USAGE')"
    } else {
        "($1::text IS NULL)"
    };
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relreplident::text,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                WHERE i.indrelid = c.oid AND i.indisprimary),
                        c.relrowsecurity,
                        pg_catalog.has_table_privilege($1::text, c.oid, 'SELECT'),
                        {owner},
                        pg_catalog.has_schema_privilege($1::text, n.oid, 'USAGE')
                 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND c.oid >= 16384
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                 ORDER BY 1, 2"
            ),
            &[&who],
        )
        .await
        .map_err(|e| sql_err("reading tables", e))?;
    for row in &rows {
        let kind: String = row.get(2);
        let replident: String = row.get(3);
        f.tables.push(TableFacts {
            name: TableName::new(row.get::<_, String>(0), row.get::<_, String>(1)),
            kind: kind.chars().next().unwrap_or('r'),
            replident: replident.chars().next().unwrap_or('d'),
            has_pk: row.get(4),
            rls: row.get(5),
            user_select: row.get(6),
            user_owner: row.get(7),
            user_schema_usage: row.get(8),
        });
    }

    if f.user.is_some() {
        f.default_select = client
            .query(
                "SELECT DISTINCT n.nspname::text
                 FROM pg_catalog.pg_default_acl d
                 JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace,
                      LATERAL pg_catalog.aclexplode(d.defaclacl) a
                 WHERE d.defaclrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
                   AND d.defaclobjtype = 'r' AND a.privilege_type = 'SELECT'
                   AND a.grantee = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1)",
                &[&wanted.user],
            )
            .await
            .map_err(|e| sql_err("reading default privileges", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    Ok(f)
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

/// The steps, and notes that are not problems.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// In order.
    pub steps: Vec<Step>,
    /// Advice printed in the header.
    pub notes: Vec<String>,
    /// One line on what is replicated.
    pub scope: String,
}

/// `name` as an SQL identifier: as is when PostgreSQL would read it unchanged, else in
/// double quotes.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `schema.name`, each part quoted as needed.
pub fn qualified(t: &TableName) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

/// `'text'` as an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// PostgreSQL's reserved key words (and the ones a role or column name cannot be unquoted).
#[rustfmt::skip]
const RESERVED: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign", "freeze",
    "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner", "intersect",
    "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime",
    "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or", "order",
    "outer", "overlaps", "placing", "primary", "references", "returning", "right", "select",
    "session_user", "similar", "some", "symmetric", "system_user", "table", "tablesample", "then",
    "to", "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when",
    "where", "window", "with",
];

/// Checks a `--user` name: PostgreSQL refuses these as role names.
pub fn validate_user(name: &str) -> Result<(), SourceError> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        return Err(SourceError::config("--user must not be empty"));
    }
    if name.len() > 63 {
        return Err(SourceError::config(
            "--user: role names are at most 63 bytes",
        ));
    }
    if lower.starts_with("pg_") {
        return Err(SourceError::config(
            "--user: names starting with pg_ are reserved",
        ));
    }
    if [
        "public",
        "none",
        "current_user",
        "session_user",
        "current_role",
    ]
    .contains(&lower.as_str())
    {
        return Err(SourceError::config(format!(
            "--user: `{name}` cannot be a role name"
        )));
    }
    Ok(())
}

fn sql(reason: impl Into<String>, statement: impl Into<String>) -> Step {
    Step {
        reason: reason.into(),
        action: Action::Sql(statement.into()),
        required: true,
    }
}

fn manual(reason: impl Into<String>, todo: impl Into<String>, restart: bool) -> Step {
    Step {
        reason: reason.into(),
        action: Action::Manual {
            todo: todo.into(),
            restart,
        },
        required: true,
    }
}

fn list(names: &[String]) -> String {
    names.join(", ")
}

/// The steps that make the server ready for `wanted`, in order.
pub fn plan(f: &Facts, wanted: &Wanted, provider: Provider, host: &str) -> Plan {
    let mut plan = Plan {
        notes: provider.connection_notes(host),
        ..Default::default()
    };
    let u = quote_ident(&wanted.user);
    let p = quote_ident(&wanted.publication);

    // ---- server ----
    if f.version_num < MIN_VERSION_NUM {
        plan.steps.push(manual(
            format!(
                "PostgreSQL {} is too old: logical replication with pgoutput needs 11 or newer",
                f.version
            ),
            "upgrade the server to PostgreSQL 11 or newer (a supported major version)",
            true,
        ));
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
                        plan.steps.push(Step {
                            reason: format!(
                                "{reason} (ALTER SYSTEM writes it to postgresql.auto.conf)"
                            ),
                            action: Action::SqlAlone("ALTER SYSTEM SET wal_level = logical".into()),
                            required: true,
                        });
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
    let scope = if !wanted.tables.is_empty() {
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
    };
    let selected: Vec<&TableFacts> = match &scope {
        Scope::AllTables => f.tables.iter().filter(|t| t.kind == 'r').collect(),
        Scope::Listed(names) => names
            .iter()
            .filter_map(|n| existing.get(n).copied())
            .collect(),
    };
    plan.scope = match &scope {
        Scope::AllTables => format!("every table (FOR ALL TABLES; {} now)", selected.len()),
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
            plan.steps.push(Step {
                reason: format!(
                    "the replication user `{}` does not exist: create it with {}{}",
                    wanted.user,
                    attributes.join(", "),
                    if rls_tables.is_empty() {
                        String::new()
                    } else {
                        format!(" (BYPASSRLS: row-level security on {} table(s) would hide rows from the snapshot)", rls_tables.len())
                    }
                ),
                action: Action::CreateUser {
                    name: wanted.user.clone(),
                    attributes,
                },
                required: true,
            });
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
            let names: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
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
                let names: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
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
                let names: Vec<String> = schemas.iter().map(|s| quote_ident(s)).collect();
                plan.steps.push(Step {
                    reason: format!(
                        "recommended: FOR ALL TABLES also publishes tables created later; let `{}` read the tables `{}` creates in {} from now on",
                        wanted.user,
                        f.admin.name,
                        schemas.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                    action: Action::Sql(format!(
                        "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {u}",
                        list(&names)
                    )),
                    required: false,
                });
            }
        }
    }

    // ---- the publication ----
    let listed_existing: Vec<&TableName> = match &scope {
        Scope::AllTables => Vec::new(),
        Scope::Listed(names) => names.iter().filter(|n| existing.contains_key(n)).collect(),
    };
    match &f.publication {
        None => match &scope {
            Scope::AllTables => plan.steps.push(sql(
                format!(
                    "publication `{}` does not exist: it names the tables the slot streams",
                    wanted.publication
                ),
                format!("CREATE PUBLICATION {p} FOR ALL TABLES"),
            )),
            Scope::Listed(_) if !listed_existing.is_empty() => {
                let names: Vec<String> = listed_existing.iter().map(|t| qualified(t)).collect();
                plan.steps.push(sql(
                    format!(
                        "publication `{}` does not exist: it names the tables the slot streams",
                        wanted.publication
                    ),
                    format!("CREATE PUBLICATION {p} FOR TABLE {}", list(&names)),
                ));
            }
            Scope::Listed(_) => {}
        },
        Some(publication) => {
            if !publication.all_tables {
                let missing: Vec<String> = listed_existing
                    .iter()
                    .filter(|t| !publication.tables.contains(**t))
                    .map(|t| qualified(t))
                    .collect();
                if !missing.is_empty() {
                    plan.steps.push(sql(
                        format!(
                            "publication `{}` misses {} selected table(s)",
                            wanted.publication,
                            missing.len()
                        ),
                        format!("ALTER PUBLICATION {p} ADD TABLE {}", list(&missing)),
                    ));
                }
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
                plan.steps.push(sql(
                    format!(
                        "publication `{}` does not publish {}: those changes would be lost",
                        wanted.publication,
                        missing_ops.join(", ")
                    ),
                    format!(
                        "ALTER PUBLICATION {p} SET (publish = 'insert, update, delete, truncate')"
                    ),
                ));
            }
        }
    }

    // ---- row identity ----
    for t in &selected {
        if t.kind == 'r' && (t.replident == 'n' || (t.replident == 'd' && !t.has_pk)) {
            plan.steps.push(sql(
                format!(
                    "table {} has no primary key: with no replica identity its updates and deletes cannot be keyed (and fail while it is published)",
                    t.name
                ),
                format!("ALTER TABLE {} REPLICA IDENTITY FULL", qualified(&t.name)),
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

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
        plan.steps.iter().map(|s| s.action.display()).collect()
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
        assert_eq!(s[6], "CREATE PUBLICATION powersync FOR ALL TABLES;");
        assert_eq!(s[7], "ALTER TABLE public.log REPLICA IDENTITY FULL;");
        assert_eq!(s.len(), 8);
    }

    #[test]
    fn file_already_logical_means_restart_only() {
        let mut f = facts();
        f.wal_level = "replica".into();
        f.wal_level_in_file = Some("logical".into());
        let plan = plan(&f, &wanted(&["items"]), Provider::SelfHosted, "localhost");
        assert!(matches!(
            &plan.steps[0].action,
            Action::Manual { restart: true, .. }
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
        assert_eq!(s[4], "CREATE PUBLICATION powersync FOR TABLE public.items;");
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
        assert_eq!(s[1], "ALTER PUBLICATION powersync ADD TABLE app.things;");
        assert_eq!(
            s[2],
            "ALTER PUBLICATION powersync SET (publish = 'insert, update, delete, truncate');"
        );
        assert_eq!(s.len(), 3, "{s:?}");
    }

    #[test]
    fn ready_server_has_no_steps() {
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
            "CREATE PUBLICATION powersync FOR TABLE app.things, public.items, public.log;"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("powersync"), "powersync");
        assert_eq!(quote_ident("PowerSync"), "\"PowerSync\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("9lives"), "\"9lives\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert!(validate_user("pg_x").is_err());
        assert!(validate_user("public").is_err());
        assert!(validate_user("").is_err());
        assert!(validate_user("repl").is_ok());
    }
}
