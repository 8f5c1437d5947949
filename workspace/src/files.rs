//! The `files` channel: request/response file operations rooted at the volume, and pushed watch
//! events.
//!
//! Every path is taken relative to the volume (a leading `/` means the volume's root). A path is
//! resolved in two steps: lexically (`.` dropped, `..` allowed only while it stays inside), then
//! against the file system: the deepest existing ancestor (or, for operations that follow links,
//! the path itself) is canonicalized and must still lie inside the volume, so a symlink that points
//! outside is refused. `delete` and `rename` act on a link itself, so only its parent must resolve
//! inside. (A path swapped for a symlink between the check and the operation is not defended
//! against; the volume's owner is the workspace's only user.)
//!
//! File content is UTF-8 when it is valid UTF-8, base64 otherwise; files over 100 MB are refused.
//! Operations run on the blocking pool.
//!
//! Watching: one `notify` watcher for the service, with a non-recursive watch per directory so
//! that ignored trees (`node_modules`, `.git`, …) cost no inotify watches; directories created (or
//! moved in) later are added as they appear. Events go to every socket as `change {path, action}`.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use protocol::ServerMessage;
use protocol::files::{
    ChangeAction, DirEntry, Encoding, EntryKind, FileContent, FilesClient, FilesServer,
    MAX_FILE_SIZE, WATCH_IGNORED,
};
use tokio_util::sync::CancellationToken;

use crate::outbox::{Fanout, Outbox, SocketId, encode};

/// Why a file operation failed; the text goes in the reply's `error`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilesError {
    #[error("path {0:?} escapes the workspace")]
    Escapes(String),
    #[error("path {0:?} is not valid")]
    Invalid(String),
    #[error("no such file or directory: {0:?}")]
    NotFound(String),
    #[error("{0:?} is a directory")]
    IsDirectory(String),
    #[error("{0:?} is not a directory")]
    NotDirectory(String),
    #[error("{path:?} is larger than the 100 MB limit ({size} bytes)")]
    TooLarge { path: String, size: u64 },
    #[error("content is not valid base64: {0}")]
    Base64(String),
    #[error("the workspace root cannot be deleted or renamed")]
    Root,
    #[error("{path:?}: {err}")]
    Io { path: String, err: io::Error },
}

impl FilesError {
    fn io(path: &str, err: io::Error) -> FilesError {
        match err.kind() {
            io::ErrorKind::NotFound => FilesError::NotFound(path.to_owned()),
            _ => FilesError::Io {
                path: path.to_owned(),
                err,
            },
        }
    }
}

/// The volume, and the sockets following its changes.
pub(crate) struct Files {
    root: PathBuf,
    watchers: Mutex<Fanout>,
}

