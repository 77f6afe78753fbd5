//! Small files beside the databases, written so that a crash leaves the old or the new content.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a file via a temporary file in the same directory, fsync and rename (then fsyncs
/// the directory), so a crash leaves the old or the new content, never half of it. `mode` is
/// the new file's permission bits.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Makes sure the SQLite database at `path` and its `-wal`/`-shm` companions are private to
/// the service user (mode 0600), whatever the umask: the database file is created 0600 before
/// SQLite opens it (SQLite gives the companions the database file's mode), and files that
/// exist already (made by an earlier version or by hand) are tightened.
pub fn create_private_db(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        // `create_new` would race a concurrent creator; `create` keeps whatever is there.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
    }
    restrict_db_files(path)
}

/// Sets mode 0600 on the database at `path` and on its `-wal`, `-shm` and `-journal` files
/// where they exist.
pub fn restrict_db_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("db");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let f = path.with_file_name(format!("{name}{suffix}"));
        match std::fs::metadata(&f) {
            Ok(m) if m.permissions().mode() & 0o777 != 0o600 => {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
