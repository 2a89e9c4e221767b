# Start a throw-away PostgreSQL server for the catalog tests (spfluo/tests/catalog).
#
# Source it from bash (`. spfluo/tests/catalog/postgres.sh`): it installs Debian's
# `postgresql` package when no server is installed (root only), creates a cluster
# in a temporary folder on a free local port, creates the user and database
# `spfluo_test`, exports SPFLUO_TEST_POSTGRES_URL for the tests, and stops the
# server and removes the folder when the calling shell exits.  The user may create
# databases: each parallel test process (pytest-xdist) uses its own, spfluo_test_gwN.  When any step
# fails it prints why and leaves SPFLUO_TEST_POSTGRES_URL unset: the PostgreSQL
# tests then skip with that message, and everything else runs as usual.

_spfluo_pg_start() {
    local bin port dir run pyexe
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "catalog tests: installing Debian's postgresql server"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
            >/dev/null 2>&1 || { echo "catalog tests: apt-get install postgresql failed"; return 1; }
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
    [ -n "$bin" ] || { echo "catalog tests: no PostgreSQL server installed (Debian package postgresql)"; return 1; }
    run=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || { echo "catalog tests: no 'postgres' user"; return 1; }
        run=(runuser -u postgres --)
    fi
    pyexe=$(command -v python3 || command -v python)
    port=$("$pyexe" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') \
        || return 1
    dir=$(mktemp -d /tmp/spfluo-pg.XXXXXX) || return 1
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    "${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { echo "catalog tests: initdb failed (see $dir/initdb.log)"; return 1; }
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
        || { echo "catalog tests: the PostgreSQL server did not start (see $dir/server.log)"; return 1; }
    SPFLUO_PG_STOP="${run[*]} $bin/pg_ctl -D $dir/data -m fast -w stop >/dev/null 2>&1; rm -rf $dir"
    trap 'eval "$SPFLUO_PG_STOP"' EXIT
    "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE USER spfluo_test PASSWORD 'spfluo_test' CREATEDB" \
        -c "CREATE DATABASE spfluo_test OWNER spfluo_test" >/dev/null \
        || { echo "catalog tests: could not create the test database"; return 1; }
    export SPFLUO_TEST_POSTGRES_URL="postgresql://spfluo_test:spfluo_test@127.0.0.1:$port/spfluo_test"
    echo "catalog tests: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at 127.0.0.1:$port"
}

if [ -z "${SPFLUO_TEST_POSTGRES_URL:-}" ]; then
    _spfluo_pg_start || echo "catalog tests: the PostgreSQL tests will be skipped"
fi
