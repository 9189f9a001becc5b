//! `tidings admin backup` and `tidings admin restore`: an online backup of a single node (the
//! SQLite database, the local file store and the signing key) taken while the server runs, and
//! its restoration into a fresh data directory.
//!
//! Consistency: the database is copied with `VACUUM INTO`, which reads one snapshot (a WAL read
//! transaction, so the running server's writer is never blocked) and writes a compact copy.
//! Files are copied after that snapshot. The server records a file only after its bytes are
//! stored (an architecture invariant), so every file the copied database knows had its bytes on
//! disk before the snapshot, and content-addressed bytes never change. A file deleted between the
//! snapshot and the copy of its bytes is the one gap; the backup counts such files and says so.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{Config, StoreKind};

/// The database file inside the data directory and inside a backup.
const DB_FILE: &str = "tidings.db";
/// The token signing key (its name inside the data directory and the backup).
const KEY_FILE: &str = "token-signing.ed25519";
/// The file store inside a backup.
const FILES_DIR: &str = "files";
/// What the backup holds, written last: a directory without it is an unfinished backup.
const MANIFEST: &str = "backup.json";

/// The manifest of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The Tidings version that wrote the backup.
    pub version: String,
    /// When the database snapshot was taken (ms since the epoch).
    pub created_at_ms: i64,
    /// Bytes of the database copy.
    pub database_bytes: u64,
    /// Files of the file store copied.
    pub files: u64,
    /// Bytes of the file store copied.
    pub file_bytes: u64,
    /// Files that vanished between the listing and their copy (deleted meanwhile).
    pub vanished: u64,
    /// Whether the file store was local (copied) or in a bucket (not part of this backup).
    pub files_included: bool,
}

fn files_dir(config: &Config) -> PathBuf {
    if config.files.dir.as_os_str().is_empty() {
        config.data_dir.join("files")
    } else {
        config.files.dir.clone()
    }
}

fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}

/// Totals of a tree copy.
#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
    vanished: u64,
}

/// Copies the tree `from` into `to`, skipping the object store's temporary files (`#` in the
/// name: a write in progress) and counting files that vanish while it runs.
fn copy_tree(from: &Path, to: &Path, copied: &mut Copied) -> anyhow::Result<()> {
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", from.display())),
    };
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().contains('#') {
            continue;
        }
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(_) => continue,
        };
        let (src, dst) = (entry.path(), to.join(&name));
        if kind.is_dir() {
            copy_tree(&src, &dst, copied)?;
        } else if kind.is_file() {
            match fs::copy(&src, &dst) {
                Ok(n) => {
                    copied.files += 1;
                    copied.bytes += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => copied.vanished += 1,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot copy {}", src.display()));
                }
            }
        }
    }
    Ok(())
}

fn fsync_file(path: &Path) -> anyhow::Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Takes a backup of the running (or stopped) single node described by `config` into `dir`,
/// which must be empty or not exist yet.
pub fn backup(config: &Config, dir: &Path) -> anyhow::Result<Manifest> {
    if config.store.kind != StoreKind::Sqlite {
        bail!(
            "`admin backup` copies the embedded SQLite database; with store.kind = \"postgres\" \
             back up PostgreSQL with its own tools (pg_dump) and the file store separately"
        );
    }
    let db = config.data_dir.join(DB_FILE);
    if !db.is_file() {
        bail!("no database at {}", db.display());
    }
    if !is_empty_dir(dir)? {
        bail!(
            "{} is not empty; back up into a new directory",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_mode(dir, 0o700)?;

    // The snapshot. A read-only connection: the backup never writes to the live database.
    let created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let target = dir.join(DB_FILE);
    {
        let conn = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open {}", db.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let target_str = target
            .to_str()
            .context("the backup directory's path is not valid UTF-8")?;
        conn.execute("VACUUM INTO ?1", [target_str])
            .context("cannot copy the database (VACUUM INTO)")?;
    }
    set_mode(&target, 0o600)?;
    fsync_file(&target)?;
    let database_bytes = fs::metadata(&target)?.len();

    let key = config.data_dir.join(KEY_FILE);
    if key.is_file() {
        let key_copy = dir.join(KEY_FILE);
        fs::copy(&key, &key_copy).context("cannot copy the signing key")?;
        set_mode(&key_copy, 0o600)?;
        fsync_file(&key_copy)?;
    }

    let files_included = config.files.s3_bucket.is_empty();
    let mut copied = Copied::default();
    if files_included {
        copy_tree(&files_dir(config), &dir.join(FILES_DIR), &mut copied)?;
    }

    let manifest = Manifest {
        version: env!("CARGO_PKG_VERSION").into(),
        created_at_ms,
        database_bytes,
        files: copied.files,
        file_bytes: copied.bytes,
        vanished: copied.vanished,
        files_included,
    };
    let path = dir.join(MANIFEST);
    fs::write(&path, serde_json::to_vec_pretty(&manifest)?)?;
    fsync_file(&path)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(manifest)
}

/// Restores the backup in `dir` into the data directory of `config`, which must be empty or not
/// exist yet (a restore never overwrites a deployment).
pub fn restore(config: &Config, dir: &Path) -> anyhow::Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(&fs::read(dir.join(MANIFEST)).with_context(|| {
            format!("{} has no {MANIFEST}: not a finished backup", dir.display())
        })?)
        .with_context(|| format!("{MANIFEST} in {} is not valid", dir.display()))?;
    let data = &config.data_dir;
    if !is_empty_dir(data)? {
        bail!(
            "the data directory {} is not empty; restore into a fresh one",
            data.display()
        );
    }
    let files_target = files_dir(config);
    if manifest.files_included && !is_empty_dir(&files_target)? {
        bail!(
            "the file store {} is not empty; restore into a fresh one",
            files_target.display()
        );
    }
    crate::app::prepare_data_dir(data)?;
    let db = data.join(DB_FILE);
    fs::copy(dir.join(DB_FILE), &db).context("cannot copy the database")?;
    set_mode(&db, 0o600)?;
    fsync_file(&db)?;
    let key = dir.join(KEY_FILE);
    if key.is_file() {
        fs::copy(&key, data.join(KEY_FILE)).context("cannot copy the signing key")?;
        set_mode(&data.join(KEY_FILE), 0o600)?;
        fsync_file(&data.join(KEY_FILE))?;
    }
    if manifest.files_included {
        let mut copied = Copied::default();
        copy_tree(&dir.join(FILES_DIR), &files_target, &mut copied)?;
    }
    fs::File::open(data).and_then(|d| d.sync_all()).ok();
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_skip_temporary_files_and_refuse_full_targets() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sha256/ab")).unwrap();
        fs::write(src.join("sha256/ab/abcd"), b"bytes").unwrap();
        fs::write(src.join("sha256/ab/abcd#1"), b"half").unwrap();
        let mut copied = Copied::default();
        copy_tree(&src, &tmp.path().join("dst"), &mut copied).unwrap();
        assert_eq!((copied.files, copied.bytes), (1, 5));
        assert!(!tmp.path().join("dst/sha256/ab/abcd#1").exists());
        assert!(!is_empty_dir(&tmp.path().join("dst")).unwrap());
        assert!(is_empty_dir(&tmp.path().join("nothing")).unwrap());
    }
}
