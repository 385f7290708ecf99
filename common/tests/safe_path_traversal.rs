//! Traversal attempts against `common::safe_path`: each trick of the era gets refused with its own error,
//! and legitimate names (unicode, nested, symlinks that stay inside) still resolve.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::safe_path::{
    percent_decode_once, SafePathError, SafeRelPath, SharedRoot, MAX_COMPONENT_LEN, MAX_PATH_LEN,
};
use proptest::prelude::*;

/// `<tmp>/share` with a few files, and `<tmp>/outside/secret` next to it.
struct Fixture {
    _dir: tempfile::TempDir,
    share: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let outside = dir.path().join("outside");
    fs::create_dir_all(share.join("music/rock")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(share.join("music/rock/song.mp3"), b"song").unwrap();
    fs::write(share.join("top.txt"), b"top").unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    Fixture {
        share,
        outside,
        _dir: dir,
    }
}

fn root(f: &Fixture) -> SharedRoot {
    SharedRoot::new(&f.share).unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap()
}

#[test]
fn plain_names_resolve_inside_root() {
    let f = fixture();
    let r = root(&f);
    let p = r.resolve_name("music/rock/song.mp3").unwrap();
    assert!(p.starts_with(r.path()));
    assert_eq!(read(&p), b"song");
    // Redundant separators and `.` are harmless and normalised.
    assert_eq!(r.resolve_name("music//./rock/song.mp3").unwrap(), p);
    assert_eq!(r.resolve_encoded("music%2Frock%2Fsong.mp3").unwrap(), p);
}

#[test]
fn dot_dot_is_refused() {
    let f = fixture();
    let r = root(&f);
    for name in [
        "..",
        "../outside/secret",
        "music/../../outside/secret",
        "music/..",
        "music/rock/../../top.txt",
    ] {
        assert!(
            matches!(r.resolve_name(name), Err(SafePathError::ParentDir)),
            "{name}"
        );
    }
}

#[test]
fn absolute_paths_are_refused() {
    let f = fixture();
    let r = root(&f);
    let abs = f.outside.join("secret");
    assert!(matches!(
        r.resolve_name(abs.to_str().unwrap()),
        Err(SafePathError::Absolute)
    ));
    assert!(matches!(
        r.resolve_name("/etc/passwd"),
        Err(SafePathError::Absolute)
    ));
    assert!(matches!(
        r.resolve_encoded("%2Fetc%2Fpasswd"),
        Err(SafePathError::Absolute)
    ));
}

#[test]
fn nul_bytes_are_refused() {
    let f = fixture();
    let r = root(&f);
    assert!(matches!(
        r.resolve_name("top.txt\0.mp3"),
        Err(SafePathError::NulByte)
    ));
    assert!(matches!(
        r.resolve_encoded("top.txt%00.mp3"),
        Err(SafePathError::NulByte)
    ));
}

#[test]
fn control_characters_are_refused() {
    let f = fixture();
    let r = root(&f);
    assert!(matches!(
        r.resolve_encoded("top.txt%0d%0aX-Evil:%201"),
        Err(SafePathError::ControlChar(b'\r'))
    ));
    assert!(matches!(
        r.resolve_name("a\x7fb"),
        Err(SafePathError::ControlChar(0x7f))
    ));
}

#[test]
fn percent_encoded_dot_dot_is_refused_after_one_decode() {
    let f = fixture();
    let r = root(&f);
    for enc in [
        "%2e%2e%2foutside%2fsecret",
        "%2E%2E/outside/secret",
        "..%2foutside%2fsecret",
        "music%2f%2e%2e%2f%2e%2e%2foutside%2fsecret",
    ] {
        assert!(
            matches!(r.resolve_encoded(enc), Err(SafePathError::ParentDir)),
            "{enc}"
        );
    }
}

#[test]
fn double_encoding_is_refused() {
    let f = fixture();
    let r = root(&f);
    for enc in [
        "%252e%252e%252foutside%252fsecret",
        "%252E%252E/outside/secret",
        "music%252f..",
        "%25%32%65", // `%25 %32 %65` decodes to `%2e`
    ] {
        assert!(
            matches!(r.resolve_encoded(enc), Err(SafePathError::DoubleEncoded)),
            "{enc}"
        );
    }
    // A literal percent that does not form an escape after decoding is fine.
    assert_eq!(percent_decode_once("100%25 pure").unwrap(), "100% pure");
}

#[test]
fn malformed_escapes_are_refused() {
    for enc in ["%", "abc%", "%4", "%zz", "a%g1"] {
        assert!(
            matches!(
                percent_decode_once(enc),
                Err(SafePathError::BadPercentEncoding { .. })
            ),
            "{enc}"
        );
    }
}

#[test]
fn overlong_utf8_is_refused() {
    let f = fixture();
    let r = root(&f);
    for enc in [
        "%c0%ae%c0%ae%c0%afoutside%c0%afsecret", // overlong `.` `.` `/`
        "%e0%80%ae%e0%80%ae/outside/secret",     // three-byte overlong `.`
        "%c1%9c",                                // overlong backslash
        "%ed%a0%80",                             // a UTF-16 surrogate
        "%ff",
    ] {
        assert!(
            matches!(r.resolve_encoded(enc), Err(SafePathError::InvalidUtf8)),
            "{enc}"
        );
    }
}

#[test]
fn backslashes_are_refused() {
    let f = fixture();
    let r = root(&f);
    assert!(matches!(
        r.resolve_name("..\\outside\\secret"),
        Err(SafePathError::Backslash)
    ));
    assert!(matches!(
        r.resolve_encoded("%5c..%5coutside"),
        Err(SafePathError::Backslash)
    ));
    assert!(matches!(
        r.resolve_name("music\\rock"),
        Err(SafePathError::Backslash)
    ));
}

#[test]
fn overlong_paths_are_refused() {
    let long = "a/".repeat(MAX_PATH_LEN);
    assert!(matches!(
        SafeRelPath::parse(&long),
        Err(SafePathError::TooLong { .. })
    ));
    let comp = "x".repeat(MAX_COMPONENT_LEN + 1);
    assert!(matches!(
        SafeRelPath::parse(&comp),
        Err(SafePathError::ComponentTooLong { .. })
    ));
    assert!(matches!(
        percent_decode_once(&"%41".repeat(MAX_PATH_LEN * 2)),
        Err(SafePathError::TooLong { .. })
    ));
}

#[test]
fn empty_names_are_refused() {
    for name in ["", "/", ".", "./", "//"] {
        let e = SafeRelPath::parse(name).unwrap_err();
        assert!(
            matches!(e, SafePathError::Empty | SafePathError::Absolute),
            "{name}: {e}"
        );
    }
}

#[test]
fn symlink_to_a_file_outside_is_refused() {
    let f = fixture();
    symlink(f.outside.join("secret"), f.share.join("innocent.mp3")).unwrap();
    let r = root(&f);
    assert!(matches!(
        r.resolve_name("innocent.mp3"),
        Err(SafePathError::OutsideRoot)
    ));
}

#[test]
fn symlinked_directory_outside_is_refused() {
    let f = fixture();
    symlink(&f.outside, f.share.join("music/elsewhere")).unwrap();
    let r = root(&f);
    assert!(matches!(
        r.resolve_name("music/elsewhere/secret"),
        Err(SafePathError::OutsideRoot)
    ));
}

#[test]
fn relative_symlink_climbing_out_is_refused() {
    let f = fixture();
    symlink("../../../outside/secret", f.share.join("music/rock/up.mp3")).unwrap();
    let r = root(&f);
    assert!(matches!(
        r.resolve_name("music/rock/up.mp3"),
        Err(SafePathError::OutsideRoot)
    ));
}

#[test]
fn sibling_with_common_prefix_is_outside() {
    // `/x/share2` must not count as inside `/x/share` just because the strings share a prefix.
    let f = fixture();
    let sibling = f.share.with_file_name("share2");
    fs::create_dir_all(&sibling).unwrap();
    fs::write(sibling.join("s.txt"), b"s").unwrap();
    symlink(&sibling, f.share.join("link")).unwrap();
    let r = root(&f);
    assert!(matches!(
        r.resolve_name("link/s.txt"),
        Err(SafePathError::OutsideRoot)
    ));
}

#[test]
fn symlink_inside_pointing_inside_is_fine() {
    let f = fixture();
    symlink("music/rock/song.mp3", f.share.join("alias.mp3")).unwrap();
    symlink("rock", f.share.join("music/hard")).unwrap();
    let r = root(&f);
    let p = r.resolve_name("alias.mp3").unwrap();
    assert_eq!(p, r.resolve_name("music/rock/song.mp3").unwrap());
    assert_eq!(
        read(&r.resolve_name("music/hard/song.mp3").unwrap()),
        b"song"
    );
}

#[test]
fn root_that_is_itself_a_symlink_works() {
    let f = fixture();
    let link = f.share.with_file_name("share-link");
    symlink(&f.share, &link).unwrap();
    let r = SharedRoot::new(&link).unwrap();
    assert_eq!(read(&r.resolve_name("top.txt").unwrap()), b"top");
}

#[test]
fn missing_files_and_directories_are_not_found_or_not_files() {
    let f = fixture();
    let r = root(&f);
    let e = r.resolve_name("nope.mp3").unwrap_err();
    assert!(matches!(e, SafePathError::NotFound));
    assert!(!e.is_refusal());
    assert!(matches!(
        r.resolve_name("music"),
        Err(SafePathError::NotAFile)
    ));
    // A dangling symlink is just missing.
    symlink("gone.mp3", f.share.join("dangling.mp3")).unwrap();
    assert!(matches!(
        r.resolve_name("dangling.mp3"),
        Err(SafePathError::NotFound)
    ));
}

#[test]
fn missing_root_is_an_error() {
    let f = fixture();
    assert!(matches!(
        SharedRoot::new(f.share.join("missing")),
        Err(SafePathError::NotFound)
    ));
    assert!(SharedRoot::new(f.share.join("top.txt")).is_err());
}

#[test]
fn unicode_names_resolve() {
    let f = fixture();
    fs::create_dir_all(f.share.join("été")).unwrap();
    fs::write(f.share.join("été/ünï çødé 日本.txt"), b"u").unwrap();
    let r = root(&f);
    assert_eq!(
        read(&r.resolve_name("été/ünï çødé 日本.txt").unwrap()),
        b"u"
    );
    assert_eq!(
        read(
            &r.resolve_encoded(
                "%C3%A9t%C3%A9/%C3%BCn%C3%AF%20%C3%A7%C3%B8d%C3%A9%20%E6%97%A5%E6%9C%AC.txt"
            )
            .unwrap()
        ),
        b"u"
    );
}

#[test]
fn open_file_reads_inside_and_refuses_outside() {
    use std::io::Read;
    let f = fixture();
    symlink(f.outside.join("secret"), f.share.join("bad")).unwrap();
    let r = root(&f);
    let (mut file, path) = r
        .open_file(&SafeRelPath::parse("music/rock/song.mp3").unwrap())
        .unwrap();
    let mut s = String::new();
    file.read_to_string(&mut s).unwrap();
    assert_eq!(s, "song");
    assert!(path.starts_with(r.path()));
    assert!(matches!(
        r.open_file(&SafeRelPath::parse("bad").unwrap()),
        Err(SafePathError::OutsideRoot)
    ));
}

#[test]
fn from_fs_relative_builds_forward_slash_paths() {
    let f = fixture();
    let rel =
        SafeRelPath::from_fs_relative(&f.share, &f.share.join("music/rock/song.mp3")).unwrap();
    assert_eq!(rel.as_str(), "music/rock/song.mp3");
    assert_eq!(rel.file_name(), "song.mp3");
    assert!(matches!(
        SafeRelPath::from_fs_relative(&f.share, &f.outside.join("secret")),
        Err(SafePathError::OutsideRoot)
    ));
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("music".to_string()),
        Just("rock".to_string()),
        Just("song.mp3".to_string()),
        Just("top.txt".to_string()),
        Just("out".to_string()),
        Just("outside".to_string()),
        Just("secret".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2f".to_string()),
        Just("%252e".to_string()),
        Just("%c0%ae".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        "[a-z%./\\\\]{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the request, a successful resolution is inside the root and never the secret.
    #[test]
    fn resolved_paths_never_leave_the_root(parts in prop::collection::vec(component(), 0..8), lead in any::<bool>()) {
        let f = fixture();
        symlink(&f.outside, f.share.join("out")).unwrap();
        let r = root(&f);
        let mut req = parts.join("/");
        if lead { req.insert(0, '/'); }
        for p in [r.resolve_encoded(&req), r.resolve_name(&req)].into_iter().flatten() {
            prop_assert!(p.starts_with(r.path()), "{req} -> {}", p.display());
            prop_assert_ne!(fs::read(&p).unwrap(), b"secret".to_vec());
        }
    }

    /// Decoding arbitrary text never panics, and a decoded result contains no escape.
    #[test]
    fn decode_never_panics(s in "\\PC{0,64}") {
        if let Ok(d) = percent_decode_once(&s) {
            prop_assert!(!d.contains("%2e") && !d.contains("%2E"));
        }
    }

    /// Encoding any text once and decoding it once gives it back; only text that itself looks encoded
    /// (`%41`) is refused, as double encoding.
    #[test]
    fn encode_then_decode_once_round_trips(s in "\\PC{0,64}") {
        let enc = percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC).to_string();
        match percent_decode_once(&enc) {
            Ok(d) => prop_assert_eq!(d, s),
            Err(SafePathError::DoubleEncoded) => {
                let b = s.as_bytes();
                prop_assert!(b.windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()));
            }
            Err(e) => prop_assert!(false, "{s:?} -> {enc}: {e}"),
        }
    }

    /// Parsing arbitrary text never panics; what it accepts has no `..` and no leading `/`.
    #[test]
    fn parse_accepts_only_clean_paths(s in "\\PC{0,64}") {
        if let Ok(p) = SafeRelPath::parse(&s) {
            prop_assert!(!p.as_str().starts_with('/'));
            prop_assert!(p.components().all(|c| !c.is_empty() && c != "." && c != ".."));
            prop_assert!(!p.as_str().contains('\\') && !p.as_str().contains('\0'));
            // Normalisation is idempotent.
            prop_assert_eq!(SafeRelPath::parse(p.as_str()).unwrap(), p.clone());
        }
    }
}

#[test]
fn symlink_loops_are_an_error_not_a_hang() {
    let f = fixture();
    symlink("loop-b", f.share.join("loop-a")).unwrap();
    symlink("loop-a", f.share.join("loop-b")).unwrap();
    let r = root(&f);
    let e = r.resolve_name("loop-a").unwrap_err();
    assert!(matches!(e, SafePathError::Io(_)), "{e}");
}
