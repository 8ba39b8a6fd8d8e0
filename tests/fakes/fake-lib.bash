#!/usr/bin/env bash
# Shared by the recording fakes of mysqlsh, mysql and aws used by tests/tests/db_scripts.rs.
# A node's state lives in $FAKE_MYSQL_ROOT/<host>/{state,role,group,cluster,gtid}; every
# call is appended to $FAKE_MYSQL_ROOT/calls.log (argv only: secrets must never be there).
set -euo pipefail

readonly root="${FAKE_MYSQL_ROOT:?FAKE_MYSQL_ROOT is not set}"

record() {
  printf '%s\n' "$*" >>"$root/calls.log"
}

# 127.0.0.1 is the node the script runs on.
node_dir() {
  local host="$1"
  [[ "$host" == "127.0.0.1" || "$host" == "localhost" ]] && host="${FAKE_NODE_HOST:?}"
  mkdir -p "$root/$host"
  printf '%s' "$root/$host"
}

read_attr() {
  cat "$1/$2" 2>/dev/null || true
}

write_attr() {
  printf '%s' "$3" >"$1/$2"
}

check_password() {
  if [[ "$1" != "${FAKE_MYSQL_PASSWORD:?}" ]]; then
    echo "ERROR 1045 (28000): Access denied for user 'clusteradmin'" >&2
    exit 1
  fi
}
