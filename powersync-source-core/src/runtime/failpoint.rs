//! Fault injection for tests of the runtime's failure paths, through the environment so a
//! test can reach a stream inside a binary (`tail`, `mirror`) without a special build.
//!
//! `POWERSYNC_FAILPOINTS=stream_panic_after_rows=N` makes every stream task panic after
//! emitting `N` rows (the panic must reach the host as an `Internal` error). Unset in
//! production; reading it costs one lookup per stream start.

const VAR: &str = "POWERSYNC_FAILPOINTS";

/// `Some(n)` when streams should panic after `n` rows.
pub(super) fn panic_after_rows() -> Option<u64> {
    let spec = std::env::var(VAR).ok()?;
    spec.split(',').find_map(|item| {
        let (name, value) = item.split_once('=')?;
        (name.trim() == "stream_panic_after_rows")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}
