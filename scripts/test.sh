#!/usr/bin/env bash
# The one command that runs every test of p2p-lab (the README's second command; .ci/run runs exactly this).
#
# 1. installs the Debian packages the tests need (scripts/apt-packages.txt) when they are missing,
# 2. checks formatting and clippy,
# 3. builds every binary (the multi-process tests start them),
# 4. runs the whole test suite (cargo-nextest when installed, else cargo test), doc tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

install_packages() {
    local pkgs missing=() p
    pkgs=$(sed -e 's/#.*//' scripts/apt-packages.txt | tr -s ' \t' '\n' | sed '/^$/d')
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # Keep package scripts from starting services (nginx, opentracker) on install: tests start their own.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        created_policy=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ -n "$created_policy" ] && $sudo rm -f "$policy"
    return 0
}

install_packages

# A one-shot build gains nothing from incremental state (2.8 GB of it on a fresh clone).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Show how much disk the build may use: a full disk kills the linker with SIGBUS, not a clear error.
df -h "$PWD" | tail -n 1 | awk '{print "==> free disk for target/: " $4}'

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "building every binary"
cargo build --workspace --bins --locked

log "running the test suite"
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first, so the suite's closing line is nextest's summary of every test.
    cargo test --workspace --doc --locked
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
du -sh target 2>/dev/null | awk '{print "==> target/ size: " $1}' || true
