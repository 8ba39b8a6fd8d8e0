#!/usr/bin/env bash
# Install MySQL Router on a web node and bootstrap it against the InnoDB Cluster, so the
# application writes to 127.0.0.1:6446 (read-write, follows the primary) and reads from
# 127.0.0.1:6447. Safe to run again: a router already bootstrapped for the cluster is only
# (re)started.
# Usage: web-router.sh CLUSTER_NAME PRIMARY_HOST     (ADMIN_SECRET_ID names the secret)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly name="${1:?usage: web-router.sh CLUSTER_NAME PRIMARY_HOST}"
readonly primary="${2:?usage: web-router.sh CLUSTER_NAME PRIMARY_HOST}"
readonly CONFIG="${SYSROOT}/etc/mysqlrouter/mysqlrouter.conf"

if ! rpm -q mysql84-community-release >/dev/null 2>&1; then
  dnf install -y "$REPO_RPM"
fi
if ! rpm -q mysql-router-community >/dev/null 2>&1; then
  dnf install -y mysql-router-community
fi
if grep -qs "^cluster_name=${name}\$" "$CONFIG"; then
  echo "router already bootstrapped for cluster $name"
else
  # The metadata cache finds every member from any one; --force replaces a router
  # configuration left by an earlier cluster on a reused instance.
  admin_password | mysqlrouter --bootstrap "${ADMIN_USER}@${primary}:3306" \
    --user=mysqlrouter --conf-base-port=6446 --force
fi
systemctl enable --now mysqlrouter
systemctl restart mysqlrouter
echo "MySQL Router for cluster $name listening on 127.0.0.1:6446 (read-write) and 6447 (read-only)"
