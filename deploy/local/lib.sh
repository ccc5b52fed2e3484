# Shared by deploy/local/up and deploy/local/test: install what a fresh machine lacks.
# shellcheck shell=bash

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

have_postgres_server() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

# The PostgreSQL server binaries: `crm up` and the tests start a private cluster from them when no
# server answers on 127.0.0.1:5432.
ensure_postgres_server() {
  if ! have_postgres_server; then
    echo "==> installing the PostgreSQL server package"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs); it is not installed on this machine" >&2
    exit 1
  fi
}

# Starts the machine's own cluster when one is installed but stopped. Optional: without it the
# tests start a private cluster themselves.
start_local_cluster_if_stopped() {
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    return 0
  fi
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | while read -r ver name port status _; do
      if [ "$port" = 5432 ] && [ "$status" != online ]; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start || true
      fi
    done
  fi
}
