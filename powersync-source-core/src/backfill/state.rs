//! The backfill cursor a checkpoint carries.

use serde::{Deserialize, Serialize};

use crate::schema::TableName;

/// Every requested table not yet completely re-read, in the order they are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackfillState {
    /// The tables, first = being read.
    pub tasks: Vec<BackfillTask>,
}

/// One table of a backfill request and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillTask {
    /// The request id (the signal row's `id`, or the one
    /// [`crate::ChangeStream::request_backfill`] returned).
    pub id: String,
    /// The table.
    pub table: TableName,
    /// The connector's encoding of the last emitted key; `None` before the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Rows emitted so far.
    #[serde(default)]
    pub rows: u64,
}

impl BackfillState {
    /// Whether no table is left to read.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds a table unless the same request already holds it. A table requested again by
    /// another request while being read is read again from the start once its turn comes.
    pub fn push(&mut self, task: BackfillTask) {
        if !self
            .tasks
            .iter()
            .any(|t| t.id == task.id && t.table == task.table)
        {
            self.tasks.push(task);
        }
    }

    /// The compact JSON text carried by checkpoints.
    pub fn encode(&self) -> String {
        // Strings, integers and vectors only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses [`BackfillState::encode`]'s text.
    pub fn decode(s: &str) -> Result<BackfillState, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes() {
        let state = BackfillState {
            tasks: vec![BackfillTask {
                id: "r1".into(),
                table: TableName::new("public", "big"),
                after: Some("[5]".into()),
                rows: 4096,
            }],
        };
        let text = state.encode();
        assert_eq!(
            text,
            r#"[{"id":"r1","table":{"schema":"public","name":"big"},"after":"[5]","rows":4096}]"#
        );
        assert_eq!(BackfillState::decode(&text).unwrap(), state);
        assert!(BackfillState::decode("{").is_err());
    }
}
