//! Which source a URL names and how `--table` names read, for `setup`: the rules of
//! [`powersync_source::open`], re-exported so that every binary follows the same ones.

pub use powersync_source::{source_kind, table_names, SourceKind};
