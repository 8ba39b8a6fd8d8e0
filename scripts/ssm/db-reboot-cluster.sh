#!/usr/bin/env bash
# Reboot the InnoDB Cluster from complete outage on this node: every member is OFFLINE but
# the metadata survives. The orchestrator picks the node with the most complete GTID set.
# Usage: db-reboot-cluster.sh CLUSTER_NAME     Exit: 0 rebooted or already ONLINE, 3 refused.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly name="${1:?usage: db-reboot-cluster.sh CLUSTER_NAME}"

IFS=$'\x1f' read -r state _role group cluster _gtid < <(node_view)
if [[ "$state" == "ONLINE" && -n "$group" ]]; then
  echo "cluster ${cluster:-$name} is already ONLINE on this node (group $group); nothing to do"
  exit 0
fi
if [[ "$cluster" != "$name" ]]; then
  echo "refusing: this node holds metadata of cluster '${cluster}', not '$name'; reboot from a node of that cluster" >&2
  exit 3
fi
shell_api "127.0.0.1:3306" dba reboot-cluster-from-complete-outage "$name"
echo "cluster $name rebooted from complete outage"
