#!/usr/bin/env bash
# Installs the PostgreSQL server, pg_cron and PgBouncer from Debian's packages when
# they are missing and we may install (root). Without root it only says what is
# missing: the suite then runs without them (the pg_cron and PgBouncer tests are
# skipped and say why).
set -euo pipefail

have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
major() { ls -d /usr/lib/postgresql/*/ 2>/dev/null | sed 's#.*/postgresql/\([0-9]*\)/#\1#' | sort -n | tail -1; }
have_cron() { [ -n "$(major)" ] && [ -f "/usr/lib/postgresql/$(major)/lib/pg_cron.so" ]; }
# Debian puts it in /usr/sbin, which is not on every user's PATH
have_pgbouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }

need=()
have_server || need+=("postgresql" "postgresql-contrib")
if have_server; then
  have_cron || need+=("postgresql-$(major)-cron")
fi
have_pgbouncer || need+=("pgbouncer")

if [ ${#need[@]} -eq 0 ] && have_cron; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-system-deps: missing ${need[*]:-pg_cron}; not root, so not installing (sudo make setup to install)" >&2
  exit 0
fi

# The tests start their own pgbouncer; Debian would start its system service on
# install. A policy-rc.d answering 101 ("not allowed") keeps it off, unless the
# machine has a policy of its own, which is then left to decide.
install_without_starting() {
  local policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    apt-get install -y -qq "$@" >/dev/null
    return
  fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  local status=0
  apt-get install -y -qq "$@" >/dev/null || status=$?
  rm -f "$policy"
  return "$status"
}

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ! have_server; then
  apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
have_cron || apt-get install -y -qq "postgresql-$(major)-cron" >/dev/null
have_pgbouncer || install_without_starting pgbouncer
# Debian's package may auto-start a system cluster on 5432; skene-pg never uses it.
echo "ensure-system-deps: PostgreSQL $(major) with pg_cron, and PgBouncer, ready" >&2
