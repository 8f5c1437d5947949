//! The HS256 signing secret: a type that never prints itself, and the secret the embedded mode
//! generates into the data directory when no key is configured.
//!
//! The secret is used as bytes of its text form (Supabase's convention), so a generated secret is
//! stored as 64 hex characters: an operator can copy the file's content into
//! `AETHER_GATEWAY_JWT_SECRET` of another gateway or tool and get the same key.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Name of the generated secret's file inside the data directory.
pub const SECRET_FILE: &str = "jwt-secret";

/// What [`Secret`]'s `Debug`, `Display` and `Serialize` print instead of the value.
pub const MASKED: &str = "MASKED";

/// Random bytes in a generated secret (256 bits, the HS256 key size).
const GENERATED_BYTES: usize = 32;

/// A secret string. `Debug`, `Display` and `Serialize` print [`MASKED`]; only
/// [`Secret::expose`] gives the value, so every use of it is greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret's value. Never log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in bytes (for validation messages that must not show the value).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASKED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASKED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Serializes as [`MASKED`]: serialization is only used to show the effective configuration.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASKED)
    }
}

/// Why the data directory's secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is empty; delete it to generate a new secret")]
    Empty { path: PathBuf },
}

/// Reads `<data_dir>/jwt-secret`, or creates it (mode 0600) with 32 random bytes in hex.
///
/// Creation is atomic: the secret is written to a private temporary file and hard-linked into
/// place, which fails if the file appeared meanwhile, so two gateways (or `serve` and `token`)
/// starting at once agree on one secret and never read a half-written file.
pub fn load_or_generate(data_dir: &Path) -> Result<Secret, SecretFileError> {
    let path = data_dir.join(SECRET_FILE);
    match read_secret(&path) {
        Ok(secret) => return Ok(secret),
        Err(SecretFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir).map_err(|source| SecretFileError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;

    let mut bytes = [0u8; GENERATED_BYTES];
    rand::fill(&mut bytes);
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();

    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}.tmp", std::process::id()));
    let write_err = |source| SecretFileError::Write {
        path: tmp.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    // `mode` only applies when the file is created; a stale temporary of a crashed run of this
    // same pid keeps its mode, so set it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_err)?;
    file.write_all(value.as_bytes()).map_err(write_err)?;
    file.write_all(b"\n").map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    drop(file);

    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a JWT secret");
            Ok(Secret(value))
        }
        // Someone else won the race: theirs is complete (it was linked after being written).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_secret(&path),
        Err(source) => Err(SecretFileError::Write { path, source }),
    }
}

fn read_secret(path: &Path) -> Result<Secret, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_mask_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(format!("{s}"), "MASKED");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"MASKED\"");
        assert_eq!(s.expose(), "hunter2-very-secret");
        let back: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back.expose(), "abc");
    }

    #[test]
    fn generated_secret_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested/data");
        let first = load_or_generate(&data_dir).unwrap();
        assert_eq!(first.len(), 2 * GENERATED_BYTES);
        assert!(first.expose().bytes().all(|b| b.is_ascii_hexdigit()));

        let path = data_dir.join(SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "secret file mode is {mode:o}");

        let second = load_or_generate(&data_dir).unwrap();
        assert_eq!(first, second, "the existing secret is reused");

        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&data_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);
    }

    #[test]
    fn an_existing_secret_file_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "operator-chosen-secret\n").unwrap();
        let s = load_or_generate(dir.path()).unwrap();
        assert_eq!(s.expose(), "operator-chosen-secret");
    }

    #[test]
    fn an_empty_secret_file_is_an_error_not_a_weak_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SECRET_FILE), "\n").unwrap();
        let err = load_or_generate(dir.path()).unwrap_err();
        assert!(matches!(err, SecretFileError::Empty { .. }), "{err}");
    }
}
