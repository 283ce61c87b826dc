# copy FROM_STAGING STAGING REFERENCE FLUSH: copies a tree verified in another instance's
# staging dir on the same host into STAGING/tree, then owns, lists and hashes it (and flushes
# it) as unpack does.
set -e
from=$1/tree staging=$2 reference=$3 flush=$4
tree=$staging/tree
rm -rf "$tree"
mkdir -p "$staging"
cp -a "$from" "$tree"
list_tree "$tree" "$reference" "$flush"
