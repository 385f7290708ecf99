//! Links the `tracker` binary as a static PIE on glibc Linux (README, "Why the binary is static"): no
//! `ld.so`, no shared `libc`/`libm`/`libgcc_s` mapped at run time, only the libc code the tracker calls.
//! Only the binary: the library, tests and benches link the usual way.
//!
//! rustc names the system libraries of std dynamically (`-Bdynamic -lgcc_s ... -lm -lc`) and a build
//! script can only append link arguments, so `-static-pie` alone would still find `libc.so`. Instead each
//! of those names is found first in a directory of this build holding a one-line linker script of the
//! same name (`libc.a`: `INPUT(/usr/lib/x86_64-linux-gnu/libc.a)`) that points at the static archive
//! the C compiler knows; `-lgcc_s`, which has no static archive, becomes libgcc's static unwinder.
//! Without those archives (a glibc install without its static libraries) the binary is linked
//! dynamically and the build says so.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "link/linker_flags.rs"]
mod linker_flags;

/// The libraries std links on `*-linux-gnu` (rustc `--print link-args`), all present in libc6-dev.
const GLIBC_LIBS: [&str; 6] = ["c", "m", "rt", "pthread", "dl", "util"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    // For comparisons (README): the binary linked the usual way, dynamic and in the compiler's order.
    println!("cargo:rerun-if-env-changed=TRACKER_LINK_PLAIN");
    // What this script did, for `tests/link.rs` (which checks the binary against it): `static` and
    // `ordered`, each "1" or "0".
    let (mut linked_static, mut ordered) = (false, false);
    link(&mut linked_static, &mut ordered);
    println!(
        "cargo:rustc-env=TRACKER_LINK_STATIC={}",
        u8::from(linked_static)
    );
    println!("cargo:rustc-env=TRACKER_LINK_ORDERED={}", u8::from(ordered));
}

fn link(linked_static: &mut bool, ordered: &mut bool) {
    if std::env::var_os("TRACKER_LINK_PLAIN").is_some() {
        return;
    }
    // The link arguments below are lld's (and tested with it only): rustc >= 1.90 links this target with
    // its bundled lld unless told otherwise; an older toolchain or another linker gets the plain link.
    if let Err(why) = linker_is_lld() {
        println!("cargo:warning=tracker linked the usual way (dynamic, unordered): {why}");
        return;
    }
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("static");
    match write_scripts(&out) {
        Ok(()) => {
            *linked_static = true;
            println!("cargo:rustc-link-arg-bin=tracker=-static-pie");
            // Relative relocations packed (DT_RELR): the start-up reads ~1 KB, not ~120. The static
            // start-up code of glibc before 2.36 would not apply them.
            if glibc_at_least(2, 36) {
                println!("cargo:rustc-link-arg-bin=tracker=-Wl,-z,pack-relative-relocs");
            }
            println!("cargo:rustc-link-arg-bin=tracker=-L{}", out.display());
        }
        Err(why) => println!("cargo:warning=tracker linked dynamically: {why}"),
    }
    *ordered = hot_code_first(&out);
}

/// Places the code the tracker runs (`link/hot-code.order`, written by `link/profile.sh`) together at the
/// start of the code segment. The kernel maps up to 64 KiB of file pages around every page fault, so
/// functions run here and there made all of `.text` resident; packed together they take a few windows.
///
/// Rust symbols carry hashes that change with dependency versions and LTO partitioning (`17h<hex>E`,
/// `.llvm.<n>`, v0 crate disambiguators), so they become section globs with those parts wildcarded, in a
/// linker script added to lld's default layout (`INSERT BEFORE .text`): a stale profile moves less code,
/// it never breaks the link. C symbols (libc) keep their names: lld's `--symbol-ordering-file`, which
/// ignores names it does not find.
/// Returns whether it did.
fn hot_code_first(out: &Path) -> bool {
    let order = Path::new("link/hot-code.order");
    println!("cargo:rerun-if-changed={}", order.display());
    let Ok(list) = std::fs::read_to_string(order) else {
        println!("cargo:warning=no {}: code not ordered", order.display());
        return false;
    };
    let (mut globs, mut plain) = (Vec::new(), String::new());
    for name in list.lines().map(str::trim) {
        if name.starts_with("_ZN") || name.starts_with("_R") {
            let g = section_glob(name);
            if !globs.contains(&g) {
                globs.push(g);
            }
        } else if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            plain.push_str(name);
            plain.push('\n');
        }
    }
    let mut script = String::from("SECTIONS {\n  .text.hot : {\n");
    for g in &globs {
        // `.text.*`: LLVM puts cold-marked functions (`#[cold]` start-up paths) in `.text.unlikely.`.
        script.push_str(&format!("    *(.text.*{g})\n"));
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    let (ld, sym) = (out.join("hot-code.ld"), out.join("hot-code.sym"));
    std::fs::write(&ld, script).expect("write hot-code.ld");
    std::fs::write(&sym, plain).expect("write hot-code.sym");
    println!("cargo:rustc-link-arg-bin=tracker=-Wl,-T,{}", ld.display());
    println!(
        "cargo:rustc-link-arg-bin=tracker=-Wl,--symbol-ordering-file={}",
        sym.display()
    );
    println!("cargo:rustc-link-arg-bin=tracker=-Wl,--no-warn-symbol-ordering");
    true
}

