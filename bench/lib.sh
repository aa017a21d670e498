# Shell helpers the bench scripts share; source it.

# listen_addr ERR_FILE: the first "Listening on port 127.0.0.1:PORT" a
# `ringway serve` wrote to ERR_FILE, waiting up to 10 s; prints the
# address, or the file and fails if none came.
listen_addr() {
    local addr=
    for _ in $(seq 1 100); do
        addr=$(grep -o 'Listening on port 127.0.0.1:[0-9]*' "$1" | head -1 | sed 's/Listening on port //') || true
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.1
    done
    echo "gateway did not start:" >&2
    cat "$1" >&2
    return 1
}

# release_bins ROOT: builds the workspace in release unless SKIP_BUILD=1,
# then sets rw (ringway) and sg (ringway-signins).
release_bins() {
    [ "${SKIP_BUILD:-0}" = 1 ] || (cd "$1" && cargo build --release --workspace)
    rw=$1/target/release/ringway
    sg=$1/target/release/ringway-signins
}
