#!/usr/bin/env bash
# Create the InnoDB Cluster on this (seed) node, single-primary, unless it already exists.
# Split-brain guard: a node that belongs to any group is never used to create another one.
# Then ensures the application's schema and account on it (replicated to every member).
# Usage: db-create-cluster.sh CLUSTER_NAME     Exit: 0 created or already there, 3 refused.
# (ADMIN_SECRET_ID and APP_SECRET_ID name the two passwords' secrets)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly name="${1:?usage: db-create-cluster.sh CLUSTER_NAME}"

# The application's schema and account; the statements (and the password) go on stdin.
ensure_app_account() {
  local password
  password="$(app_password)"
  mysql_as_admin 127.0.0.1 <<SQL
CREATE DATABASE IF NOT EXISTS ${APP_DATABASE};
CREATE USER IF NOT EXISTS '${APP_USER}'@'%' IDENTIFIED BY '${password}';
GRANT ALL PRIVILEGES ON ${APP_DATABASE}.* TO '${APP_USER}'@'%';
SQL
  echo "application account ${APP_USER} on schema ${APP_DATABASE} ensured"
}

IFS=$'\x1f' read -r state _role group cluster _gtid < <(node_view)
if [[ -n "$group" && "$state" != "OFFLINE" ]]; then
  if [[ "$cluster" == "$name" ]]; then
    echo "cluster $name already exists on this node (member $state of group $group); nothing to do"
    ensure_app_account
    exit 0
  fi
  echo "refusing: this node is $state in group $group (cluster ${cluster:-unknown}), not $name; remove it from that group first" >&2
  exit 3
fi
if [[ -n "$cluster" ]]; then
  echo "refusing: this node holds metadata of cluster $cluster but is OFFLINE; reboot that cluster from complete outage instead of creating a new one" >&2
  exit 3
fi
shell_api "127.0.0.1:3306" dba create-cluster "$name" --multiPrimary=false --memberSslMode=REQUIRED
echo "cluster $name created"
ensure_app_account
