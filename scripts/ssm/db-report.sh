#!/usr/bin/env bash
# Report this database node's view as one JSON line on stdout (the replication function
# parses it): member state, role, group name, cluster name and GTID set.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

IFS=$'\t' read -r state role group cluster gtid < <(node_view)
printf '{"memberState":%s,"role":%s,"groupName":%s,"clusterName":%s,"gtidExecuted":%s}\n' \
  "$(json_string "$state")" "$(json_string "$role")" "$(json_string "$group")" \
  "$(json_string "$cluster")" "$(json_string "$gtid")"
