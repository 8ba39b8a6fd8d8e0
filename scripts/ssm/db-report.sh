#!/usr/bin/env bash
# Report this database node's view as one JSON line on stdout (the replication function
# parses it): member state, role, group name, cluster name, GTID set, the hosts it sees as
# group members, and the hosts the cluster's metadata lists. Group Replication expels a lost
# member within seconds, so only the metadata still names it until it is removed.
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

# The addresses ("host:port") of the instances in the InnoDB Cluster metadata on this node,
# one a line; nothing when the node holds no metadata. mysql-shell creates the table
# (modules/adminapi/common/metadata/metadata-model-2.4.0.sql (Shell 9.x; the column is the same in 2.2.0), `instances`: `address` is
# "network address of the host of the instance. Taken from @@report_host or @@hostname") and
# fills `address` with the instance's canonical address, COALESCE(@@report_host,
# @@hostname) ':' COALESCE(@@report_port, @@port) (modules/adminapi/common/sql.cc and
# mysqlshdk/libs/mysql/instance.cc, get_canonical_address). Whether the schema exists is
# asked first, so any other error still fails the report.
metadata_addresses() {
  local present
  present="$(local_sql "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'mysql_innodb_cluster_metadata' AND table_name = 'instances'")"
  if [[ "$present" != 0 ]]; then
    local_sql "SELECT address FROM mysql_innodb_cluster_metadata.instances ORDER BY instance_id"
  fi
}

IFS=$'\x1f' read -r state role group cluster gtid < <(node_view)
members=""
if [[ "$state" != "OFFLINE" && -n "$group" ]]; then
  hosts="$(group_members)"
  while IFS= read -r member; do
    [[ -n "$member" ]] && members+="${members:+,}$(json_string "$member")"
  done <<<"$hosts"
fi
metadata_members=""
addresses="$(metadata_addresses)"
while IFS= read -r address; do
  [[ -n "$address" ]] && metadata_members+="${metadata_members:+,}$(json_string "${address%:*}")"
done <<<"$addresses"
# The backup db-restore.sh restored this node's data directory from (its marker), or null.
restored=null
if [[ -s "$RESTORE_MARKER" ]]; then
  restored="$(json_string "$(head -n 1 "$RESTORE_MARKER")")"
fi
printf '{"memberState":%s,"role":%s,"groupName":%s,"clusterName":%s,"gtidExecuted":%s,"members":[%s],"metadataMembers":[%s],"restoredBackup":%s}\n' \
  "$(json_string "$state")" "$(json_string "$role")" "$(json_string "$group")" \
  "$(json_string "$cluster")" "$(json_string "$gtid")" "$members" "$metadata_members" "$restored"
