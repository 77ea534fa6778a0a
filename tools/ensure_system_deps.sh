#!/bin/sh
# Make sure the system packages the test suite needs are installed: Debian's
# redis-server and redis-tools (the tests start their own Redis servers and a
# Redis Cluster; the redis-py client alone is not enough) and prometheus (its
# promtool checks the alert rules, and one test scrapes a real engine) and
# postgresql (the row-lock baseline of `bench rowlock` and its test start their
# own PostgreSQL server).
#
# Idempotent and silent when everything is there. When something is missing it
# installs it with apt-get if it can (root, apt-get present), and otherwise says
# what to install and fails, so that `make test` never runs a suite that would
# only fail later for a missing binary.
set -eu

# binary:package pairs
NEEDED="redis-server:redis-server redis-cli:redis-tools promtool:prometheus prometheus:prometheus"

# Debian installs PostgreSQL's server binaries under /usr/lib/postgresql/<version>/bin,
# not on PATH: look for initdb there.
have_postgres() {
    for bindir in /usr/lib/postgresql/*/bin; do
        [ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ] && [ -x "$bindir/pg_isready" ] && return 0
    done
    return 1
}

missing_packages() {
    for pair in $NEEDED; do
        binary=${pair%%:*}
        package=${pair#*:}
        command -v "$binary" >/dev/null 2>&1 || printf '%s ' "$package"
    done
    have_postgres || printf '%s ' postgresql
}

missing=$(missing_packages)
missing=${missing% }
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_system_deps: missing system packages: $missing" >&2
    echo "ensure_system_deps: install them (Debian/Ubuntu: sudo apt-get install -y $missing)" >&2
    echo "ensure_system_deps: or run make test as root on a Debian-based system, which installs them" >&2
    exit 1
fi

echo "ensure_system_deps: installing $missing" >&2
# Only the binaries are wanted: the tests start Redis, Prometheus and PostgreSQL
# themselves on free ports. A policy-rc.d that says "no" keeps the packages from
# starting (and leaving running) a system Redis on port 6379 or a system
# PostgreSQL cluster on 5432; an existing one is left as it is.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # $missing is a list of package names
apt-get install -y -qq --no-install-recommends $missing >/dev/null

still_missing=$(missing_packages)
still_missing=${still_missing% }
if [ -n "$still_missing" ]; then
    echo "ensure_system_deps: still missing after apt-get install: $still_missing" >&2
    exit 1
fi
