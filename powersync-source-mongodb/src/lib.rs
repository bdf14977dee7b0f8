//! MongoDB change streams connector for powersync-source.
//!
//! **Not implemented yet** (tracked by issue 6). The crate exists so the workspace layout is
//! final and hosts can already depend on the name; it exports nothing but the core re-export.
//! The position encoding this connector will use already lives in
//! [`powersync_source_core::position`].

pub use powersync_source_core as core;