/// `name` with its build-dependent parts as `*`: legacy hashes (`17h` + 16 hex digits + `E`), LLVM
/// promotion suffixes (`.llvm.<digits>`) and v0 crate disambiguators (`Cs<base-62>_`).
fn section_glob(name: &str) -> String {
    let b = name.as_bytes();
    let mut g = String::with_capacity(name.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &name[i..];
        if rest.starts_with("17h")
            && b.len() >= i + 20
            && b[i + 19] == b'E'
            && b[i + 3..i + 19].iter().all(u8::is_ascii_hexdigit)
        {
            g.push_str("17h*E");
            i += 20;
        } else if let Some(tail) = rest.strip_prefix(".llvm.") {
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            g.push_str(".llvm.*");
            i += 6 + digits;
        } else if name.starts_with("_R") && rest.starts_with("Cs") {
            let id = rest[2..]
                .bytes()
                .take_while(u8::is_ascii_alphanumeric)
                .count();
            if rest.as_bytes().get(2 + id) == Some(&b'_') {
                g.push_str("Cs*_");
                i += 3 + id;
            } else {
                g.push_str("Cs");
                i += 2;
            }
        } else {
            g.push(b[i] as char);
            i += 1;
        }
    }
    g
}

/// `Ok` when rustc links with its lld: x86_64-unknown-linux-gnu, rustc 1.90 or later, and neither
/// RUSTFLAGS nor a configured `target.<triple>.linker` (cargo's `RUSTC_LINKER`) chooses something else.
fn linker_is_lld() -> Result<(), String> {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" {
        return Err(format!("target {target}"));
    }
    if let Some(l) = std::env::var_os("RUSTC_LINKER") {
        return Err(format!("linker {} configured", l.to_string_lossy()));
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    linker_flags::other_linker(flags.split('\x1f'))?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = command_output(&rustc, "--version")?;
    match version_pair(version.split_whitespace().nth(1).unwrap_or("")) {
        Some((1, m)) if m >= 90 => Ok(()),
        _ => Err(format!(
            "{version} (lld is rustc's default linker from 1.90)"
        )),
    }
}

/// The glibc linked against (the build machine's: this target is only ever built natively here).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    command_output("getconf", "GNU_LIBC_VERSION")
        .ok()
        .and_then(|v| version_pair(v.split_whitespace().nth(1)?))
        .is_some_and(|v| v >= (major, minor))
}

fn command_output(program: &str, arg: &str) -> Result<String, String> {
    let out = Command::new(program)
        .arg(arg)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `"1.95.0"` → `(1, 95)`.
fn version_pair(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Writes `lib<name>.a` redirections for every library std links into `dir`.
fn write_scripts(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in GLIBC_LIBS {
        let archive = find_archive(&format!("lib{name}.a"))?;
        write_script(dir, name, &[archive])?;
    }
    let unwinder = [find_archive("libgcc_eh.a")?, find_archive("libgcc.a")?];
    write_script(dir, "gcc_s", &unwinder)
}

fn write_script(dir: &Path, name: &str, inputs: &[PathBuf]) -> Result<(), String> {
    let list: Vec<String> = inputs
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let path = dir.join(format!("lib{name}.a"));
    std::fs::write(&path, format!("INPUT({})\n", list.join(" ")))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the C compiler (the linker driver rustc uses) finds `file`.
fn find_archive(file: &str) -> Result<PathBuf, String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg(format!("-print-file-name={file}"))
        .output()
        .map_err(|e| format!("cannot run {cc}: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Not found, the compiler echoes the bare name back.
    if path.is_absolute() && path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{cc} does not know {file} (static glibc not installed)"
        ))
    }
}
