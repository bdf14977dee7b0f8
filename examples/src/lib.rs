//! What the example binaries share (`tail`, `mirror`, `setup`, `publish`, `consume`,
//! `demo`). The library parts they use live in their own crates: `powersync_source` (opening a
//! source by URL) and `powersync_source_sqlite` (the SQLite sink).
//!
//! - [`cli`]: command-line options, logging, errors and exit statuses;
//! - [`json_lines`]: `tail`'s output format (also the payload of `publish`'s messages);
//! - [`checkpoint_file`]: `tail --checkpoint-file`, replaced atomically;
//! - [`progress`]: progress lines and the run summary on stderr;
//! - `jetstream` (feature `jetstream`): `publish` and `consume` through NATS JetStream.

pub mod checkpoint_file;
pub mod cli;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod json_lines;
pub mod progress;
