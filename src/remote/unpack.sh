# unpack STAGING REFERENCE ENTRY TAR_FLAGS: unpacks the package arriving on stdin (`tar
# TAR_FLAGS`: -xf or -xzf) into STAGING/tree (what an earlier unpack left there goes first;
# STAGING/previous stays), writes it to disk, owns it like REFERENCE, lists and hashes it, and
# says the version of its ENTRY.
set -e
staging=$1 reference=$2 entry=$3 tar_flags=$4
tree=$staging/tree
rm -rf "$tree"
mkdir -p "$tree"
tar --no-same-owner "$tar_flags" - -C "$tree"
# To disk now, beside the hashing, not at the swap: ext4 writes out a file renamed over another
# then, and a roll swaps with the service stopped. A binary swapped in is then also on disk,
# should the host lose power. (`sync -d FILE` needs coreutils 8.24; an older one refuses -d and
# syncs nothing, as before.)
find "$tree" -type f -exec sync -d -- {} + 2>/dev/null &
flushing=$!
list_tree "$tree" "$reference"
wait "$flushing" || true
version_of "$tree/$entry"
