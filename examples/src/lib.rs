//! Shared code of the example binaries `tail`, `mirror` and `demo`.
//!
//! - [`source_url`]: picks a connector by the URL's scheme;
//! - [`json_lines`]: `tail`'s output format;
//! - [`checkpoint_file`]: `tail --checkpoint-file`, replaced atomically;
//! - [`sqlite_mirror`]: applies a change stream to a SQLite file;
//! - [`progress`]: progress lines on stderr;
//! - [`cli`]: command-line options, logging, errors and exit statuses.

pub mod checkpoint_file;
pub mod cli;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod json_lines;
pub mod progress;
pub mod source_url;
pub mod sqlite_mirror;
