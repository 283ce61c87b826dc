# survey DEPLOY COMPONENT VERSION ROLLBACKS: what an instance could go back to. What it runs
# (`running.release`, `.hash`, `.binary`: its sha256); its newest rollback point in
# DEPLOY/ROLLBACKS (`point.dir`, a `point.<key>` per line of its .manifest, `point.added` per
# file its patch added); TiUP's backup bin.old.VERSION (`original.binary`, `.release`,
# `.hash`) and each file of bin/ the backup lacks (`extra`); and what a run cut short left
# (`cut.dir`, `.binary`, `.release`, `.hash`, `.added`): the binary its swap replaced (its
# staging dir's previous/), or, with no swap made, what bin/ has.
deploy=$1 comp=$2 version=$3 points=$1/$4
installed=$deploy/bin/$comp/$comp
original_dir=$deploy/bin.old.$version
original=$original_dir/$comp/$comp

release_of "$installed" running
if [ -f "$installed" ]; then
    printf 'running.binary\t%s\n' "$(sha256_of "$installed")"
fi

newest=$(find "$points" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -r | head -n 1)
if [ -n "$newest" ] && [ -f "$points/$newest/.manifest" ]; then
    printf 'point.dir\t%s\n' "$points/$newest"
    awk '{ key = $1; sub(/^[^ ]* ?/, ""); print "point." key "\t" $0 }' "$points/$newest/.manifest"
    if [ -f "$points/$newest/.added" ]; then
        tagged point.added <"$points/$newest/.added"
    fi
fi

if [ -f "$original" ]; then
    printf 'original.binary\t%s\n' "$(sha256_of "$original")"
    release_of "$original" original
fi
if [ -d "$original_dir" ]; then
    (cd "$deploy/bin" && find . -mindepth 1 ! -type d -printf '%P\n') |
        while IFS= read -r file; do
            if [ ! -e "$original_dir/$file" ] && [ ! -L "$original_dir/$file" ]; then
                printf 'extra\t%s\n' "$file"
            fi
        done
fi

found='' patches=''
for staging in "$deploy"/bin.patch-*; do
    [ -d "$staging" ] || continue
    # A rollback's staging dir says so; older ones say nothing, and were patches.
    [ "$(cat "$staging/action" 2>/dev/null || echo patch)" = patch ] || continue
    patches=1
    previous=$staging/previous
    if [ -z "$found" ] && [ -f "$previous/$comp/$comp" ]; then
        found=1
        printf 'cut.dir\t%s\n' "$previous"
        printf 'cut.binary\t%s\n' "$(sha256_of "$previous/$comp/$comp")"
        release_of "$previous/$comp/$comp" cut
        if [ -f "$previous/.added" ]; then
            tagged cut.added <"$previous/.added"
        fi
    fi
done
if [ -z "$found" ] && [ -n "$patches" ]; then
    printf 'cut.dir\t%s\n' "$deploy/bin"
    printf 'cut.binary\t%s\n' "$(sha256_of "$installed")"
    release_of "$installed" cut
fi
