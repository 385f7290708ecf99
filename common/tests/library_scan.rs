//! `common::library` without hashes: scanning, keywords, search, stable indices, the cache file and
//! the entries a scan must skip. (Hash caching is in `library_hash_cache.rs`.)

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::library::{CacheStatus, Library, LibraryConfig, Progress, CACHE_FILE_NAME};
use common::safe_path::SafePathError;

struct Dirs {
    _tmp: tempfile::TempDir,
    share: PathBuf,
    data: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    let data = tmp.path().join("data");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&share).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret.mp3"), b"secret").unwrap();
    Dirs {
        _tmp: tmp,
        share,
        data,
        outside,
    }
}

fn put(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn cfg(d: &Dirs) -> LibraryConfig {
    LibraryConfig::new(&d.share)
        .data_dir(&d.data)
        .progress(Progress::Hidden)
}

fn paths(lib: &Library) -> Vec<&str> {
    lib.files().iter().map(|f| f.path.as_str()).collect()
}

#[test]
fn empty_folder_gives_an_empty_library() {
    let d = dirs();
    let lib = Library::open(cfg(&d)).unwrap();
    assert!(lib.is_empty());
    assert_eq!(lib.total_size(), 0);
    assert!(lib.search("anything").is_empty());
    assert_eq!(lib.last_report().cache, CacheStatus::Missing);
    assert!(d.data.join(CACHE_FILE_NAME).is_file());
}

#[test]
fn scan_is_recursive_with_forward_slash_paths_sizes_and_mtimes() {
    let d = dirs();
    put(&d.share, "b.txt", b"bb");
    put(&d.share, "Rock/AC-DC/Back In Black.mp3", b"12345");
    put(&d.share, "a/deep/er/x.ogg", b"");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(d.share.join("b.txt"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    let lib = Library::open(cfg(&d)).unwrap();
    assert_eq!(
        paths(&lib),
        ["Rock/AC-DC/Back In Black.mp3", "a/deep/er/x.ogg", "b.txt"]
    );
    let f = lib.by_path("Rock/AC-DC/Back In Black.mp3").unwrap();
    assert_eq!(f.size, 5);
    assert_eq!(f.name(), "Back In Black.mp3");
    assert_eq!(
        f.keywords,
        ["ac", "back", "black", "dc", "in", "mp3", "rock"]
    );
    assert_eq!(lib.by_path("b.txt").unwrap().mtime, when);
    assert_eq!(lib.total_size(), 7);
    // Lookup by path normalises like the safe-path rules, and refuses hostile names.
    assert!(lib.by_path("a//deep/./er/x.ogg").is_some());
    assert!(lib.by_path("a/deep/../deep/er/x.ogg").is_none());
    assert!(lib.by_path("/b.txt").is_none());
}

#[test]
fn search_is_whole_word_and_ands_words() {
    let d = dirs();
    put(&d.share, "Rock/AC-DC/Back In Black.mp3", b"1");
    put(&d.share, "Rock/Cowboy Junkies - Sweet Jane.mp3", b"2");
    put(&d.share, "Jazz/Don't Know Why.MP3", b"3");
    put(&d.share, "Jazz/black coffee.ogg", b"4");
    let lib = Library::open(cfg(&d)).unwrap();
    let names = |q: &str| -> Vec<String> {
        lib.search(q)
            .into_iter()
            .map(|f| f.name().to_owned())
            .collect()
    };
    // Whole words only: `cow` does not find "Cowboy" (napster.md §2).
    assert!(names("cow").is_empty());
    assert_eq!(names("cowboy"), ["Cowboy Junkies - Sweet Jane.mp3"]);
    // AND of words, case-insensitive, directory components count.
    assert_eq!(names("BLACK"), ["black coffee.ogg", "Back In Black.mp3"]);
    assert_eq!(names("black rock"), ["Back In Black.mp3"]);
    assert_eq!(names("jazz black"), ["black coffee.ogg"]);
    assert_eq!(names("black  -  mp3"), ["Back In Black.mp3"]);
    assert!(names("black jane").is_empty());
    // Apostrophes are dropped on both sides.
    assert_eq!(names("dont know"), ["Don't Know Why.MP3"]);
    assert_eq!(names("don't"), ["Don't Know Why.MP3"]);
    // The extension is a word; punctuation-only queries find nothing.
    assert_eq!(lib.search("mp3").len(), 3);
    assert!(names("").is_empty());
    assert!(names(" - ... ").is_empty());
    assert_eq!(lib.search_words(&["AC-DC", "back"]).len(), 1);
    // Results are in path order and each result really has the words.
    for f in lib.search("mp3") {
        assert!(f.has_keywords(&["mp3"]));
    }
}

#[test]
fn unicode_names_are_shared_and_searchable() {
    let d = dirs();
    put(&d.share, "Été/Ünïcödé Sóng 日本.mp3", b"u");
    let lib = Library::open(cfg(&d)).unwrap();
    let f = lib.by_path("Été/Ünïcödé Sóng 日本.mp3").unwrap();
    assert_eq!(f.keywords, ["mp3", "sóng", "été", "ünïcödé", "日本"]);
    assert_eq!(lib.search("ÜNÏCÖDÉ été").len(), 1);
    let p = lib.resolve(f).unwrap();
    assert_eq!(fs::read(p).unwrap(), b"u");
}

#[test]
fn indices_are_unique_stable_and_persisted() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    put(&d.share, "b.mp3", b"b");
    put(&d.share, "c/d.mp3", b"d");
    let lib = Library::open(cfg(&d)).unwrap();
    let before: Vec<(String, u32)> = lib
        .files()
        .iter()
        .map(|f| (f.path.to_string(), f.index))
        .collect();
    let mut ix: Vec<u32> = before.iter().map(|x| x.1).collect();
    ix.sort();
    ix.dedup();
    assert_eq!(ix.len(), 3);
    assert!(ix.iter().all(|&i| i >= 1), "index 0 is avoided");
    for (p, i) in &before {
        assert_eq!(lib.get(*i).unwrap().path.as_str(), p);
    }
    drop(lib);

    // A restart keeps every number.
    let lib = Library::open(cfg(&d)).unwrap();
    assert_eq!(lib.last_report().cache, CacheStatus::Loaded);
    for (p, i) in &before {
        assert_eq!(lib.by_path(p).unwrap().index, *i);
    }
}

#[test]
fn new_files_get_new_numbers_and_removed_numbers_are_not_reused() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    put(&d.share, "b.mp3", b"b");
    let mut lib = Library::open(cfg(&d)).unwrap();
    let a = lib.by_path("a.mp3").unwrap().index;
    let b = lib.by_path("b.mp3").unwrap().index;

    // Remove b, add one that sorts before everything: it must not take b's (or a's) number.
    fs::remove_file(d.share.join("b.mp3")).unwrap();
    put(&d.share, "0-first.mp3", b"0");
    let r = lib.rescan().unwrap().clone();
    assert_eq!((r.added, r.removed, r.files), (1, 1, 2));
    assert_eq!(r.cache, CacheStatus::InMemory);
    assert_eq!(lib.by_path("a.mp3").unwrap().index, a);
    let first = lib.by_path("0-first.mp3").unwrap().index;
    assert!(first != a && first != b);
    assert!(lib.get(b).is_none());

    // Across a restart too: b comes back as a new file with a new number.
    drop(lib);
    put(&d.share, "b.mp3", b"b again");
    let lib = Library::open(cfg(&d)).unwrap();
    let b2 = lib.by_path("b.mp3").unwrap().index;
    assert!(b2 != b && b2 != a && b2 != first, "{b2} reused");
    assert_eq!(lib.by_path("0-first.mp3").unwrap().index, first);
}

#[test]
fn symlinks_inside_are_shared_and_outside_are_skipped() {
    let d = dirs();
    put(&d.share, "music/song.mp3", b"song");
    symlink("music/song.mp3", d.share.join("alias.mp3")).unwrap();
    symlink(d.outside.join("secret.mp3"), d.share.join("leak.mp3")).unwrap();
    symlink(&d.outside, d.share.join("outdir")).unwrap();
    symlink("music", d.share.join("music-again")).unwrap();
    symlink("missing.mp3", d.share.join("dangling.mp3")).unwrap();
    symlink("loop2.mp3", d.share.join("loop1.mp3")).unwrap();
    symlink("loop1.mp3", d.share.join("loop2.mp3")).unwrap();
    let lib = Library::open(cfg(&d)).unwrap();
    assert_eq!(paths(&lib), ["alias.mp3", "music/song.mp3"]);
    assert!(lib.search("secret").is_empty());
    assert_eq!(lib.last_report().skipped, 6);
    let alias = lib.by_path("alias.mp3").unwrap();
    assert_eq!(fs::read(lib.resolve(alias).unwrap()).unwrap(), b"song");
}

#[test]
fn resolve_rechecks_a_file_replaced_by_an_outside_symlink() {
    let d = dirs();
    put(&d.share, "x.mp3", b"x");
    let lib = Library::open(cfg(&d)).unwrap();
    let f = lib.by_path("x.mp3").unwrap().clone();
    fs::remove_file(d.share.join("x.mp3")).unwrap();
    symlink(d.outside.join("secret.mp3"), d.share.join("x.mp3")).unwrap();
    assert!(matches!(lib.resolve(&f), Err(SafePathError::OutsideRoot)));
    assert!(matches!(lib.open_file(&f), Err(SafePathError::OutsideRoot)));
}

#[test]
fn hidden_entries_special_files_and_data_dir_are_not_shared() {
    let d = dirs();
    put(&d.share, ".hidden.mp3", b"h");
    put(&d.share, ".git/config", b"c");
    put(&d.share, "ok.mp3", b"ok");
    let fifo = d.share.join("pipe.mp3");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A data directory inside the shared folder is not shared.
    let inner_data = d.share.join("state");
    let lib = Library::open(
        LibraryConfig::new(&d.share)
            .data_dir(&inner_data)
            .progress(Progress::Hidden),
    )
    .unwrap();
    assert_eq!(paths(&lib), ["ok.mp3"]);
    assert!(inner_data.join(CACHE_FILE_NAME).is_file());

    let mut c = LibraryConfig::new(&d.share)
        .data_dir(&inner_data)
        .progress(Progress::Hidden);
    c.include_hidden = true;
    let lib = Library::open(c).unwrap();
    assert_eq!(paths(&lib), [".git/config", ".hidden.mp3", "ok.mp3"]);
}

#[test]
fn unreadable_directory_is_skipped_with_the_rest_shared() {
    use std::os::unix::fs::PermissionsExt;
    let d = dirs();
    put(&d.share, "open/a.mp3", b"a");
    put(&d.share, "locked/b.mp3", b"b");
    let locked = d.share.join("locked");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let readable_anyway = fs::read_dir(&locked).is_ok(); // root ignores permissions
    let lib = Library::open(cfg(&d)).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    if readable_anyway {
        assert_eq!(paths(&lib), ["locked/b.mp3", "open/a.mp3"]);
    } else {
        assert_eq!(paths(&lib), ["open/a.mp3"]);
        assert!(lib.last_report().skipped >= 1);
    }
}

#[test]
fn corrupt_cache_warns_and_starts_afresh() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    Library::open(cfg(&d)).unwrap();
    let cache = d.data.join(CACHE_FILE_NAME);
    for garbage in [
        &b"{not json"[..],
        b"",
        b"\xff\xfe\x00",
        b"{\"version\":99,\"root\":\"/\",\"next_index\":1,\"files\":[]}",
    ] {
        fs::write(&cache, garbage).unwrap();
        let lib = Library::open(cfg(&d)).unwrap();
        assert_eq!(lib.last_report().cache, CacheStatus::Corrupt);
        assert_eq!(paths(&lib), ["a.mp3"]);
        // And it was rewritten as a good cache.
        let lib = Library::open(cfg(&d)).unwrap();
        assert_eq!(lib.last_report().cache, CacheStatus::Loaded);
    }
}

