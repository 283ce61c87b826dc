# cleanup KIND PATH [KIND PATH]...: removes, for each pair, PATH itself (KIND `dir`), or every
# staging dir in the deploy dir PATH (KIND `staging`: PATH/bin.patch-*).
set -e
while [ $# -ge 2 ]; do
    case $1 in
        dir) rm -rf -- "$2" ;;
        staging) rm -rf -- "$2"/bin.patch-* ;;
        *)
            echo "cleanup: no such kind: $1" >&2
            exit 2
            ;;
    esac
    shift 2
done
