# unpack STAGING REFERENCE ENTRY TAR_FLAGS FLUSH: unpacks the package arriving on stdin (`tar
# TAR_FLAGS`: -xf or -xzf) into STAGING/tree (what an earlier unpack left there goes first;
# STAGING/previous stays), owns it like REFERENCE, lists and hashes it (and with FLUSH `flush`
# writes it to disk: see list_tree), and says the version of its ENTRY.
set -e
staging=$1 reference=$2 entry=$3 tar_flags=$4 flush=$5
tree=$staging/tree
rm -rf "$tree"
mkdir -p "$tree"
tar --no-same-owner "$tar_flags" - -C "$tree"
list_tree "$tree" "$reference" "$flush"
version_of "$tree/$entry"
