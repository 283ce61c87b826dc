# backup BIN BACKUP: TiUP's backup of an instance's bin/ (`bin.old.<cluster version>`), made
# once and kept if it exists. The copy is made under a temporary name and renamed, so a copy
# cut short (a full disk, a killed run) never passes for the backup, and what it left goes.
set -e
bin=$1 backup=$2
partial=$backup.partial
if [ ! -d "$backup" ]; then
    rm -rf "$partial"
    if ! cp -rp "$bin" "$partial"; then
        rm -rf "$partial"
        printf 'could not back up %s to %s\n' "$bin" "$backup" >&2
        exit 1
    fi
    mv -T "$partial" "$backup"
fi
