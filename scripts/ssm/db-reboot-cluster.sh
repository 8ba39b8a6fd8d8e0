#!/usr/bin/env bash
# Reboot the InnoDB Cluster from complete outage on this node: every member is OFFLINE but
# the metadata survives. The orchestrator picks the node with the most complete GTID set.
# FORCE (true|false, default false) passes --force, which lets the reboot go ahead while a
# member of the metadata is unreachable (mysql-shell modules/adminapi/dba/
# reboot_cluster_from_complete_outage.cc: without it, "Could not determine if Cluster is
# completely OFFLINE"). The orchestrator sets it only once EC2 confirms every such member's
# instance terminated: a member that still runs could hold transactions the reboot loses.
# Usage: db-reboot-cluster.sh CLUSTER_NAME [FORCE]     Exit: 0 rebooted or already ONLINE, 3 refused.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly name="${1:?usage: db-reboot-cluster.sh CLUSTER_NAME [FORCE]}"
readonly force="${2:-false}"
if [[ "$force" != true && "$force" != false ]]; then
  echo "refusing: FORCE must be true or false, not '$force'" >&2
  exit 3
fi

IFS=$'\x1f' read -r state _role group cluster _gtid < <(node_view)
if [[ "$state" == "ONLINE" && -n "$group" ]]; then
  echo "cluster ${cluster:-$name} is already ONLINE on this node (group $group); nothing to do"
  exit 0
fi
if [[ "$cluster" != "$name" ]]; then
  echo "refusing: this node holds metadata of cluster '${cluster}', not '$name'; reboot from a node of that cluster" >&2
  exit 3
fi
options=()
if [[ "$force" == true ]]; then
  options+=(--force)
fi
shell_api "127.0.0.1:3306" dba reboot-cluster-from-complete-outage "$name" "${options[@]}"
echo "cluster $name rebooted from complete outage${options[*]:+ (forced: the unreachable members are gone for good)}"
