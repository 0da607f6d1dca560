//! Small files in the state directory replaced durably: written to a
//! temporary file beside them, fsynced, renamed over them, and their
//! directory fsynced, so a power cut leaves the old file or the new one,
//! never a mix (the fleet configuration copy, the command memory).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A step of [`replace`] failed.
#[derive(Debug)]
pub struct ReplaceFailed {
    /// What was being done ("cannot create", "cannot sync", ...).
    pub op: &'static str,
    /// The file it was done to.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes`, durably (temporary file `<path>.tmp`).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), ReplaceFailed> {
    let fail = |op: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| ReplaceFailed { op, path, source }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = File::create(&tmp).map_err(fail("cannot create", &tmp))?;
    f.write_all(bytes).map_err(fail("cannot write", &tmp))?;
    f.sync_all().map_err(fail("cannot sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(fail("cannot rename over", path))?;
    sync_dir(path).map_err(fail("cannot sync the directory of", path))
}

/// Fsyncs the directory holding `path` (after a rename or removal there).
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}
