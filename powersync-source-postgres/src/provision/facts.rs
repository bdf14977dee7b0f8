//! What a PostgreSQL server looks like to the planner ([`Facts`]), read with the
//! administrative connection.

use std::collections::BTreeSet;

use powersync_source_core::{SourceError, TableName};
use tokio_postgres::Client;

use super::provider::{self, ServerSignals};

fn sql_err(what: &str, e: tokio_postgres::Error) -> SourceError {
    crate::sql_error(e, what)
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
