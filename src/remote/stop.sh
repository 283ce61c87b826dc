# stop SCOPE UNIT: stops UNIT (SCOPE: `system`, or `user` for a user unit), then says what
# systemd says of it now (`state<TAB>active`, `inactive`, `failed`...).
scope=$1 unit=$2
if [ "$scope" = user ]; then
    set -- --user
else
    set --
fi
systemctl "$@" stop "$unit" || exit
printf 'state\t%s\n' "$(systemctl "$@" is-active "$unit")"
