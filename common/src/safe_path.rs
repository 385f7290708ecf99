//! Safe paths: turning a name a peer asked for into a path that can never leave the shared root.
//!
//! Every protocol that serves files by name hands a peer-chosen string to the file system: Napster's peer
//! `GET` line (`nick "path" offset`; OpenNap `napster.txt` client-to-client transfer, our
//! `protocols/napster.md` §3), Gnutella 0.6 HTTP `GET /get/<index>/<url-encoded name>` (the 0.6 draft's
//! file-download section, our `protocols/gnutella.md` §5, where gtk-gnutella answers
//! `/get/1/../../../../etc/passwd` with `400 Bad Path`) and KaZaA's HTTP requests. Directory traversal
//! through these strings was a classic bug in the clients of the era, so all of them go through this module
//! and nothing else.
//!
//! The rules, applied in this order:
//! 1. **Decode exactly once** ([`percent_decode_once`]): a malformed escape (`%zz`, a trailing `%`) is an
//!    error. If the decoded text still contains an escape (`%252e` → `%2e`), the request was encoded twice,
//!    a trick aimed at servers that decode in two places, and it is refused ([`SafePathError::DoubleEncoded`]).
//!    The one cost: a shared file whose real name contains `%XX` cannot be asked for by percent-encoded
//!    name; it can still be fetched by index or hash.
//! 2. **UTF-8 only**: the decoded bytes must be valid UTF-8. Rust's decoder rejects overlong forms
//!    (`%c0%ae` for `.`, `%c0%af` for `/`) and surrogates, which is how the overlong-UTF-8 trick dies.
//! 3. **Syntax** ([`SafeRelPath::parse`]): no NUL or other control characters, no backslash (a Windows
//!    separator that would let `..\..\` through a `/`-only check), not absolute, no `..` component, at most
//!    [`MAX_PATH_LEN`] bytes and [`MAX_COMPONENT_LEN`] bytes per component. `.` and empty components are
//!    dropped, so `a//./b` names the same file as `a/b`.
//! 4. **File system** ([`SharedRoot::resolve`]): the joined path is canonicalised (every symlink followed)
//!    and must still start with the canonical root. A symlink inside the root that points inside it is
//!    fine; one that points outside is refused ([`SafePathError::OutsideRoot`]).
//!
//! [`SharedRoot::open_file`] closes most of the gap between checking and opening: it opens the canonical
//! path with `O_NOFOLLOW` and then checks, through `/proc/self/fd`, where the opened descriptor really is.

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Longest relative path accepted, in bytes after decoding (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a requested path was refused. Every variant is the requester's fault except [`SafePathError::Io`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafePathError {
    /// Nothing is left once empty and `.` components are dropped.
    #[error("empty path")]
    Empty,
    /// A NUL byte (raw or `%00`): C APIs would cut the name there.
    #[error("path contains a NUL byte")]
    NulByte,
    /// Another ASCII control character (`\r`, `\n`, ...), which would also let a name forge header lines.
    #[error("path contains a control character (0x{0:02x})")]
    ControlChar(u8),
    /// A backslash: a Windows separator, refused so `..\` cannot slip through.
    #[error("path contains a backslash")]
    Backslash,
    /// The path is absolute (starts with `/`).
    #[error("absolute path")]
    Absolute,
    /// A `..` component.
    #[error("path contains a `..` component")]
    ParentDir,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding at byte {at}")]
    BadPercentEncoding {
        /// Byte offset of the bad `%` in the encoded text.
        at: usize,
    },
    /// The text still holds a percent escape after one decoding pass (`%252e`).
    #[error("path is percent-encoded more than once")]
    DoubleEncoded,
    /// The decoded bytes are not valid UTF-8 (includes overlong encodings such as `%c0%ae`).
    #[error("path is not valid UTF-8 (malformed or overlong sequence)")]
    InvalidUtf8,
    /// The whole path is longer than [`MAX_PATH_LEN`].
    #[error("path too long ({len} bytes, max {max})")]
    TooLong {
        /// Length seen.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// One component is longer than [`MAX_COMPONENT_LEN`].
    #[error("path component too long ({len} bytes, max {max})")]
    ComponentTooLong {
        /// Length seen.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// After following symlinks the path lies outside the shared root.
    #[error("path resolves outside the shared root")]
    OutsideRoot,
    /// No such file (or directory) under the shared root.
    #[error("no such file in the shared folder")]
    NotFound,
    /// The path exists but is not a regular file.
    #[error("not a regular file")]
    NotAFile,
    /// The file system failed for another reason (permissions, I/O).
    #[error("I/O error while resolving path: {0}")]
    Io(#[source] io::Error),
}

impl SafePathError {
    /// True when the request was malformed or hostile (HTTP 400/403) rather than merely absent (404) or an
    /// I/O failure on our side (500).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            SafePathError::NotFound | SafePathError::NotAFile | SafePathError::Io(_)
        )
    }

    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => SafePathError::NotFound,
            _ => SafePathError::Io(e),
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True if `s` contains a well-formed percent escape (`%` and two hex digits).
fn contains_escape(s: &[u8]) -> bool {
    s.windows(3)
        .any(|w| w[0] == b'%' && hex_val(w[1]).is_some() && hex_val(w[2]).is_some())
}

/// Decodes `%XX` escapes exactly once and returns the UTF-8 text.
///
/// `+` is left alone: it means a space only in form bodies, not in paths. A `%` not followed by two hex
/// digits is an error ([`SafePathError::BadPercentEncoding`]); so is a result that still contains an escape
/// ([`SafePathError::DoubleEncoded`]) or that is not valid UTF-8 ([`SafePathError::InvalidUtf8`], which
/// covers overlong encodings). The result is not otherwise checked: pass it to [`SafeRelPath::parse`].
pub fn percent_decode_once(encoded: &str) -> Result<String, SafePathError> {
    let bytes = encoded.as_bytes();
    if bytes.len() > MAX_PATH_LEN * 3 {
        return Err(SafePathError::TooLong {
            len: bytes.len(),
            max: MAX_PATH_LEN * 3,
        });
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(h), Some(l)) => out.push(h << 4 | l),
                _ => return Err(SafePathError::BadPercentEncoding { at: i }),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if contains_escape(&out) {
        return Err(SafePathError::DoubleEncoded);
    }
    String::from_utf8(out).map_err(|_| SafePathError::InvalidUtf8)
}

/// A checked, normalised relative path: forward slashes, no `.`/`..`/empty components, no control
/// characters or backslashes, within the length limits. It says nothing about the file system yet; join it
/// to a root with [`SharedRoot::resolve`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafeRelPath(String);

impl SafeRelPath {
    /// Checks a decoded name (see the module doc for the rules).
    pub fn parse(name: &str) -> Result<Self, SafePathError> {
        if name.len() > MAX_PATH_LEN {
            return Err(SafePathError::TooLong {
                len: name.len(),
                max: MAX_PATH_LEN,
            });
        }
        for b in name.bytes() {
            match b {
                0 => return Err(SafePathError::NulByte),
                b'\\' => return Err(SafePathError::Backslash),
                1..=0x1f | 0x7f => return Err(SafePathError::ControlChar(b)),
                _ => {}
            }
        }
        if name.starts_with('/') {
            return Err(SafePathError::Absolute);
        }
        let mut parts = Vec::new();
        for part in name.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(SafePathError::ParentDir),
                p if p.len() > MAX_COMPONENT_LEN => {
                    return Err(SafePathError::ComponentTooLong {
                        len: p.len(),
                        max: MAX_COMPONENT_LEN,
                    })
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(SafePathError::Empty);
        }
        Ok(SafeRelPath(parts.join("/")))
    }

    /// Decodes a percent-encoded name once ([`percent_decode_once`]) and checks it.
    pub fn from_encoded(encoded: &str) -> Result<Self, SafePathError> {
        Self::parse(&percent_decode_once(encoded)?)
    }

    /// Builds the relative path of `path` below `root` (both as found on disk, not canonicalised), as used
    /// when scanning a folder. Fails if `path` is not below `root` or a component is not valid UTF-8.
    pub fn from_fs_relative(root: &Path, path: &Path) -> Result<Self, SafePathError> {
        let rel = path
            .strip_prefix(root)
            .map_err(|_| SafePathError::OutsideRoot)?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(os) => parts.push(os.to_str().ok_or(SafePathError::InvalidUtf8)?),
                Component::CurDir => {}
                Component::ParentDir => return Err(SafePathError::ParentDir),
                Component::RootDir | Component::Prefix(_) => return Err(SafePathError::Absolute),
            }
        }
        Self::parse(&parts.join("/"))
    }

    /// The normalised text, with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component (the file name).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl std::fmt::Display for SafeRelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shared folder's root, canonicalised once, that resolves requested names to paths inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRoot {
    root: PathBuf,
}

