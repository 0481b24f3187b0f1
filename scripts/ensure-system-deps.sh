#!/usr/bin/env bash
# Installs the PostgreSQL server and pg_cron from Debian's packages when they are
# missing and we may install (root). Without root it only says what is missing: the
# suite then runs without pg_cron (tests that need it are skipped and say why).
set -euo pipefail

have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
major() { ls -d /usr/lib/postgresql/*/ 2>/dev/null | sed 's#.*/postgresql/\([0-9]*\)/#\1#' | sort -n | tail -1; }
have_cron() { [ -n "$(major)" ] && [ -f "/usr/lib/postgresql/$(major)/lib/pg_cron.so" ]; }

need=()
have_server || need+=("postgresql" "postgresql-contrib")
if have_server; then
  have_cron || need+=("postgresql-$(major)-cron")
fi

if [ ${#need[@]} -eq 0 ] && have_cron; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-system-deps: missing ${need[*]:-pg_cron}; not root, so not installing (sudo make setup to install)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ! have_server; then
  apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
have_cron || apt-get install -y -qq "postgresql-$(major)-cron" >/dev/null
# Debian's package may auto-start a system cluster on 5432; skene-pg never uses it.
echo "ensure-system-deps: PostgreSQL $(major) with pg_cron ready" >&2