impl Files {
    /// `root` must exist; it is canonicalized.
    pub(crate) fn new(root: &Path) -> io::Result<Arc<Files>> {
        Ok(Arc::new(Files {
            root: root.canonicalize()?,
            watchers: Mutex::new(Fanout::default()),
        }))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn subscribe(&self, outbox: &Outbox) {
        self.watchers
            .lock()
            .expect("files fan-out poisoned")
            .insert(outbox.clone());
    }

    pub(crate) fn unsubscribe(&self, socket: SocketId) {
        self.watchers
            .lock()
            .expect("files fan-out poisoned")
            .remove(socket);
    }

    /// Runs one request on the blocking pool; returns the reply.
    pub(crate) async fn handle(self: &Arc<Self>, msg: FilesClient) -> ServerMessage {
        let this = self.clone();
        let request_id = msg.request_id().to_owned();
        let kind = Kind::of(&msg);
        match tokio::task::spawn_blocking(move || this.execute(msg)).await {
            Ok(reply) => reply,
            Err(e) => kind.reply(request_id, Err(format!("internal error: {e}"))),
        }
    }

    fn execute(&self, msg: FilesClient) -> ServerMessage {
        let kind = Kind::of(&msg);
        let request_id = msg.request_id().to_owned();
        let result = match msg {
            FilesClient::List { path, .. } => self.list(&path).map(Done::List),
            FilesClient::Read { path, .. } => self.read(&path).map(Done::Read),
            FilesClient::Write {
                path,
                content,
                encoding,
                ..
            } => self.write(&path, content, encoding).map(|()| Done::Empty),
            FilesClient::Delete { path, .. } => self.delete(&path).map(|()| Done::Empty),
            FilesClient::Mkdir { path, .. } => self.mkdir(&path).map(|()| Done::Empty),
            FilesClient::Rename { path, new_path, .. } => {
                self.rename(&path, &new_path).map(|()| Done::Empty)
            }
        };
        kind.reply(request_id, result.map_err(|e| e.to_string()))
    }

    /// Resolves a client path to a path inside the volume (see the module docs). With
    /// `follow_last`, a final symlink must point inside too.
    pub(crate) fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf, FilesError> {
        if path.contains('\0') {
            return Err(FilesError::Invalid(path.to_owned()));
        }
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for comp in Path::new(path).components() {
            match comp {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(FilesError::Escapes(path.to_owned()));
                    }
                }
                Component::Normal(p) => parts.push(p),
            }
        }
        let full: PathBuf = parts.iter().fold(self.root.clone(), |p, c| p.join(c));
        // The part that must resolve inside: the path itself, or (not following) its parent.
        let checked = if follow_last || parts.is_empty() {
            full.clone()
        } else {
            full.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut existing = checked.as_path();
        let canonical = loop {
            match existing.canonicalize() {
                Ok(c) => break c,
                Err(_) => match existing.parent() {
                    Some(parent) => existing = parent,
                    None => return Err(FilesError::Escapes(path.to_owned())),
                },
            }
        };
        if !canonical.starts_with(&self.root) {
            return Err(FilesError::Escapes(path.to_owned()));
        }
        // A dangling final symlink: where it points must be inside as well.
        if follow_last && existing == full && full.symlink_metadata().is_ok() {
            return Ok(canonical);
        }
        if follow_last && let Ok(target) = std::fs::read_link(&full) {
            let target = full.parent().unwrap_or(&self.root).join(target);
            if !lexically_inside(&target, &self.root) {
                return Err(FilesError::Escapes(path.to_owned()));
            }
        }
        Ok(full)
    }

    fn list(&self, path: &str) -> Result<Vec<DirEntry>, FilesError> {
        let dir = self.resolve(path, true)?;
        let meta = std::fs::metadata(&dir).map_err(|e| FilesError::io(path, e))?;
        if !meta.is_dir() {
            return Err(FilesError::NotDirectory(path.to_owned()));
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| FilesError::io(path, e))? {
            let entry = entry.map_err(|e| FilesError::io(path, e))?;
            let meta = match std::fs::metadata(entry.path()) {
                Ok(m) => m,
                Err(_) => match entry.metadata() {
                    Ok(m) => m,
                    Err(_) => continue,
                },
            };
            entries.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind: if meta.is_dir() {
                    EntryKind::Directory
                } else {
                    EntryKind::File
                },
                size: if meta.is_dir() { 0 } else { meta.len() },
                modified: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn read(&self, path: &str) -> Result<FileContent, FilesError> {
        let file = self.resolve(path, true)?;
        let meta = std::fs::metadata(&file).map_err(|e| FilesError::io(path, e))?;
        if meta.is_dir() {
            return Err(FilesError::IsDirectory(path.to_owned()));
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(FilesError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
            });
        }
        let bytes = std::fs::read(&file).map_err(|e| FilesError::io(path, e))?;
        Ok(match String::from_utf8(bytes) {
            Ok(content) => FileContent {
                content,
                encoding: Encoding::Utf8,
            },
            Err(err) => FileContent {
                content: BASE64.encode(err.as_bytes()),
                encoding: Encoding::Base64,
            },
        })
    }

    fn write(&self, path: &str, content: String, encoding: Encoding) -> Result<(), FilesError> {
        let file = self.resolve(path, true)?;
        if file == self.root {
            return Err(FilesError::IsDirectory(path.to_owned()));
        }
        let bytes = match encoding {
            Encoding::Utf8 => content.into_bytes(),
            Encoding::Base64 => BASE64
                .decode(content.as_bytes())
                .map_err(|e| FilesError::Base64(e.to_string()))?,
        };
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(FilesError::TooLarge {
                path: path.to_owned(),
                size: bytes.len() as u64,
            });
        }
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FilesError::io(path, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| FilesError::io(path, e))
    }

