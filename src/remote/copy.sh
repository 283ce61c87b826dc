# copy FROM_STAGING STAGING REFERENCE: copies a tree verified in another instance's staging
# dir on the same host into STAGING/tree, then owns, lists and hashes it as unpack does.
set -e
from=$1/tree staging=$2 reference=$3
tree=$staging/tree
rm -rf "$tree"
mkdir -p "$staging"
cp -a "$from" "$tree"
list_tree "$tree" "$reference"
