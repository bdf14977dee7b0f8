//! Which tables the deployment's root component has, and their field types.
//!
//! Table names come from `/api/get_table_column_names`, which answers whatever the tables
//! hold. Field types come from `/api/json_schemas`, which Convex refuses (HTTP 400) for the
//! **whole** deployment as soon as one table anywhere, in any component, has documents whose
//! shape is not a plain object (over 64 top-level fields, or field names that are not
//! identifiers) and no `convex/schema.ts` definition
//! (`crates/local_backend/src/streaming_export.rs`: `NoSchemaForExport`,
//! `NoTableDefinitionForExport`, `UnsupportedSchemaForExport`). Such a refusal is not fatal:
//! the types are then unknown (`Any`), which the typed encoding does not need at all.

use std::collections::BTreeMap;

use powersync_source_core::{ErrorKind, SourceError};

use crate::api::Api;
use crate::catalog::{is_exported_field, parse_json_schemas, TypeMap};
use crate::decode::{Encoding, FieldType};

/// The root component's tables, typed as far as `json_schemas` allows.
pub(crate) struct Discovery {
    /// Every root table, with the field types `json_schemas` gave, or `Any` for each known
    /// column when it refused.
    pub types: TypeMap,
    /// Why `json_schemas` refused the deployment, when it did.
    pub schemas_refused: Option<SourceError>,
}

/// What to do when `json_schemas` refuses the deployment.
pub(crate) const JSON_SCHEMAS_HINT: &str = "Convex's /api/json_schemas refuses the whole deployment when one table (in any component, selected or not) holds documents that are not a plain object shape (more than 64 top-level fields, or field names that are not identifiers) and convex/schema.ts does not define it with one object validator; define that table in convex/schema.ts and deploy. Until then replication still works: with format=convex_encoded_json (encoding=typed, the default when the deployment accepts it) values carry their own types; with format=json, Int64 fields arrive as base-10 text and Bytes as base64 text";

/// Whether an error of `json_schemas` is its refusal of one table's shape (or of a missing
/// schema), rather than a failure of the deployment.
pub(crate) fn is_schema_refusal(e: &SourceError) -> bool {
    e.kind() == ErrorKind::Prerequisite && e.code() == Some("400")
}

/// Reads the tables (retrying transient failures) and their types.
pub(crate) async fn discover(api: &Api) -> Result<Discovery, SourceError> {
    let columns = api.retrying(|| api.table_columns()).await?;
    let (schemas, schemas_refused) = match api.retrying(|| api.json_schemas(Encoding::Json)).await {
        Ok(map) => (Some(parse_json_schemas(&map)), None),
        Err(e) if is_schema_refusal(&e) => (None, Some(e.with_hint(JSON_SCHEMAS_HINT))),
        Err(e) => return Err(e),
    };
    let types = match (columns, schemas) {
        (Some(columns), schemas) => merge(columns, schemas.as_ref()),
        // A backend without get_table_column_names: json_schemas is all there is.
        (None, Some(schemas)) => schemas,
        (None, None) => {
            return Err(schemas_refused.unwrap_or_else(|| {
                SourceError::prerequisite(format!(
                    "{} lists no tables: neither get_table_column_names nor json_schemas answered",
                    api.base()
                ))
            }))
        }
    };
    Ok(Discovery {
        types,
        schemas_refused,
    })
}

/// Every table of `columns`, typed by `schemas` where it describes the table.
fn merge(columns: BTreeMap<String, Vec<String>>, schemas: Option<&TypeMap>) -> TypeMap {
    columns
        .into_iter()
        .map(|(table, cols)| {
            let fields = match schemas.and_then(|s| s.get(&table)) {
                Some(fields) => fields.clone(),
                None => cols
                    .into_iter()
                    .filter(|c| is_exported_field(c))
                    .map(|c| (c, FieldType::Any))
                    .collect(),
            };
            (table, fields)
        })
        .collect()
}
