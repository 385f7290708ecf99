//! The RUSTFLAGS check of `build.rs` (whether rustc still links with its lld), in its own file so that
//! `tests/link.rs` can test it: a build script has no tests of its own.

/// `Err` when these rustc flags (`CARGO_ENCODED_RUSTFLAGS`, split) may move the link away from rustc's
/// lld driven by `cc`, for which `build.rs` writes its `-Wl,` arguments. Conservative, as an `Err` only
/// costs the plain link: any `-C linker=` (even `rust-lld`, which is not driven by `cc`), a linker flavour
/// other than `gnu-lld-cc` and a `-fuse-ld=` other than lld count as another linker;
/// `linker-features=-lld` and `link-self-contained=-linker` are the opt-outs back to the system linker
/// (they mention lld, so a substring test would take them for it).
pub(crate) fn other_linker<'a>(flags: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut flags = flags;
    while let Some(f) = flags.next() {
        // `-C key=value` / `-Z key=value` or `-Ckey=value` / `-Zkey=value`.
        let opt = match f {
            "-C" | "-Z" | "--codegen" => flags.next().unwrap_or(""),
            _ => f
                .strip_prefix("-C")
                .or_else(|| f.strip_prefix("-Z"))
                .or_else(|| f.strip_prefix("--codegen="))
                .unwrap_or(""),
        };
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        let refused = match key {
            "linker-features" => value.split(',').any(|v| v == "-lld"),
            "link-self-contained" => value
                .split(',')
                .any(|v| v == "-linker" || v == "n" || v == "no"),
            "linker" => true,
            "linker-flavor" => value != "gnu-lld-cc",
            "link-arg" | "link-args" => value
                .split_whitespace()
                .filter_map(|a| a.strip_prefix("-fuse-ld="))
                .any(|l| l != "lld"),
            _ => false,
        };
        if refused {
            return Err(format!("RUSTFLAGS choose the linker: {opt}"));
        }
    }
    Ok(())
}