    fn delete(&self, path: &str) -> Result<(), FilesError> {
        let target = self.resolve(path, false)?;
        if target == self.root {
            return Err(FilesError::Root);
        }
        let meta = std::fs::symlink_metadata(&target).map_err(|e| FilesError::io(path, e))?;
        if meta.is_dir() {
            std::fs::remove_dir_all(&target)
        } else {
            std::fs::remove_file(&target)
        }
        .map_err(|e| FilesError::io(path, e))
    }

    fn mkdir(&self, path: &str) -> Result<(), FilesError> {
        let dir = self.resolve(path, true)?;
        std::fs::create_dir_all(&dir).map_err(|e| FilesError::io(path, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), FilesError> {
        let source = self.resolve(from, false)?;
        let target = self.resolve(to, false)?;
        if source == self.root || target == self.root {
            return Err(FilesError::Root);
        }
        std::fs::symlink_metadata(&source).map_err(|e| FilesError::io(from, e))?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FilesError::io(to, e))?;
        }
        std::fs::rename(&source, &target).map_err(|e| FilesError::io(from, e))
    }

    /// Starts watching the volume; events are fanned out until `shutdown`.
    pub(crate) fn watch(self: &Arc<Self>, shutdown: CancellationToken) -> notify::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })?;
        add_tree(&mut watcher, &self.root);
        let this = self.clone();
        tokio::spawn(async move {
            let mut last: Option<(String, ChangeAction)> = None;
            loop {
                let res: notify::Result<notify::Event> = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    res = rx.recv() => match res {
                        Some(res) => res,
                        None => break,
                    },
                };
                let event = match res {
                    Ok(event) => {
                        tracing::trace!(?event, "watch event");
                        event
                    }
                    Err(e) => {
                        tracing::debug!(%e, "watch error");
                        continue;
                    }
                };
                for (path, action) in this.changes(&event, &mut watcher) {
                    // A write is often several events in a row; one is enough.
                    if last.as_ref() == Some(&(path.clone(), action)) {
                        continue;
                    }
                    last = Some((path.clone(), action));
                    let frame = encode(&ServerMessage::Files(FilesServer::Change { path, action }));
                    this.watchers
                        .lock()
                        .expect("files fan-out poisoned")
                        .send(&frame);
                }
            }
        });
        Ok(())
    }

    /// The changes an event stands for, as volume-relative paths; adds watches for new
    /// directories.
    fn changes(
        &self,
        event: &notify::Event,
        watcher: &mut notify::RecommendedWatcher,
    ) -> Vec<(String, ChangeAction)> {
        let actions: Vec<(usize, ChangeAction)> = match event.kind {
            EventKind::Create(_) => (0..event.paths.len())
                .map(|i| (i, ChangeAction::Create))
                .collect(),
            EventKind::Remove(_) => (0..event.paths.len())
                .map(|i| (i, ChangeAction::Delete))
                .collect(),
            EventKind::Modify(ModifyKind::Name(mode)) => match mode {
                RenameMode::From => vec![(0, ChangeAction::Delete)],
                RenameMode::To => vec![(0, ChangeAction::Create)],
                RenameMode::Both => vec![(0, ChangeAction::Delete), (1, ChangeAction::Create)],
                _ => (0..event.paths.len())
                    .map(|i| {
                        let exists = event.paths[i].symlink_metadata().is_ok();
                        (
                            i,
                            if exists {
                                ChangeAction::Create
                            } else {
                                ChangeAction::Delete
                            },
                        )
                    })
                    .collect(),
            },
            EventKind::Modify(ModifyKind::Metadata(_)) => Vec::new(),
            EventKind::Modify(_) => (0..event.paths.len())
                .map(|i| (i, ChangeAction::Modify))
                .collect(),
            EventKind::Access(_) | EventKind::Any | EventKind::Other => Vec::new(),
        };
        let mut out = Vec::new();
        for (i, action) in actions {
            let Some(abs) = event.paths.get(i) else {
                continue;
            };
            let Ok(rel) = abs.strip_prefix(&self.root) else {
                continue;
            };
            if rel.as_os_str().is_empty() || is_ignored(rel) {
                continue;
            }
            if action == ChangeAction::Create && abs.is_dir() && !abs.is_symlink() {
                add_tree(watcher, abs);
            }
            out.push((rel.to_string_lossy().into_owned(), action));
        }
        out
    }
}

