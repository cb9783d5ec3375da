#!/bin/sh
# Regenerates the man pages and shell completions from the clap definitions.
# Run after changing a command, a flag or its help; tests/packaging.rs fails
# until the committed copies match.
set -eu
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/callwarden
rm -rf packaging/man
"$bin" generate man packaging/man
mkdir -p packaging/completions
"$bin" generate completions bash > packaging/completions/callwarden.bash
"$bin" generate completions zsh > packaging/completions/_callwarden
"$bin" generate completions fish > packaging/completions/callwarden.fish
