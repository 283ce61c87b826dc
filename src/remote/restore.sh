# restore BIN PREVIOUS PATH...: puts back what swap replaced or took away, kept in PREVIOUS (a
# staging dir's previous/, or the rollback point it became), and removes what it added (listed
# in PREVIOUS/.added); does nothing where the swap did not get to keep anything.
set -e
bin=$1 previous=$2
shift 2
for path in "$@"; do
    if [ -e "$previous/$path" ] || [ -L "$previous/$path" ]; then
        mv -f "$previous/$path" "$bin/$path"
    fi
done
if [ -f "$previous/.added" ]; then
    while IFS= read -r path; do
        rm -f "$bin/$path"
    done <"$previous/.added"
fi
