//! `common::library` hash cache: a restart never rehashes unchanged files, a changed file IS rehashed,
//! hashes are looked up by SHA-1 and UUHash, and the parallel hashing gives the same result as one thread.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::hash::{hash_file, HashKinds, Sha1Digest};
use common::library::{CacheStatus, Library, LibraryConfig, Progress, CACHE_FILE_NAME};

fn kinds() -> HashKinds {
    HashKinds {
        sha1: true,
        uuhash: true,
        ..HashKinds::default()
    }
}

struct Dirs {
    _tmp: tempfile::TempDir,
    share: PathBuf,
    data: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    let data = tmp.path().join("data");
    fs::create_dir_all(&share).unwrap();
    Dirs {
        _tmp: tmp,
        share,
        data,
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
        .kinds(kinds())
        .progress(Progress::Hidden)
}

fn sha1_of(bytes: &[u8]) -> Sha1Digest {
    use sha1::Digest;
    Sha1Digest(sha1::Sha1::digest(bytes).into())
}

#[test]
fn restart_does_not_rehash_unchanged_files() {
    let d = dirs();
    put(&d.share, "a.mp3", b"hello");
    put(&d.share, "dir/b.mp3", &vec![7u8; 100_000]);
    let lib = Library::open(cfg(&d)).unwrap();
    let r = lib.last_report();
    assert_eq!((r.hashed, r.reused, r.bytes_hashed), (2, 0, 100_005));
    let a = lib.by_path("a.mp3").unwrap().clone();
    assert_eq!(a.hashes.sha1, Some(sha1_of(b"hello")));
    assert!(a.hashes.uuhash.is_some());
    drop(lib);

    let lib = Library::open(cfg(&d)).unwrap();
    let r = lib.last_report();
    assert_eq!(r.cache, CacheStatus::Loaded);
    assert_eq!((r.hashed, r.reused, r.bytes_hashed), (0, 2, 0));
    assert_eq!(lib.by_path("a.mp3").unwrap().hashes, a.hashes);
}

#[test]
fn a_changed_file_is_rehashed_and_keeps_its_index() {
    let d = dirs();
    put(&d.share, "a.mp3", b"version one");
    put(&d.share, "b.mp3", b"stays");
    let mut lib = Library::open(cfg(&d)).unwrap();
    let before = lib.by_path("a.mp3").unwrap().clone();

    // Same size, different bytes, a different mtime: must be noticed.
    put(&d.share, "a.mp3", b"version two");
    let later = SystemTime::now() + Duration::from_secs(10);
    fs::File::options()
        .write(true)
        .open(d.share.join("a.mp3"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let r = lib.rescan().unwrap().clone();
    assert_eq!((r.hashed, r.reused), (1, 1));
    let after = lib.by_path("a.mp3").unwrap();
    assert_eq!(after.index, before.index);
    assert_eq!(after.hashes.sha1, Some(sha1_of(b"version two")));
    assert_ne!(after.hashes.sha1, before.hashes.sha1);
    assert!(lib.by_sha1(&sha1_of(b"version one")).is_none());
    assert_eq!(
        lib.by_sha1(&sha1_of(b"version two")).unwrap().index,
        before.index
    );

    // A size change alone (after a restart) is noticed as well.
    drop(lib);
    put(&d.share, "b.mp3", b"stays, but longer");
    let lib = Library::open(cfg(&d)).unwrap();
    assert_eq!(lib.last_report().hashed, 1);
    assert_eq!(
        lib.by_path("b.mp3").unwrap().hashes.sha1,
        Some(sha1_of(b"stays, but longer"))
    );
}

#[test]
fn asking_for_more_hash_kinds_rehashes() {
    let d = dirs();
    put(&d.share, "a.mp3", b"abc");
    Library::open(cfg(&d)).unwrap();
    let more = HashKinds {
        md5: true,
        ..kinds()
    };
    let lib = Library::open(cfg(&d).kinds(more)).unwrap();
    assert_eq!(lib.last_report().hashed, 1);
    assert!(lib.by_path("a.mp3").unwrap().hashes.md5.is_some());
    // Asking for fewer reuses the cache.
    let lib = Library::open(cfg(&d).kinds(HashKinds {
        sha1: true,
        ..HashKinds::default()
    }))
    .unwrap();
    assert_eq!(lib.last_report().hashed, 0);
}

#[test]
fn lookups_by_sha1_and_uuhash_match_hash_file() {
    let d = dirs();
    put(&d.share, "x/one.mp3", b"one");
    put(&d.share, "x/two.mp3", b"two two");
    put(&d.share, "y/copy-of-one.mp3", b"one");
    let lib = Library::open(cfg(&d)).unwrap();
    for f in lib.files() {
        let p = lib.resolve(f).unwrap();
        let direct = hash_file(&p, kinds(), &mut |_| {}).unwrap();
        assert_eq!(f.hashes, direct, "{}", f.path);
        let uu = f.hashes.uuhash.unwrap();
        let by_uu = lib.by_uuhash(&uu).unwrap();
        assert_eq!(by_uu.hashes.uuhash, Some(uu));
    }
    // Same content twice: the first in path order answers.
    assert_eq!(
        lib.by_sha1(&sha1_of(b"one")).unwrap().path.as_str(),
        "x/one.mp3"
    );
    assert!(lib.by_sha1(&sha1_of(b"nope")).is_none());
}

#[test]
fn corrupt_cache_means_a_full_rehash_not_a_crash() {
    let d = dirs();
    put(&d.share, "a.mp3", b"a");
    put(&d.share, "b.mp3", b"b");
    Library::open(cfg(&d)).unwrap();
    let cache = d.data.join(CACHE_FILE_NAME);
    let text = fs::read_to_string(&cache).unwrap();
    fs::write(&cache, &text[..text.len() / 2]).unwrap();
    let lib = Library::open(cfg(&d)).unwrap();
    assert_eq!(lib.last_report().cache, CacheStatus::Corrupt);
    assert_eq!(lib.last_report().hashed, 2);
    assert_eq!(
        lib.by_path("a.mp3").unwrap().hashes.sha1,
        Some(sha1_of(b"a"))
    );
    // A hash of the wrong length in an entry also counts as corrupt.
    let bad = fs::read_to_string(&cache)
        .unwrap()
        .replacen("\"sha1\":\"", "\"sha1\":\"ff", 1);
    fs::write(&cache, bad).unwrap();
    let lib = Library::open(cfg(&d)).unwrap();
    assert_eq!(lib.last_report().cache, CacheStatus::Corrupt);
    assert_eq!(lib.last_report().hashed, 2);
}

#[test]
fn two_threads_give_the_same_library_as_one() {
    let d = dirs();
    for i in 0..40 {
        put(
            &d.share,
            &format!("d{}/f{i:02}.bin", i % 3),
            &vec![i as u8; 1000 + i * 997],
        );
    }
    let one = Library::open(
        LibraryConfig::new(&d.share)
            .kinds(kinds())
            .hash_threads(1)
            .progress(Progress::Hidden),
    )
    .unwrap();
    let two = Library::open(
        LibraryConfig::new(&d.share)
            .kinds(kinds())
            .hash_threads(2)
            .progress(Progress::Hidden),
    )
    .unwrap();
    assert_eq!(one.files(), two.files());
    assert_eq!(two.last_report().hashed, 40);
}
