//! `check()`: everything replication needs from a deployment, each problem with its fix.

use powersync_source_core::{CheckReport, ErrorKind, SourceError, TableName};

use crate::api::Api;
use crate::catalog::{TypeMap, CHECKPOINT_TABLE, SCHEMA};
use crate::config::{ConvexConfig, ValueEncoding};
use crate::decode::Encoding;
use crate::discovery::{discover, JSON_SCHEMAS_HINT};
use crate::marker::{create_marker, CHECKPOINTS_TS, CHECKPOINT_MUTATION, SCHEMA_TS};

/// The check problem of a deploy key that may read but not write (write checkpoints off).
pub(crate) const CHECKPOINTS_OFF: &str = "write checkpoints";

/// Checks the deployment. Fails (instead of reporting) when the check cannot run: the
/// deployment does not answer, or rejects the deploy key.
pub(crate) async fn check(
    api: &Api,
    config: &ConvexConfig,
    tables: &[TableName],
) -> Result<(CheckReport, Option<TypeMap>, Option<Encoding>), SourceError> {
    let mut report = CheckReport {
        server_version: Some(format!("Convex deployment {}", api.base())),
        problems: Vec::new(),
    };
    let discovery = match discover(api).await {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::Prerequisite => {
            report.error(
                "streaming export",
                e.to_string(),
                e.hint()
                    .unwrap_or("enable streaming export for this deployment")
                    .to_string(),
            );
            return Ok((report, None, None));
        }
        Err(e) => return Err(e),
    };
    if let Some(e) = &discovery.schemas_refused {
        report.warning(
            "json_schemas",
            format!("field types are unknown: {e}"),
            JSON_SCHEMAS_HINT,
        );
    }
    let schemas = discovery.types;
    for t in tables {
        if t.schema != SCHEMA {
            report.error(
                format!("table {t}"),
                format!("schema `{}` is not supported: only the default component is, as schema `{SCHEMA}`", t.schema),
                format!("select the table as {SCHEMA}.{}", t.name),
            );
        } else if !schemas.contains_key(&t.name) {
            report.error(
                format!("table {t}"),
                format!("table {} does not exist on {}", t.name, api.base()),
                "define it in convex/schema.ts (or insert a document) and deploy, or remove it from the selection",
            );
        }
    }
    // Write checkpoints are optional: replication needs only reads, which a read-only key
    // allows. The check runs the mutation once (one marker row) to tell whether they work.
    match create_marker(api).await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::Connection => return Err(e),
        Err(e) if e.kind() == ErrorKind::Auth => report.warning(
            CHECKPOINTS_OFF,
            format!("write checkpoints are off: the deploy key reads the deployment but may not run {CHECKPOINT_MUTATION} ({e})"),
            "replication works with this key; for write checkpoints use a deploy key that is not read-only",
        ),
        Err(e) if !schemas.contains_key(CHECKPOINT_TABLE) => report.warning(
            CHECKPOINT_TABLE,
            format!("write checkpoints are off: the table {CHECKPOINT_TABLE} does not exist and {CHECKPOINT_MUTATION} is not usable ({e})"),
            format!("add it to convex/schema.ts:\n{SCHEMA_TS}\nand add convex/powersync_checkpoints.ts:\n{CHECKPOINTS_TS}\nthen deploy (npx convex deploy); a deployment prepared for PowerSync already has both"),
        ),
        Err(e) => report.warning(
            CHECKPOINT_MUTATION,
            format!("write checkpoints are off: the mutation {CHECKPOINT_MUTATION} is not usable ({e})"),
            format!("add convex/powersync_checkpoints.ts and deploy (npx convex deploy):\n{CHECKPOINTS_TS}\n(PowerSync's own createCheckpoint works too)"),
        ),
    }
    let (encoding, refused) = negotiate_encoding(api, config).await?;
    if refused {
        report.warning(
            "format",
            "the deployment does not accept format=convex_encoded_json; values are read as format=json and typed through /api/json_schemas (an Int64 or Bytes field json_schemas does not describe arrives as text)",
            "upgrade the Convex backend, or pin encoding=json to silence this",
        );
    }
    if let Some(v) = report.server_version.as_mut() {
        v.push_str(&format!(
            ", streaming export with format={}",
            encoding.format_param()
        ));
    }
    Ok((report, Some(schemas), Some(encoding)))
}

/// The encoding a stream will use, and whether the typed one was refused (`encoding=auto`
/// only): an empty `document_deltas` page of the marker table from the current timestamp
/// asks for the typed encoding. Not `list_snapshot`: any call to it evicts the server's one
/// cached snapshot iterator, which a running snapshot (of this or another stream) needs.
pub(crate) async fn negotiate_encoding(
    api: &Api,
    config: &ConvexConfig,
) -> Result<(Encoding, bool), SourceError> {
    match config.encoding() {
        ValueEncoding::Json => Ok((Encoding::Json, false)),
        ValueEncoding::Typed => Ok((Encoding::Typed, false)),
        ValueEncoding::Auto => {
            let now = api.retrying(|| api.query_ts()).await?;
            let probe = api
                .retrying(|| {
                    api.document_deltas(now, Some(CHECKPOINT_TABLE), Encoding::Typed, None)
                })
                .await;
            match probe {
                Ok(_) => Ok((Encoding::Typed, false)),
                Err(e) if e.kind() == ErrorKind::Unsupported => Ok((Encoding::Json, true)),
                Err(e) => Err(e),
            }
        }
    }
}
