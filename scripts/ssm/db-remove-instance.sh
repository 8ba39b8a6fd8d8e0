#!/usr/bin/env bash
# Remove a (lost) node from the cluster; run on a remaining member (the primary).
# The node counts as a member while the group lists it or the cluster's metadata does: Group
# Replication expels an unreachable member within seconds, but it stays in the metadata
# (and blocks a reboot from complete outage) until cluster.removeInstance() takes it out.
# Usage: db-remove-instance.sh NODE_HOST     Exit: 0 removed or in neither.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly node="${1:?usage: db-remove-instance.sh NODE_HOST}"

# The addresses ("host:port") of the instances in the cluster's metadata on this node, one a
# line (the `address` column of mysql_innodb_cluster_metadata.instances; see db-report.sh
# for its source); nothing when the node holds no metadata.
metadata_addresses() {
  local present
  present="$(local_sql "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'mysql_innodb_cluster_metadata' AND table_name = 'instances'")"
  if [[ "$present" != 0 ]]; then
    local_sql "SELECT address FROM mysql_innodb_cluster_metadata.instances ORDER BY instance_id"
  fi
}

members="$(group_members)"
addresses="$(metadata_addresses)"
address=""
while IFS= read -r listed; do
  [[ -n "$listed" && "${listed%:*}" == "$node" ]] && address="$listed"
done <<<"$addresses"
if ! grep -qx "$node" <<<"$members" && [[ -z "$address" ]]; then
  echo "$node is neither a member of the group nor in the cluster's metadata; nothing to do"
  exit 0
fi
# force: the node is usually gone, so it cannot confirm its own removal. An unreachable
# instance is then removed from the metadata only, and only by the exact address the
# metadata holds (mysql-shell modules/adminapi/cluster/remove_instance.cc,
# Remove_instance::prepare: "if forced, then the given address MUST match what's in the MD").
shell_api "127.0.0.1:3306" cluster remove-instance "${address:-$node:3306}" --force=true
echo "$node removed"
