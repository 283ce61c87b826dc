# facts DEPLOY BINARY BACKUP ROLLBACKS ENTRY_SIZE ENTRY_SHA256 SCOPE SERVICE [KIND PATH WANT]...: what
# preflight needs of an instance, in one round trip. Says `deploy<TAB>missing` and stops when
# DEPLOY is not there; `unit<TAB>missing` when SCOPE (`system` or `user`; empty: not asked)
# does not know SERVICE; the free space and file system of DEPLOY (`free`, KiB; `fs`); what
# TiUP's backup of bin/ will take while BACKUP is still to be made (`backup`, KiB); what the
# rollback points in DEPLOY/ROLLBACKS take (`rollbacks`, KiB); then `binary<TAB>missing` and
# stops when BINARY is not there, else its `size`. Only when that is ENTRY_SIZE (the package
# binary's size) is it hashed (`sha256`), and only when that is ENTRY_SHA256 (it is the
# package's binary) is each of the package's other files and links (KIND `file`, `link` or
# `dir`; PATH relative to bin/; WANT its sha256, its link target, or `-`) that bin/ does not
# hold as the package has it named (`differs<TAB>PATH`): a large file is hashed only when it
# can decide anything. Last, what BINARY says to -V (`version`).
deploy=$1 binary=$2 backup=$3 rollbacks=$4 entry_size=$5 entry_sha256=$6 scope=$7 service=$8
shift 8
if [ ! -d "$deploy" ]; then
    printf 'deploy\tmissing\n'
    exit 0
fi
if [ -n "$scope" ]; then
    # systemd's `status` exits 4 for a unit it does not know (3 for one not running). No
    # journal lines: on a host with a large journal, reading them is what takes time.
    if [ "$scope" = user ]; then
        systemctl --user status --no-pager --lines=0 "$service" >/dev/null 2>&1
    else
        systemctl status --no-pager --lines=0 "$service" >/dev/null 2>&1
    fi
    if [ $? -eq 4 ]; then
        printf 'unit\tmissing\n'
    fi
fi
printf 'free\t%s\n' "$(df -Pk "$deploy" | awk 'NR==2 {print $4}')"
printf 'fs\t%s\n' "$(stat -c %d "$deploy")"
if [ ! -d "$backup" ]; then
    printf 'backup\t%s\n' "$(du -sk "$deploy/bin" 2>/dev/null | cut -f1)"
fi
printf 'rollbacks\t%s\n' "$(du -sk "$deploy/$rollbacks" 2>/dev/null | cut -f1)"
if [ ! -f "$binary" ]; then
    printf 'binary\tmissing\n'
    exit 0
fi
size=$(stat -c %s "$binary")
printf 'size\t%s\n' "$size"
if [ "$size" = "$entry_size" ]; then
    sha256=$(sha256_of "$binary")
    printf 'sha256\t%s\n' "$sha256"
fi
if [ "$size" = "$entry_size" ] && [ "$sha256" = "$entry_sha256" ]; then
    while [ $# -ge 3 ]; do
        path=$deploy/bin/$2
        case $1 in
            file) [ -f "$path" ] && [ ! -L "$path" ] && [ "$(sha256_of "$path")" = "$3" ] ;;
            link) [ -L "$path" ] && [ "$(readlink "$path")" = "$3" ] ;;
            *) [ -d "$path" ] ;;
        esac || printf 'differs\t%s\n' "$2"
        shift 3
    done
fi
version_of "$binary"
