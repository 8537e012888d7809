# Shared by the example scripts of Provisor's shellscripts module (sourced, not run).
#
# One service = one Linux user with a home directory (and a disk quota when the tariff's
# item settings say {"quota_mb": N}). The user is named <USER_PREFIX><service id> and
# carries the service's mark, "<OWNER_TAG>/service-<id>" (a comment cannot hold ":"), in its comment (GECOS) field:
# a run finds the user again by its name and takes over what carries its mark (an earlier
# run for the same operation was cut off), and refuses a user it did not make.
#
# Settings (the module's "environment" setting, NAME=value lines):
#   USER_PREFIX  start of the user names (default "svc": svc42)
#   OWNER_TAG    the mark's tag (default "provisor"); one per Provisor sharing this server
#   HOME_BASE    where homes are made (default /home)
#   USER_SHELL   the users' shell (default /bin/bash, else /bin/sh)
#   SERVER_IP    shown to the client as "ip" (default: this server's first address)
#   PANEL_URL    shown to the client as "panel_url", an http(s) address: your web panel
#                or file manager (default https://<SERVER_IP>/)
#   LOCK_DIR     where the per-service lock files go (default /run/lock, else /tmp)
#
# Exit codes, as Provisor reads them: 0 done (JSON on standard output), 75 try again
# later (EX_TEMPFAIL), anything else: a person has to look (standard error says why).

set -eu
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

: "${PROVISOR_OPERATION:?run by Provisor: PROVISOR_OPERATION is not set}"
PREFIX="${USER_PREFIX:-svc}"
TAG="${OWNER_TAG:-provisor}"
HOME_BASE="${HOME_BASE:-/home}"

fail() { echo "$*" >&2; exit 1; }    # permanent: a person has to look
later() { echo "$*" >&2; exit 75; }  # temporary: Provisor retries after its delay

if [ -n "${PROVISOR_SERVICE_ID:-}" ]; then
    user="${PREFIX}${PROVISOR_SERVICE_ID}"
    mark="${TAG}/service-${PROVISOR_SERVICE_ID}"
fi

# one run at a time per service: a run of a cut-off attempt may still be going
lock() {
    dir="${LOCK_DIR:-/run/lock}"
    [ -d "$dir" ] && [ -w "$dir" ] || dir=/tmp
    exec 9>"$dir/provisor-$1.lock" || later "cannot open the lock file in $dir"
    flock -w 20 9 || later "another run for $1 still holds its lock"
}

# the comment (GECOS) field of a user, or nothing when there is no such user
comment_of() { getent passwd "$1" | cut -d: -f5; }

exists() { getent passwd "$1" >/dev/null 2>&1; }

# stop unless the user carries this service's mark (prints nothing when it is ours)
must_be_ours() {
    found="$(comment_of "$1")"
    [ "$found" = "$mark" ] || fail "the user $1 exists with the comment '$found', not '$mark': it is not this service's, left alone"
}

# the filesystem holding the homes (its mount point)
home_filesystem() { df -P "$HOME_BASE" | awk 'NR == 2 { print $6 }'; }

# give the user the tariff's quota (PROVISOR_ITEM_QUOTA_MB, 0 or unset: none)
apply_quota() {
    mb="${PROVISOR_ITEM_QUOTA_MB:-0}"
    case "$mb" in ''|*[!0-9]*) fail "quota_mb must be a whole number of MB, not '$mb'" ;; esac
    if [ "$mb" -eq 0 ]; then
        if command -v setquota >/dev/null 2>&1 && quotaon -pu "$(home_filesystem)" 2>/dev/null | grep -q ' is on'; then
            setquota -u "$1" 0 0 0 0 "$(home_filesystem)" || later "setquota failed for $1"
        fi
        return 0
    fi
    command -v setquota >/dev/null 2>&1 || fail "setquota is not installed (Debian: apt-get install quota)"
    kb=$((mb * 1024))
    setquota -u "$1" "$kb" "$kb" 0 0 "$(home_filesystem)" \
        || fail "setquota refused $mb MB for $1 on $(home_filesystem): are user quotas on there?"
}

# a JSON string (the values here are names, paths and generated passwords)
json() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }

server_ip() {
    if [ -n "${SERVER_IP:-}" ]; then echo "$SERVER_IP"; return; fi
    hostname -I 2>/dev/null | awk '{ print $1 }'
}
