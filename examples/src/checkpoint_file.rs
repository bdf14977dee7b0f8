//! `tail --checkpoint-file`: where to resume, stored in a file replaced atomically.
//!
//! The file holds one line: a checkpoint (`postgres:v1:…`) or a snapshot resume token
//! (`snapshot:v1:{…}`), as [`StartFrom::parse`](powersync_source_core::StartFrom::parse) reads
//! it. It is replaced by writing a temporary file in the same directory, syncing it, renaming
//! it over the old one and syncing the directory: after a crash the file holds either the old
//! or the new position, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use powersync_source_core::{SourceError, StartFrom};

/// Reads the stored position: `None` when the file is missing or empty.
pub fn read(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where to start given the file's content (missing or empty: from the beginning).
pub fn start_from(stored: Option<&str>) -> Result<StartFrom, SourceError> {
    match stored {
        None => Ok(StartFrom::Beginning),
        Some(s) => StartFrom::parse(s),
    }
}

/// Replaces the file's content atomically and durably.
pub fn write_atomic(path: &Path, content: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "checkpoint file has no name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp");
        assert_eq!(read(&p).unwrap(), None);
        write_atomic(&p, "postgres:v1:00000000/0000002A").unwrap();
        assert_eq!(
            read(&p).unwrap().as_deref(),
            Some("postgres:v1:00000000/0000002A")
        );
        write_atomic(&p, "postgres:v1:00000000/0000002B").unwrap();
        assert_eq!(
            read(&p).unwrap().as_deref(),
            Some("postgres:v1:00000000/0000002B")
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(&p, "  \n").unwrap();
        assert_eq!(read(&p).unwrap(), None);
        assert_eq!(start_from(None).unwrap(), StartFrom::Beginning);
        assert!(start_from(Some("garbage")).is_err());
    }
}
