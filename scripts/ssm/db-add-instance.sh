#!/usr/bin/env bash
# Add a node to the cluster with clone-based recovery; run on a member (the primary).
# Usage: db-add-instance.sh NODE_HOST     Exit: 0 added, rejoined or already a member, 3 refused.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly node="${1:?usage: db-add-instance.sh NODE_HOST}"

IFS=$'\x1f' read -r state _role group cluster _gtid < <(node_view)
if [[ "$state" != "ONLINE" || -z "$cluster" ]]; then
  echo "refusing: this node is not an ONLINE cluster member (state $state); run on the primary" >&2
  exit 3
fi
members="$(group_members)"
if grep -qx "$node" <<<"$members"; then
  echo "$node is already a member of cluster $cluster; nothing to do"
  exit 0
fi
# What group the node belongs to decides between a rejoin (it keeps its data) and an add
# with clone (its data is replaced by a donor's). A node that does not answer is neither
# yet: after a complete outage it may be the one holding the last transactions. Exit 1
# (retried) until it answers.
if ! theirs="$(sql_on "$node" "SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_group_name'")"; then
  echo "cannot read the group of $node (is its mysqld up and reachable?); not adding it before it answers, as a clone would replace its data" >&2
  exit 1
fi
if [[ -n "$theirs" && "$theirs" != "$group" ]]; then
  echo "refusing: $node belongs to group $theirs, not $group; remove it from that group first" >&2
  exit 3
fi
if [[ "$theirs" == "$group" ]]; then
  # A member that left (mysqld restarted, expelled): the cluster still knows it, so it
  # rejoins with incremental recovery instead of being added and cloned again.
  shell_api "127.0.0.1:3306" cluster rejoin-instance "$node:3306"
  echo "$node rejoined cluster $cluster"
  exit 0
fi
shell_api "127.0.0.1:3306" cluster add-instance "$node:3306" --recoveryMethod=clone
echo "$node added to cluster $cluster"