#[test]
fn cache_of_another_root_is_ignored() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    put(&d.outside, "z.mp3", b"z");
    Library::open(cfg(&d)).unwrap();
    let lib = Library::open(
        LibraryConfig::new(&d.outside)
            .data_dir(&d.data)
            .progress(Progress::Hidden),
    )
    .unwrap();
    assert_eq!(lib.last_report().cache, CacheStatus::OtherRoot);
    assert_eq!(paths(&lib), ["secret.mp3", "z.mp3"]);
}

#[test]
fn cache_is_written_atomically_and_is_json() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    Library::open(cfg(&d)).unwrap();
    let names: Vec<String> = fs::read_dir(&d.data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [CACHE_FILE_NAME], "no temporary file left behind");
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(d.data.join(CACHE_FILE_NAME)).unwrap()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["files"][0]["path"], "a.mp3");
    assert!(v["next_index"].as_u64().unwrap() > v["files"][0]["index"].as_u64().unwrap());
}

#[test]
fn unwritable_data_dir_is_a_clear_error() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    // A regular file where the data directory should be.
    fs::write(&d.data, b"not a dir").unwrap();
    let e = Library::open(cfg(&d)).unwrap_err();
    assert!(e.to_string().starts_with("data directory"), "{e}");
    let e = Library::open(LibraryConfig::new(d.share.join("missing"))).unwrap_err();
    assert!(e.to_string().starts_with("shared folder"), "{e}");
}

#[test]
fn without_data_dir_rescans_still_keep_indices() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    let mut lib = Library::open(LibraryConfig::new(&d.share).progress(Progress::Hidden)).unwrap();
    assert_eq!(lib.last_report().cache, CacheStatus::Disabled);
    let a = lib.by_path("a.mp3").unwrap().index;
    put(&d.share, "0.mp3", b"0");
    lib.rescan().unwrap();
    assert_eq!(lib.by_path("a.mp3").unwrap().index, a);
    assert!(!d.data.exists());
}
