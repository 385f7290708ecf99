//! The `tracker` binary is linked the way `build.rs` says it linked it (README, "Why the binary is static
//! and ordered"). Where build.rs chose the static, ordered link (`TRACKER_LINK_STATIC`/`_ORDERED` = 1,
//! which it sets for this crate): a static PIE (no program interpreter, no shared libraries) with the
//! profiled code in its own `.text.hot` section, so a change of rustc's link line that quietly brought back
//! the dynamic link, or an order file that no longer matches anything, fails here rather than only in the
//! memory figures. Where it fell back (no static glibc, older rustc, another linker, `TRACKER_LINK_PLAIN`):
//! the usual dynamic link and no `.text.hot`. Either way the binary must run.
#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

#[path = "../link/linker_flags.rs"]
mod linker_flags;

const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

struct Section {
    name: String,
    size: u64,
}

/// Program header types with (file offset, file size), and the sections, of a little-endian ELF64 file.
fn parse(b: &[u8]) -> (Vec<(u32, usize, usize)>, Vec<Section>) {
    assert_eq!(
        &b[..6],
        b"\x7fELF\x02\x01",
        "not a little-endian ELF64 file"
    );
    let (phoff, phentsize, phnum) = (u64_at(b, 32) as usize, u16_at(b, 54), u16_at(b, 56));
    let phdrs = (0..phnum)
        .map(|i| {
            let p = phoff + i * phentsize;
            (
                u32_at(b, p),
                u64_at(b, p + 8) as usize,
                u64_at(b, p + 32) as usize,
            )
        })
        .collect();
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(b, 40) as usize,
        u16_at(b, 58),
        u16_at(b, 60),
        u16_at(b, 62),
    );
    let strtab = u64_at(b, shoff + shstrndx * shentsize + 24) as usize;
    let sections = (0..shnum)
        .map(|i| {
            let s = shoff + i * shentsize;
            let at = strtab + u32_at(b, s) as usize;
            let end = at + b[at..].iter().position(|&c| c == 0).unwrap();
            Section {
                name: String::from_utf8_lossy(&b[at..end]).into_owned(),
                size: u64_at(b, s + 32),
            }
        })
        .collect();
    (phdrs, sections)
}

#[test]
fn tracker_binary_is_linked_as_build_rs_says_and_runs() {
    let linked_static = env!("TRACKER_LINK_STATIC") == "1";
    let ordered = env!("TRACKER_LINK_ORDERED") == "1";
    let path = env!("CARGO_BIN_EXE_tracker");
    let bin = std::fs::read(path).expect("read the tracker binary");
    let (phdrs, sections) = parse(&bin);
    let interp = phdrs.iter().any(|&(t, _, _)| t == PT_INTERP);
    let needed: usize = phdrs
        .iter()
        .filter(|&&(t, _, _)| t == PT_DYNAMIC)
        .map(|&(_, off, size)| {
            bin[off..off + size]
                .chunks_exact(16)
                .filter(|d| u64_at(d, 0) == DT_NEEDED)
                .count()
        })
        .sum();
    if linked_static {
        assert!(
            !interp,
            "the tracker binary asks for a program interpreter: it was linked dynamically"
        );
        assert_eq!(
            needed, 0,
            "the static tracker binary names shared libraries"
        );
    } else {
        assert!(
            interp && needed > 0,
            "build.rs fell back to the usual link, yet the binary is not dynamic ({needed} DT_NEEDED)"
        );
    }
    let hot = sections.iter().find(|s| s.name == ".text.hot");
    if ordered {
        let hot = hot.expect("no .text.hot section: link/hot-code.order was not applied");
        // The profiled functions of a release build are ~830 KB; a debug build, whose functions are
        // inlined differently, still places ~600 KB of them.
        assert!(
            hot.size >= 256 * 1024,
            ".text.hot holds {} bytes: does link/hot-code.order still match the code?",
            hot.size
        );
    } else {
        assert!(
            hot.is_none(),
            "build.rs did not order the code, yet there is a .text.hot"
        );
    }
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .expect("run the tracker binary");
    assert!(out.status.success(), "tracker --version: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tracker "));
}

#[test]
fn build_rs_takes_only_rustc_lld_for_lld() {
    let check = |flags: &[&str]| linker_flags::other_linker(flags.iter().copied()).is_ok();
    // Still rustc's lld.
    assert!(check(&[]));
    assert!(
        check(&[""]),
        "empty CARGO_ENCODED_RUSTFLAGS splits into one empty string"
    );
    assert!(check(&["-Ctarget-cpu=native", "-C", "opt-level=3"]));
    assert!(check(&["-Clink-arg=-fuse-ld=lld"]));
    assert!(check(&["-C", "linker-flavor=gnu-lld-cc"]));
    assert!(check(&["-Clinker-features=+lld"]));
    // The opt-outs mention lld but are not it.
    assert!(!check(&["-Clinker-features=-lld"]));
    assert!(!check(&["-Zlinker-features=-lld", "-Zunstable-options"]));
    assert!(!check(&["-C", "linker-features=-lld"]));
    assert!(!check(&["-Clink-self-contained=-linker"]));
    // Another linker.
    assert!(!check(&["-Clink-arg=-fuse-ld=bfd"]));
    assert!(!check(&["-C", "link-args=-Wl,-O1 -fuse-ld=mold"]));
    assert!(!check(&["-Clinker=clang"]));
    assert!(!check(&["-Clinker=rust-lld"]), "lld, but not driven by cc");
    assert!(!check(&["-Clinker-flavor=gnu-cc"]));
}
