//! Owner-only permissions for what the data dir holds (API.md "Operating contract"):
//! the directory 0700, the SQLite database and its `-wal` and `-shm` companions 0600,
//! whatever the process umask. They hold secret-key hashes and the token ledger.
//!
//! Permissions are set explicitly after creating, because a mode given at creation is
//! masked by the umask. SQLite creates `-wal` and `-shm` itself, later, copying the
//! database file's mode; they are chmod-ed again once the pool has opened them, so a
//! file left wider by an older version is narrowed too.

use std::path::{Path, PathBuf};

/// Creates `dir` (and its parents) and makes it owner-only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// The database file and the two files SQLite keeps beside it in WAL mode.
pub fn sqlite_files(database: &Path) -> [PathBuf; 3] {
    let with_suffix = |suffix: &str| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [
        database.to_owned(),
        with_suffix("-wal"),
        with_suffix("-shm"),
    ]
}

/// Creates the database file owner-only if it does not exist yet, so SQLite never
/// creates it under the umask, and narrows whichever of its files already exist.
///
/// An existing database is never opened here: closing any descriptor of a file drops
/// every POSIX lock this process holds on it, SQLite's included (another connection of
/// this process, or of a second store on the same file, would lose its WAL read lock and
/// see a stale snapshot). `create_new` opens only a file that nobody can be using yet.
pub fn prepare_sqlite(database: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(database) {
        Ok(file) => drop(file),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    narrow_sqlite(database)
}

/// Sets 0600 on the database and on its `-wal` and `-shm` files where they exist.
pub fn narrow_sqlite(database: &Path) -> std::io::Result<()> {
    for path in sqlite_files(database) {
        match set_mode(&path, 0o600) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
