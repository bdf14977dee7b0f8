//! Which hosting provider runs a PostgreSQL server, and what it takes there to turn on logical
//! decoding.
//!
//! Detection looks at the host name first (`*.rds.amazonaws.com`, `*.supabase.co`, …), then at
//! what the server itself shows: provider settings (`rds.*`, `cloudsql.*`, `alloydb.*`,
//! `azure.*`, `neon.*`), provider roles (`rds_superuser`, `cloudsqlsuperuser`, `azure_pg_admin`,
//! `neon_superuser`, `supabase_admin`, …) and `version()` (CockroachDB). A server that shows
//! nothing of the kind is self-hosted. `setup --provider NAME` overrides the guess.

use std::collections::BTreeMap;
use std::fmt;

/// A hosting provider (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Your own server: `postgresql.conf`, `ALTER SYSTEM`, restarts are yours.
    SelfHosted,
    /// Supabase.
    Supabase,
    /// Amazon RDS for PostgreSQL and Aurora PostgreSQL.
    Rds,
    /// Azure Database for PostgreSQL (Flexible Server; Single Server).
    Azure,
    /// Google Cloud SQL for PostgreSQL.
    CloudSql,
    /// Google AlloyDB for PostgreSQL.
    AlloyDb,
    /// Neon (also Vercel Postgres).
    Neon,
    /// Fly Postgres.
    Fly,
    /// PlanetScale for Postgres.
    PlanetScale,
    /// Render Postgres.
    Render,
    /// Xata.
    Xata,
    /// Heroku Postgres: no logical replication for customers.
    Heroku,
    /// CockroachDB: speaks the PostgreSQL protocol, has no pgoutput logical replication.
    CockroachDb,
    /// Amazon Aurora DSQL: no logical replication.
    AuroraDsql,
}

/// Every provider, in the order `--provider` lists them.
pub const ALL: &[Provider] = &[
    Provider::SelfHosted,
    Provider::Supabase,
    Provider::Rds,
    Provider::Azure,
    Provider::CloudSql,
    Provider::AlloyDb,
    Provider::Neon,
    Provider::Fly,
    Provider::PlanetScale,
    Provider::Render,
    Provider::Xata,
    Provider::Heroku,
    Provider::CockroachDb,
    Provider::AuroraDsql,
];

