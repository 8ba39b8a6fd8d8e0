#!/usr/bin/env bash
# Report this database node's view as one JSON line on stdout (the replication function
# parses it): member state, role, group name, cluster name, GTID set, and the hosts it sees
# as group members (a lost node stays listed until it is removed).
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

IFS=$'\x1f' read -r state role group cluster gtid < <(node_view)
members=""
if [[ "$state" != "OFFLINE" && -n "$group" ]]; then
  while IFS= read -r member; do
    [[ -n "$member" ]] && members+="${members:+,}$(json_string "$member")"
  done < <(group_members)
fi
printf '{"memberState":%s,"role":%s,"groupName":%s,"clusterName":%s,"gtidExecuted":%s,"members":[%s]}\n' \
  "$(json_string "$state")" "$(json_string "$role")" "$(json_string "$group")" \
  "$(json_string "$cluster")" "$(json_string "$gtid")" "$members"
