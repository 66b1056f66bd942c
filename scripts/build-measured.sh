# Sourced by bench.sh and instructions.sh: builds what they measure and sets BIN_DIR to the folder
# holding `careguard` (and `examples/passthrough`). Reads ROOT, PGO (1: the profile-guided build
# of pgo-build.sh), CAREGUARD_GUARD (none: the pass-through example too) and CARGO_FLAGS.
build_measured() {
    local pgo_dir="$ROOT/target/pgo" targets="--bin careguard" plain=""
    if [[ "${CAREGUARD_GUARD:-}" == none ]]; then
        pgo_dir="$ROOT/target/pgo-passthrough"
        targets="--bin careguard --example passthrough"
        plain="--example passthrough"
    fi
    if [[ "${PGO:-}" == 1 ]]; then
        # Both PGO builds must build the same targets (see pgo-build.sh), hence a folder per set.
        PGO_DIR="$pgo_dir" PGO_TARGETS="$targets" bash "$ROOT/scripts/pgo-build.sh"
        BIN_DIR="$pgo_dir/use/release"
    else
        # shellcheck disable=SC2086 # CARGO_FLAGS and plain are word lists
        cargo build --release ${CARGO_FLAGS:+$CARGO_FLAGS} --manifest-path "$ROOT/Cargo.toml" $plain
        BIN_DIR="$ROOT/target/release"
    fi
}