impl SharedRoot {
    /// Canonicalises `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, SafePathError> {
        let root = root
            .as_ref()
            .canonicalize()
            .map_err(SafePathError::from_io)?;
        if !root.is_dir() {
            return Err(SafePathError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            )));
        }
        Ok(SharedRoot { root })
    }

    /// The canonical root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Joins `rel` to the root, follows every symlink and checks the result is still inside the root.
    /// Returns the canonical path (which may be a directory; see [`SharedRoot::resolve_file`]).
    pub fn resolve(&self, rel: &SafeRelPath) -> Result<PathBuf, SafePathError> {
        let joined = rel.components().fold(self.root.clone(), |p, c| p.join(c));
        let canon = joined.canonicalize().map_err(SafePathError::from_io)?;
        self.check_inside(canon).inspect_err(|_| {
            // Only a symlink in the shared folder can get here: worth the owner's attention.
            tracing::warn!(path = %rel, "refused: a symlink in the shared folder leads outside it");
        })
    }

    /// Like [`SharedRoot::resolve`], and the result must be a regular file.
    pub fn resolve_file(&self, rel: &SafeRelPath) -> Result<PathBuf, SafePathError> {
        let p = self.resolve(rel)?;
        let md = std::fs::metadata(&p).map_err(SafePathError::from_io)?;
        if md.is_file() {
            Ok(p)
        } else {
            Err(SafePathError::NotAFile)
        }
    }

    /// Checks an already decoded name and resolves it to a regular file.
    pub fn resolve_name(&self, name: &str) -> Result<PathBuf, SafePathError> {
        self.resolve_file(&SafeRelPath::parse(name)?)
    }

    /// Decodes a percent-encoded name once, checks it and resolves it to a regular file.
    pub fn resolve_encoded(&self, encoded: &str) -> Result<PathBuf, SafePathError> {
        self.resolve_file(&SafeRelPath::from_encoded(encoded)?)
    }

    /// Canonicalises any path and checks it lies inside the root (used when scanning: symlinks found in the
    /// folder go through here).
    pub fn contains(&self, path: &Path) -> Result<PathBuf, SafePathError> {
        let canon = path.canonicalize().map_err(SafePathError::from_io)?;
        self.check_inside(canon)
    }

    /// Resolves `rel` to a regular file and opens it for reading.
    ///
    /// The canonical path has no symlinks left, so it is opened with `O_NOFOLLOW`; a symlink swapped in for
    /// the last component after the check makes the open fail. Where `/proc/self/fd` exists the opened
    /// descriptor's real path is checked against the root again, which also catches a directory above it
    /// swapped for a symlink in between.
    pub fn open_file(&self, rel: &SafeRelPath) -> Result<(File, PathBuf), SafePathError> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let path = self.resolve_file(rel)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => SafePathError::OutsideRoot,
                _ => SafePathError::from_io(e),
            })?;
        let fd_link = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(real) = std::fs::read_link(&fd_link) {
            if !real.starts_with(&self.root) {
                return Err(SafePathError::OutsideRoot);
            }
        }
        let md = file.metadata().map_err(SafePathError::Io)?;
        if !md.is_file() {
            return Err(SafePathError::NotAFile);
        }
        Ok((file, path))
    }

    fn check_inside(&self, canon: PathBuf) -> Result<PathBuf, SafePathError> {
        // `starts_with` compares whole components, so `/srv/share2` is not inside `/srv/share`.
        if canon.starts_with(&self.root) {
            Ok(canon)
        } else {
            Err(SafePathError::OutsideRoot)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_plain_and_escapes() {
        assert_eq!(percent_decode_once("a%20b.mp3").unwrap(), "a b.mp3");
        assert_eq!(percent_decode_once("x+y").unwrap(), "x+y");
        assert_eq!(percent_decode_once("%C3%A9t%c3%a9").unwrap(), "été");
        assert_eq!(
            percent_decode_once("100% pure").unwrap_err().to_string(),
            "malformed percent-encoding at byte 3"
        );
    }

    #[test]
    fn parse_normalises() {
        assert_eq!(SafeRelPath::parse("a//./b").unwrap().as_str(), "a/b");
        assert_eq!(SafeRelPath::parse("a/b/").unwrap().as_str(), "a/b");
        assert_eq!(
            SafeRelPath::parse("dir/song.mp3").unwrap().file_name(),
            "song.mp3"
        );
        assert!(matches!(
            SafeRelPath::parse("./."),
            Err(SafePathError::Empty)
        ));
    }

    #[test]
    fn refusal_classes() {
        assert!(SafePathError::ParentDir.is_refusal());
        assert!(!SafePathError::NotFound.is_refusal());
    }
}
