# kept PREVIOUS POINTS SHA7 BINARY: where an earlier run of the package SHA7 kept what it
# replaced in bin/: its staging dir's previous/ (PREVIOUS, when it holds the binary, BINARY
# relative to it: a run cut short), else its newest rollback point (POINTS/*-SHA7: an
# --offline run keeps one at once). Says `kept<TAB>DIR`, or nothing.
previous=$1 points=$2 sha7=$3 binary=$4
if [ -f "$previous/$binary" ] && [ ! -L "$previous/$binary" ]; then
    printf 'kept\t%s\n' "$previous"
    exit 0
fi
newest=$(find "$points" -mindepth 1 -maxdepth 1 -name "*-$sha7" 2>/dev/null | sort | tail -n 1)
if [ -n "$newest" ]; then
    printf 'kept\t%s\n' "$newest"
fi
