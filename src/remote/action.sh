# action STAGING ACTION: notes in STAGING/action what the run that stages there is for (patch
# or rollback): a rollback cut short is then told apart from a patch cut short.
set -e
mkdir -p "$1"
printf '%s\n' "$2" >"$1/action"
