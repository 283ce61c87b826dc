# swap BIN STAGING COUNT PATH...: run with the service stopped (or --offline). The first COUNT
# paths are the package's files and links, the others files a rollback takes away (what the
# patch it takes back added). Keeps in STAGING/previous what the package replaces in BIN and
# the files to take away (hard links, so free), notes in previous/.added what it adds, then
# moves the files and links of STAGING/tree into BIN and deletes the files to take away. A
# directory in BIN where the package has a file stops it before anything moved (exit 3).
set -e
bin=$1 tree=$2/tree previous=$2/previous count=$3
shift 3
rm -rf "$previous"
mkdir -p "$previous"
: >"$previous/.added"

# is_moved N: whether the Nth path is one of the package's.
is_moved() {
    [ "$1" -le "$count" ]
}

n=0
for path in "$@"; do
    n=$((n + 1))
    if is_moved "$n" && [ -d "$bin/$path" ] && [ ! -L "$bin/$path" ]; then
        echo "$bin/$path is a directory" >&2
        exit 3
    fi
done

keep() {
    mkdir -p "$previous/$(dirname "$1")"
    ln -P "$bin/$1" "$previous/$1" 2>/dev/null || cp -a "$bin/$1" "$previous/$1"
}

n=0
for path in "$@"; do
    n=$((n + 1))
    if is_moved "$n"; then
        if [ -e "$bin/$path" ] || [ -L "$bin/$path" ]; then
            keep "$path"
        else
            printf '%s\n' "$path" >>"$previous/.added"
        fi
    elif [ -f "$bin/$path" ] || [ -L "$bin/$path" ]; then
        keep "$path"
    fi
done

n=0
for path in "$@"; do
    n=$((n + 1))
    if is_moved "$n"; then
        mkdir -p "$bin/$(dirname "$path")"
        mv -f "$tree/$path" "$bin/$path"
    elif [ -e "$previous/$path" ] || [ -L "$previous/$path" ]; then
        rm -f "$bin/$path"
    fi
done
