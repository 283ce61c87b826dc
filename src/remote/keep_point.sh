# keep_point PREVIOUS POINTS STAMP MANIFEST BINARY KEEP DEPLOY: after a patch, what it replaced
# in bin/ (PREVIOUS, the staging dir's previous/) becomes the rollback point POINTS/STAMP, with a
# .manifest: MANIFEST, then the sha256 of what ran before (BINARY, relative to the point).
# Only the newest KEEP points stay. Says `binary<TAB>SHA256` of what ran before, and
# `kept<TAB>POINT` when the point is there. Then the instance is done with its staging dirs
# (DEPLOY/bin.patch-*, this run's and any an earlier run left): they go, and it says
# `cleaned<TAB>DEPLOY`.
set -e
previous=$1 points=$2 point=$2/$3 manifest=$4 binary=$2/$3/$5 keep=$6 deploy=$7
if [ -d "$previous" ]; then
    mkdir -p "$points"
    mv "$previous" "$point"
    printf '%s' "$manifest" >"$point/.manifest"
    if [ -f "$binary" ]; then
        sha256=$(sha256_of "$binary")
        printf 'binary %s\n' "$sha256" >>"$point/.manifest"
        printf 'binary\t%s\n' "$sha256"
    fi
    find "$points" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -r | tail -n +"$((keep + 1))" |
        while IFS= read -r old; do
            rm -rf "${points:?}/$old"
        done
    if [ -d "$point" ]; then
        printf 'kept\t%s\n' "$point"
    fi
fi
rm -rf -- "$deploy"/bin.patch-*
printf 'cleaned\t%s\n' "$deploy"