impl Provider {
    /// Name for messages.
    pub fn label(self) -> &'static str {
        match self {
            Provider::SelfHosted => "self-hosted PostgreSQL",
            Provider::Supabase => "Supabase",
            Provider::Rds => "Amazon RDS / Aurora PostgreSQL",
            Provider::Azure => "Azure Database for PostgreSQL",
            Provider::CloudSql => "Google Cloud SQL for PostgreSQL",
            Provider::AlloyDb => "Google AlloyDB for PostgreSQL",
            Provider::Neon => "Neon",
            Provider::Fly => "Fly Postgres",
            Provider::PlanetScale => "PlanetScale for Postgres",
            Provider::Render => "Render Postgres",
            Provider::Xata => "Xata",
            Provider::Heroku => "Heroku Postgres",
            Provider::CockroachDb => "CockroachDB",
            Provider::AuroraDsql => "Amazon Aurora DSQL",
        }
    }

    /// The `--provider` spelling.
    pub fn key(self) -> &'static str {
        match self {
            Provider::SelfHosted => "self-hosted",
            Provider::Supabase => "supabase",
            Provider::Rds => "rds",
            Provider::Azure => "azure",
            Provider::CloudSql => "cloudsql",
            Provider::AlloyDb => "alloydb",
            Provider::Neon => "neon",
            Provider::Fly => "fly",
            Provider::PlanetScale => "planetscale",
            Provider::Render => "render",
            Provider::Xata => "xata",
            Provider::Heroku => "heroku",
            Provider::CockroachDb => "cockroachdb",
            Provider::AuroraDsql => "aurora-dsql",
        }
    }

    /// Parses a `--provider` value (also a few common aliases).
    pub fn parse(s: &str) -> Result<Provider, String> {
        let k = s.trim().to_ascii_lowercase();
        let alias = match k.as_str() {
            "self" | "selfhosted" | "self_hosted" | "none" => Some(Provider::SelfHosted),
            "aws" | "aurora" | "amazon-rds" => Some(Provider::Rds),
            "cloud-sql" | "gcp" => Some(Provider::CloudSql),
            "vercel" => Some(Provider::Neon),
            "cockroach" => Some(Provider::CockroachDb),
            "dsql" => Some(Provider::AuroraDsql),
            _ => None,
        };
        alias
            .or_else(|| ALL.iter().copied().find(|p| p.key() == k))
            .ok_or_else(|| {
                format!(
                    "unknown provider `{s}` (known: {})",
                    ALL.iter().map(|p| p.key()).collect::<Vec<_>>().join(", ")
                )
            })
    }

    /// Why logical replication cannot work there, for providers that do not offer it.
    pub fn unsupported(self) -> Option<&'static str> {
        match self {
            Provider::Heroku => Some(
                "Heroku Postgres does not give customers the REPLICATION right or logical \
                 replication slots, so it cannot be a logical replication source; replicate \
                 from a provider that supports logical decoding (e.g. move the database to \
                 one), or override a wrong guess with --provider",
            ),
            Provider::CockroachDb => Some(
                "CockroachDB speaks the PostgreSQL wire protocol but has no pgoutput logical \
                 replication (its changefeeds are a different mechanism)",
            ),
            Provider::AuroraDsql => Some(
                "Amazon Aurora DSQL supports neither logical replication nor replication slots \
                 (use Aurora PostgreSQL or RDS for PostgreSQL with rds.logical_replication = 1)",
            ),
            _ => None,
        }
    }

    /// The role whose membership gives the REPLICATION right, where the attribute itself
    /// cannot be granted by the provider's administrator (RDS: `rds_replication`).
    pub fn replication_role(self) -> Option<&'static str> {
        match self {
            Provider::Rds => Some("rds_replication"),
            _ => None,
        }
    }

    /// What to do to get `wal_level = logical`, for providers where SQL cannot set it.
    /// `None` for self-hosted servers (the caller prints `ALTER SYSTEM`).
    /// `settings` are the server's provider settings (e.g. `rds.logical_replication`).
    pub fn enable_logical(self, settings: &BTreeMap<String, String>) -> Option<String> {
        let on = |name: &str| {
            settings
                .get(name)
                .is_some_and(|v| matches!(v.as_str(), "on" | "1" | "true"))
        };
        Some(match self {
            Provider::SelfHosted
            | Provider::Heroku
            | Provider::CockroachDb
            | Provider::AuroraDsql => return None,
            Provider::Supabase => "Supabase runs with wal_level = logical; this project does not: \
                 contact Supabase support (self-hosted Supabase: set wal_level = logical in \
                 postgresql.conf and restart)"
                .to_string(),
            Provider::Rds if on("rds.logical_replication") => {
                "rds.logical_replication is already 1 in the parameter group, but the instance \
                 has not been rebooted since: reboot it (RDS console → Actions → Reboot; Aurora: \
                 reboot the writer)"
                    .to_string()
            }
            Provider::Rds => {
                "set rds.logical_replication = 1 in the instance's DB parameter group \
                 (Aurora: the DB cluster parameter group; the default group cannot be edited: \
                 create a custom one and attach it), then reboot the instance (writer)"
                    .to_string()
            }
            Provider::Azure => {
                "set the server parameter wal_level = logical (portal: the server → \
                 Settings → Server parameters; CLI: `az postgres flexible-server parameter set \
                 --resource-group RG --server-name SERVER --name wal_level --value logical`), \
                 then restart the server (Single Server: azure.replication_support = logical)"
                    .to_string()
            }
            Provider::CloudSql if on("cloudsql.logical_decoding") => {
                "the flag cloudsql.logical_decoding is on but the instance has not restarted \
                 since: restart it"
                    .to_string()
            }
            Provider::CloudSql => {
                "set the database flag cloudsql.logical_decoding = on (console: the \
                 instance → Edit → Flags; or `gcloud sql instances patch INSTANCE \
                 --database-flags=cloudsql.logical_decoding=on`, which replaces every other flag: \
                 list them too); the instance restarts"
                    .to_string()
            }
            Provider::AlloyDb => {
                "set the database flag alloydb.logical_decoding = on on the primary \
                 instance (console: the instance → Edit → Advanced configuration → flags); the \
                 instance restarts"
                    .to_string()
            }
            Provider::Neon => "enable Logical Replication in the Neon console (the project → \
                 Settings → Logical Replication → Enable); this restarts the project's computes \
                 and cannot be turned off again"
                .to_string(),
            Provider::Fly => {
                "run `fly postgres config update --wal-level logical --app APP` \
                 (the cluster's app), then restart it when asked (`fly postgres restart --app APP`)"
                    .to_string()
            }
            Provider::PlanetScale => "in the PlanetScale console: the database → Cluster \
                 configuration → Parameters → Write-ahead log: wal_level = logical (also raise \
                 max_slot_wal_keep_size above its 4 GB default if the replica may lag); the \
                 cluster restarts"
                .to_string(),
            Provider::Render => "Render enables logical replication only through its support: \
                 contact Render support (needs a Professional workspace or higher and a disk of \
                 at least 10 GB) and name the replication user and, for a publication FOR ALL \
                 TABLES, its name; note that Render then reserves about 1/8 of the disk for \
                 wal_keep_size"
                .to_string(),
            Provider::Xata => {
                "turn on logical replication (wal_level = logical) for the branch in \
                 the Xata console, or ask Xata support; the branch restarts"
                    .to_string()
            }
        })
    }

    /// Advice about the connection itself (pooler hosts, private networks), for the host name.
    pub fn connection_notes(self, host: &str) -> Vec<String> {
        let host = host.to_ascii_lowercase();
        let mut notes = Vec::new();
        match self {
            Provider::Supabase if host.ends_with("pooler.supabase.com") => notes.push(
                "this is Supabase's pooler (Supavisor): setup can run through it, but replication \
                 connections cannot; give the connector the direct connection \
                 (db.<project-ref>.supabase.co:5432, IPv6, or the IPv4 add-on)"
                    .to_string(),
            ),
            Provider::Neon if host.contains("-pooler.") => notes.push(
                "this is Neon's pooled (PgBouncer) host: replication connections need the direct \
                 host, the same name without `-pooler`"
                    .to_string(),
            ),
            Provider::Fly if host.ends_with(".flycast") || host.ends_with(".internal") => notes
                .push(
                    "this host name resolves only inside Fly's private network (WireGuard, \
                     `fly proxy`, or an app in the same organisation)"
                        .to_string(),
                ),
            Provider::Render if !host.contains('.') => notes.push(
                "this is Render's internal host name, reachable only from services in the same \
                 region; from elsewhere use the external one (…-a.<region>-postgres.render.com)"
                    .to_string(),
            ),
            Provider::PlanetScale => notes.push(
                "PlanetScale user names carry the branch (`user.branch_id`): use the same form \
                 for the replication user in the connector's URL"
                    .to_string(),
            ),
            _ => {}
        }
        notes
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the server shows about itself, for [`detect`].
#[derive(Debug, Clone, Default)]
pub struct ServerSignals {
    /// `version()`.
    pub version: String,
    /// Provider settings by name (`rds.logical_replication`, `cloudsql.iam_authentication`, …).
    pub settings: BTreeMap<String, String>,
    /// Provider roles that exist on the server (`rds_superuser`, `cloudsqlsuperuser`, …).
    pub roles: Vec<String>,
}

/// Roles whose presence gives a provider away.
pub const PROVIDER_ROLES: &[&str] = &[
    "rds_superuser",
    "rds_replication",
    "azure_pg_admin",
    "azuresu",
    "cloudsqlsuperuser",
    "alloydbsuperuser",
    "neon_superuser",
    "supabase_admin",
];

/// Prefixes of provider settings worth reading.
pub const PROVIDER_SETTING_PREFIXES: &[&str] = &[
    "rds.",
    "cloudsql.",
    "alloydb.",
    "azure.",
    "neon.",
    "supautils.",
];

/// The provider from the host name alone; `None` when the name says nothing.
pub fn from_host(host: &str) -> Option<Provider> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let ends = |suffix: &str| h == suffix || h.ends_with(&format!(".{suffix}"));
    if h.starts_with("/cloudsql/") {
        // The Cloud SQL Auth Proxy's Unix sockets (App Engine, Cloud Run, Cloud Functions).
        return Some(Provider::CloudSql);
    }
    if h.starts_with('/') {
        return None;
    }
    let p = if ends("supabase.co") || ends("supabase.com") {
        Provider::Supabase
    } else if ends("rds.amazonaws.com") || (h.contains(".rds.") && ends("amazonaws.com.cn")) {
        Provider::Rds
    } else if h.contains(".dsql.") && (ends("on.aws") || ends("amazonaws.com")) {
        Provider::AuroraDsql
    } else if (h.starts_with("ec2-") && ends("amazonaws.com")) || ends("herokuapp.com") {
        // Heroku Postgres hands out ec2-…compute-1.amazonaws.com host names.
        Provider::Heroku
    } else if ends("postgres.database.azure.com") {
        Provider::Azure
    } else if ends("neon.tech") || ends("neon.build") || ends("vercel-storage.com") {
        Provider::Neon
    } else if ends("fly.dev") || ends("fly.io") || ends("flycast") || ends("internal") {
        Provider::Fly
    } else if ends("psdb.cloud") || ends("planetscale.com") {
        Provider::PlanetScale
    } else if ends("render.com") || (h.starts_with("dpg-") && !h.contains('.')) {
        Provider::Render
    } else if ends("xata.sh") || ends("xata.tech") || ends("xata.io") {
        Provider::Xata
    } else if ends("cockroachlabs.cloud") {
        Provider::CockroachDb
    } else {
        return None;
    };
    Some(p)
}

