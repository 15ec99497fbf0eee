//! Files that readers see whole or not at all: written to a fresh temporary file in the
//! same directory, synced, renamed over the old one, and the directory synced. Used for the
//! state file and the runtime directory's files.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Write `bytes` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. Readers see the old file or the new one, never a mix.
///
/// The temp file is created exclusively (`O_CREAT|O_EXCL`, which never follows a symlink
/// at that name, plus `O_NOFOLLOW`) under a name nobody can predict, so a link planted
/// in the directory cannot redirect the write anywhere else.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let (tmp, mut f) = create_temp(&dir, name)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new file `.<name>.tmp-<random>` in `dir`, created exclusively.
pub(crate) fn create_temp(
    dir: &Path,
    name: &std::ffi::OsStr,
) -> io::Result<(PathBuf, std::fs::File)> {
    for _ in 0..16 {
        let mut r = [0u8; 8];
        if rustix::rand::getrandom(&mut r, rustix::rand::GetRandomFlags::empty())? != r.len() {
            return Err(io::Error::other(
                "getrandom returned fewer bytes than asked",
            ));
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{:016x}", u64::from_ne_bytes(r)));
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a fresh temporary file next to the file to write",
    ))
}
