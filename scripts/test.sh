#!/usr/bin/env bash
# Installs what is missing, then runs every test: unit tests, the storage suite against the dev
# server and against moto, and the file system tests that mount through /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_packages
ensure_moto

# Tests start their own dev servers and moto processes on free loopback ports. They need the
# dev server and the test doubles (Cargo.toml's features), which `cargo test` gets anyway
# through the package's dev-dependency on itself; named here so that the command says so.
cargo test --all-targets --features devserver,test-doubles "$@"
# A short soak on a real mount (the full one: scripts/soak.sh): the test build's binaries.
SCRIBEFS_BIN_DIR=target/debug scripts/soak.sh --short
