# Functions every script may use: sent ahead of each script, as one program.

# tagged KEY: each line of stdin as `KEY<TAB>line`, the one format scripts answer in.
tagged() {
    awk -v key="$1" '{ print key "\t" $0 }'
}

# sha256_of FILE: the sha256 of FILE, in hex, with the fastest tool the host has (OpenSSL
# uses the CPU's SHA instructions, coreutils' sha256sum does not: 0.23 s against 0.93 s for
# 256 MiB on one x86-64 core).
sha256_of() {
    if command -v openssl >/dev/null 2>&1; then
        openssl dgst -sha256 -r "$1" | cut -d' ' -f1
    else
        sha256sum "$1" | cut -d' ' -f1
    fi
}

# version_of BINARY: what `BINARY -V` says, then `exit status N`, as `version` lines. Bounded:
# a binary still running after 10 s is killed with its process group (`timeout` leads one;
# whatever survived a TERM gets a KILL a second later, and says `exit status 124`), and at
# most 4 KiB of its answer is read. Also under `set -e`: its status is said, not fatal.
version_of() {
    {
        timeout -k 1 10 "$1" -V 2>&1 </dev/null && status=0 || status=$?
        echo "exit status $status"
    } | head -c 4096 | tagged version
}

# list_tree TREE REFERENCE FLUSH: owns TREE like REFERENCE (never through a link), then says
# every entry (`entry<TAB>type<TAB>size<TAB>mode<TAB>path<TAB>link target`) and every regular
# file's sha256 (`sha<TAB><sum> ./path`), each byte read once. With FLUSH `flush`, TREE's files
# are also written to disk, beside the hashing: a roll swaps them in with the service stopped,
# and ext4 writes out a file renamed over another at the rename, which would then keep the
# service down longer; the binary swapped in is also on disk should the host lose power.
# (`sync -d FILE` needs coreutils 8.24; an older one refuses -d and syncs nothing, as before.)
list_tree() {
    flushing=
    if [ "$3" = flush ]; then
        find "$1" -type f -exec sync -d -- {} + 2>/dev/null &
        flushing=$!
    fi
    chown -hR --reference="$2" "$1"
    (
        cd "$1" || exit 1
        find . -mindepth 1 -printf 'entry\t%y\t%s\t%m\t%P\t%l\n'
        if command -v openssl >/dev/null 2>&1; then
            find . -type f -exec openssl dgst -sha256 -r {} + | tagged sha
        else
            find . -type f -exec sha256sum {} + | tagged sha
        fi
    ) || return
    if [ -n "$flushing" ]; then
        wait "$flushing" || true
    fi
}

# release_of BINARY SECTION: the release and git hash BINARY says to -V, as `SECTION.release`
# and `SECTION.hash` lines.
release_of() {
    version_of "$1" | awk -F '\t' -v section="$2" '
        sub(/^Release Version: */, "", $2) { print section ".release\t" $2 }
        sub(/^Git Commit Hash: */, "", $2) { print section ".hash\t" $2 }'
}