/// Whether any component of a volume-relative path is an ignored directory.
fn is_ignored(rel: &Path) -> bool {
    rel.components().any(|c| match c {
        Component::Normal(name) => WATCH_IGNORED.iter().any(|i| name == *i),
        _ => false,
    })
}

/// Watches `dir` and every directory below it, skipping ignored ones and symlinks.
fn add_tree(watcher: &mut notify::RecommendedWatcher, dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %dir.display(), %e, "cannot watch");
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let name = entry.file_name();
            if is_dir && !WATCH_IGNORED.iter().any(|i| name == *i) {
                stack.push(entry.path());
            }
        }
    }
}

/// Whether `path`, with `.`/`..` applied lexically, stays under `root`.
fn lexically_inside(path: &Path, root: &Path) -> bool {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root)
}

/// The successful result of an operation.
enum Done {
    List(Vec<DirEntry>),
    Read(FileContent),
    Empty,
}

/// Which reply an operation gets.
#[derive(Clone, Copy)]
enum Kind {
    List,
    Read,
    Write,
    Delete,
    Mkdir,
    Rename,
}

impl Kind {
    fn of(msg: &FilesClient) -> Kind {
        match msg {
            FilesClient::List { .. } => Kind::List,
            FilesClient::Read { .. } => Kind::Read,
            FilesClient::Write { .. } => Kind::Write,
            FilesClient::Delete { .. } => Kind::Delete,
            FilesClient::Mkdir { .. } => Kind::Mkdir,
            FilesClient::Rename { .. } => Kind::Rename,
        }
    }

    fn reply(self, request_id: String, result: Result<Done, String>) -> ServerMessage {
        let (done, error) = match result {
            Ok(done) => (Some(done), None),
            Err(e) => (None, Some(e)),
        };
        let msg = match self {
            Kind::List => FilesServer::List {
                request_id,
                data: match done {
                    Some(Done::List(entries)) => Some(entries),
                    _ => None,
                },
                error,
            },
            Kind::Read => FilesServer::Read {
                request_id,
                data: match done {
                    Some(Done::Read(content)) => Some(content),
                    _ => None,
                },
                error,
            },
            Kind::Write => FilesServer::Write { request_id, error },
            Kind::Delete => FilesServer::Delete { request_id, error },
            Kind::Mkdir => FilesServer::Mkdir { request_id, error },
            Kind::Rename => FilesServer::Rename { request_id, error },
        };
        ServerMessage::Files(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_escaping_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let files = Files::new(dir.path()).unwrap();
        let root = files.root().to_path_buf();
        assert_eq!(files.resolve("a/b", true).unwrap(), root.join("a/b"));
        assert_eq!(files.resolve("/a/../b", true).unwrap(), root.join("b"));
        assert_eq!(files.resolve("", true).unwrap(), root);
        assert!(matches!(
            files.resolve("../x", true),
            Err(FilesError::Escapes(_))
        ));
        assert!(matches!(
            files.resolve("a/../../x", true),
            Err(FilesError::Escapes(_))
        ));

        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        assert!(matches!(
            files.resolve("out", true),
            Err(FilesError::Escapes(_))
        ));
        assert!(matches!(
            files.resolve("out/new/file", true),
            Err(FilesError::Escapes(_))
        ));
        // The link itself may be deleted.
        assert_eq!(files.resolve("out", false).unwrap(), root.join("out"));
        assert!(matches!(
            files.resolve("out/x", false),
            Err(FilesError::Escapes(_))
        ));

        std::os::unix::fs::symlink("/nonexistent-aether", root.join("dangling")).unwrap();
        assert!(matches!(
            files.resolve("dangling", true),
            Err(FilesError::Escapes(_))
        ));

        std::fs::create_dir(root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join("in"), root.join("link-in")).unwrap();
        assert!(files.resolve("link-in/f", true).is_ok());
    }

    #[test]
    fn ignored_directories() {
        assert!(is_ignored(Path::new("node_modules/x.js")));
        assert!(is_ignored(Path::new("a/.git/HEAD")));
        assert!(!is_ignored(Path::new("src/build.rs")));
    }
}
