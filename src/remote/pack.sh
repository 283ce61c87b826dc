# pack DIR: the tree in DIR (a rollback point, TiUP's backup, what a run cut short left)
# without its .manifest and .added, as a gzipped tar on stdout: the package a rollback runs.
set -e -o pipefail
cd "$1"
find . -mindepth 1 -maxdepth 1 ! -name .manifest ! -name .added -printf '%P\0' |
    tar --null -T - -czf -
