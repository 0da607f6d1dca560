//! A tiny file system for disk-full tests: a `tmpfs` of a few MiB mounted on
//! a fresh temp dir, unmounted (lazily, so that an open file cannot keep it)
//! and removed when dropped. Mounting needs root (CI and the development
//! machine run as root); where it is not permitted, [`TinyFs::mount`] returns
//! `Ok(None)` and the test skips with a message saying why.
//!
//! ```no_run
//! let Some(fs) = tributary_tests::TinyFs::mount("2m")? else { return Ok(()) };
//! let buffer_dir = fs.path().join("buffer");
//! # Ok::<(), tributary_tests::HarnessError>(())
//! ```

use crate::error::{HarnessError, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted `tmpfs`, unmounted on drop.
#[derive(Debug)]
pub struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    /// Mounts a `tmpfs` of `size` (as `mount -o size=` takes it: `2m`, `4m`)
    /// on a new temp dir. `Ok(None)` (with the reason printed) when mounting
    /// is not permitted here.
    pub fn mount(size: &str) -> Result<Option<TinyFs>> {
        let dir = tempfile::Builder::new()
            .prefix("tributary-tinyfs-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a mount point", "/tmp", e))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| HarnessError::io("running mount", dir.path(), e))?;
        if !out.status.success() {
            eprintln!(
                "SKIP: cannot mount a {size} tmpfs on {} (needs root): {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return Ok(None);
        }
        Ok(Some(TinyFs { dir }))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free for unprivileged writes, as `df` tells.
    pub fn free_bytes(&self) -> Result<u64> {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .map_err(|e| HarnessError::io("running df", self.path(), e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                HarnessError::io(
                    "reading df's output",
                    self.path(),
                    std::io::Error::other(text.into_owned()),
                )
            })
    }

    /// Writes a file `name` of zeros until the file system is full (the
    /// `ENOSPC` that ends it is expected); returns its path and size.
    pub fn fill(&self, name: &str) -> Result<(PathBuf, u64)> {
        let path = self.path().join(name);
        let mut f =
            File::create(&path).map_err(|e| HarnessError::io("creating a filler", &path, e))?;
        let chunk = [0u8; 4096];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(HarnessError::io("filling the file system", &path, e)),
            }
        }
        let _ = f.sync_all();
        Ok((path, written))
    }
}

impl TinyFs {
    /// Writes a file `name` of zeros so that about `leave` bytes stay free
    /// (other files on a small SD card); returns its path.
    pub fn fill_leaving(&self, name: &str, leave: u64) -> Result<PathBuf> {
        let path = self.path().join(name);
        let size = self.free_bytes()?.saturating_sub(leave);
        let mut f =
            File::create(&path).map_err(|e| HarnessError::io("creating a filler", &path, e))?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])
                .map_err(|e| HarnessError::io("writing a filler", &path, e))?;
            left -= n as u64;
        }
        Ok(path)
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