/// The provider from what the server shows; `None` when nothing points to one.
pub fn from_server(signals: &ServerSignals) -> Option<Provider> {
    if signals.version.contains("CockroachDB") {
        return Some(Provider::CockroachDb);
    }
    let has_setting = |prefix: &str| signals.settings.keys().any(|k| k.starts_with(prefix));
    let has_role = |role: &str| signals.roles.iter().any(|r| r == role);
    if has_setting("rds.") || has_role("rds_superuser") || has_role("rds_replication") {
        return Some(Provider::Rds);
    }
    if has_setting("alloydb.") || has_role("alloydbsuperuser") {
        return Some(Provider::AlloyDb);
    }
    if has_setting("cloudsql.") || has_role("cloudsqlsuperuser") {
        return Some(Provider::CloudSql);
    }
    if has_setting("azure.") || has_role("azure_pg_admin") || has_role("azuresu") {
        return Some(Provider::Azure);
    }
    if has_setting("neon.") || has_role("neon_superuser") {
        return Some(Provider::Neon);
    }
    if has_setting("supautils.") || has_role("supabase_admin") {
        return Some(Provider::Supabase);
    }
    None
}

/// The provider: the host name first (a custom domain may front anything, but a provider's
/// own domain is certain), then the server's settings and roles, else self-hosted.
pub fn detect(host: &str, signals: &ServerSignals) -> Provider {
    from_host(host)
        .or_else(|| from_server(signals))
        .unwrap_or(Provider::SelfHosted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let cases: &[(&str, Option<Provider>)] = &[
            ("db.abcdefghijklmnop.supabase.co", Some(Provider::Supabase)),
            (
                "aws-0-eu-central-1.pooler.supabase.com",
                Some(Provider::Supabase),
            ),
            (
                "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
                Some(Provider::Rds),
            ),
            (
                "prod.cluster-c9akciq32.eu-west-1.rds.amazonaws.com",
                Some(Provider::Rds),
            ),
            (
                "mydb.abc.rds.cn-north-1.amazonaws.com.cn",
                Some(Provider::Rds),
            ),
            ("abc123.dsql.us-east-1.on.aws", Some(Provider::AuroraDsql)),
            (
                "ec2-3-222-1-1.compute-1.amazonaws.com",
                Some(Provider::Heroku),
            ),
            (
                "myserver.postgres.database.azure.com",
                Some(Provider::Azure),
            ),
            (
                "ep-cool-darkness-123456.us-east-2.aws.neon.tech",
                Some(Provider::Neon),
            ),
            (
                "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech",
                Some(Provider::Neon),
            ),
            ("my-pg.fly.dev", Some(Provider::Fly)),
            ("my-pg.flycast", Some(Provider::Fly)),
            ("my-pg.internal", Some(Provider::Fly)),
            ("top2.nearest.of.my-pg.internal", Some(Provider::Fly)),
            ("us-east-3.pg.psdb.cloud", Some(Provider::PlanetScale)),
            (
                "dpg-abc123-a.oregon-postgres.render.com",
                Some(Provider::Render),
            ),
            ("dpg-abc123-a", Some(Provider::Render)),
            ("us-east-1.sql.xata.sh", Some(Provider::Xata)),
            (
                "free-tier.gcp-us-central1.cockroachlabs.cloud",
                Some(Provider::CockroachDb),
            ),
            (
                "/cloudsql/project:europe-west1:instance",
                Some(Provider::CloudSql),
            ),
            ("/var/run/postgresql", None),
            ("localhost", None),
            ("127.0.0.1", None),
            ("db.example.com", None),
            ("notsupabase.co", None),
            ("DB.ABCDEF.SUPABASE.CO.", Some(Provider::Supabase)),
        ];
        for (host, want) in cases {
            assert_eq!(from_host(host), *want, "{host}");
        }
    }

    fn signals(settings: &[(&str, &str)], roles: &[&str]) -> ServerSignals {
        ServerSignals {
            version: "PostgreSQL 16.3 on x86_64-pc-linux-gnu".to_string(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn server_signals() {
        let cases: &[(ServerSignals, Option<Provider>)] = &[
            (
                signals(&[("rds.logical_replication", "off")], &[]),
                Some(Provider::Rds),
            ),
            (
                signals(&[], &["rds_superuser", "rds_replication"]),
                Some(Provider::Rds),
            ),
            (
                signals(&[("cloudsql.logical_decoding", "off")], &[]),
                Some(Provider::CloudSql),
            ),
            (
                signals(&[], &["cloudsqlsuperuser"]),
                Some(Provider::CloudSql),
            ),
            (
                signals(
                    &[("alloydb.logical_decoding", "off")],
                    &["cloudsqlsuperuser"],
                ),
                Some(Provider::AlloyDb),
            ),
            (
                signals(&[("azure.extensions", "")], &[]),
                Some(Provider::Azure),
            ),
            (signals(&[], &["azure_pg_admin"]), Some(Provider::Azure)),
            (
                signals(&[("neon.timeline_id", "x")], &[]),
                Some(Provider::Neon),
            ),
            (signals(&[], &["neon_superuser"]), Some(Provider::Neon)),
            (signals(&[], &["supabase_admin"]), Some(Provider::Supabase)),
            (signals(&[], &[]), None),
        ];
        for (s, want) in cases {
            assert_eq!(from_server(s), *want, "{s:?}");
        }
        let cockroach = ServerSignals {
            version: "CockroachDB CCL v23.1.11 (x86_64-pc-linux-gnu)".to_string(),
            ..Default::default()
        };
        assert_eq!(from_server(&cockroach), Some(Provider::CockroachDb));
    }

    #[test]
    fn host_wins_then_server_then_self_hosted() {
        let rds = signals(&[("rds.logical_replication", "on")], &["rds_superuser"]);
        assert_eq!(detect("x.supabase.co", &rds), Provider::Supabase);
        assert_eq!(detect("10.0.0.5", &rds), Provider::Rds);
        assert_eq!(detect("10.0.0.5", &signals(&[], &[])), Provider::SelfHosted);
    }

    #[test]
    fn advice() {
        let none = BTreeMap::new();
        let rds = Provider::Rds.enable_logical(&none).unwrap();
        assert!(
            rds.contains("rds.logical_replication = 1") && rds.contains("reboot"),
            "{rds}"
        );
        let mut on = BTreeMap::new();
        on.insert("rds.logical_replication".to_string(), "on".to_string());
        assert!(Provider::Rds
            .enable_logical(&on)
            .unwrap()
            .contains("not been rebooted"));
        assert!(Provider::CloudSql
            .enable_logical(&none)
            .unwrap()
            .contains("cloudsql.logical_decoding"));
        assert!(Provider::Neon
            .enable_logical(&none)
            .unwrap()
            .contains("enable Logical Replication in the Neon console"));
        assert!(Provider::Azure
            .enable_logical(&none)
            .unwrap()
            .contains("wal_level"));
        assert!(Provider::Render
            .enable_logical(&none)
            .unwrap()
            .contains("wal_keep_size"));
        assert!(Provider::SelfHosted.enable_logical(&none).is_none());
        for p in ALL {
            assert_eq!(Provider::parse(p.key()), Ok(*p));
            assert!(
                p.unsupported().is_some()
                    || p.enable_logical(&none).is_some()
                    || *p == Provider::SelfHosted,
                "{p:?}"
            );
        }
        assert_eq!(Provider::parse("AWS"), Ok(Provider::Rds));
        assert!(Provider::parse("oracle").is_err());
        assert!(Provider::Heroku.unsupported().unwrap().contains("cannot"));
        assert!(!Provider::Supabase
            .connection_notes("aws-0-eu-central-1.pooler.supabase.com")
            .is_empty());
        assert!(Provider::Supabase
            .connection_notes("db.x.supabase.co")
            .is_empty());
        assert!(!Provider::Neon
            .connection_notes("ep-x-pooler.us-east-2.aws.neon.tech")
            .is_empty());
    }
}
