# shellcheck shell=bash
# Globals from mysqlsh: SESSION_*, API, named[], and from get_cluster: CLUSTER_ID, CLUSTER_NAME,
# GROUP_NAME, PRIMARY.
# shellcheck disable=SC2153
# Cluster.addInstance, rejoinInstance, removeInstance and status, run through the primary
# of the session's cluster (modules/adminapi/cluster/*.cc; get_cluster set CLUSTER_ID,
# CLUSTER_NAME, GROUP_NAME and PRIMARY).

# The metadata row of ADDRESS: "server_uuid<TAB>server_id", empty when it is not a member.
metadata_instance() {
  q "$PRIMARY" "SELECT mysql_server_uuid, attributes->>'$.server_id' FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID") AND address = $(sq "$1")"
}

# Every member's local address, comma-separated: the new member's seeds (add_instance.cc
# resolves them from the cluster's members' grLocal addresses).
cluster_seeds() {
  q "$PRIMARY" "SELECT IFNULL(GROUP_CONCAT(addresses->>'$.grLocal' ORDER BY instance_id SEPARATOR ','), '') FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID") AND address <> $(sq "$1")"
}

# The recovery method (clone_options.cc, add_instance.cc / common.cc
# validate_instance_recovery): clone always clones; incremental requires that the group
# has every transaction the target lacks and that the target has no errant ones; auto
# picks incremental when that holds and the target's GTID set is not empty, clone
# otherwise. ASSUMPTION: non-interactive auto with an empty GTID set — the Shell would ask
# (gtidSetIsComplete false); the stand-in clones, the safe answer.
resolve_recovery_method() {
  local host="$1" method="$2" row errant missing_purged empty
  row="$(q "$host" "SELECT @@gtid_executed = '', REPLACE(@@gtid_executed, '\n', '')")"
  empty="${row%%$'\t'*}"
  local target_gtids="${row#*$'\t'}"
  row="$(q "$PRIMARY" "SELECT GTID_SUBTRACT($(sq "$target_gtids"), @@gtid_executed) <> '', GTID_SUBTRACT(@@gtid_purged, $(sq "$target_gtids")) <> ''")"
  IFS=$'\t' read -r errant missing_purged <<<"$row"
  case "$method" in
    clone) echo clone ;;
    incremental)
      if [[ "$errant" == 1 ]]; then
        api_error "$API: The instance '$host:3306' contains errant transactions that did not originate from the cluster. Use recoveryMethod: 'clone' to overwrite its data."
      fi
      if [[ "$missing_purged" == 1 ]]; then
        api_error "$API: Cannot use recoveryMethod=incremental: the cluster has purged transactions '$host:3306' lacks. Use recoveryMethod: 'clone'."
      fi
      echo incremental
      ;;
    *)
      if [[ "$errant" == 1 || "$missing_purged" == 1 || "$empty" == 1 ]]; then echo clone; else echo incremental; fi
      ;;
  esac
}

add_instance() {
  local host="$1" address server_id
  if ! q1 "$host" "SELECT 1" >/dev/null; then
    api_error "$API: Could not open connection to '$host:3306': $SQL_ERROR"
  fi
  address="$(canonical_address "$host")"
  host="${address%:*}"
  # add_instance.cc prepare: already in this cluster's metadata, or in another group/cluster.
  if [[ -n "$(metadata_instance "$address")" ]]; then
    api_error "$API: The instance '$address' is already part of this InnoDB Cluster"
  fi
  local state
  state="$(member_state "$host")"
  if [[ "$state" != OFFLINE ]]; then
    api_error "$API: The instance '$address' is already part of another Group Replication group ($state)."
  fi
  echo "Validating instance configuration at $address..."
  ensure_instance_config "$API" "$host"
  # The server_id must be unique in the cluster (validations.cc validate_server_id_unique,
  # "The server_id '...' is already used by instance '...'").
  server_id="$(q "$host" "SELECT @@server_id")"
  local owner
  owner="$(q "$PRIMARY" "SELECT address FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID") AND attributes->>'$.server_id' = $(sq "$server_id")")"
  if [[ -n "$owner" ]]; then
    api_error "$API: Invalid server_id: the server_id '$server_id' of '$address' is already used by instance '$owner'."
  fi
  local method
  method="$(resolve_recovery_method "$host" "${named[recovery-method]:-auto}")"
  echo "A new instance will be added to the InnoDB Cluster. Depending on the amount of"
  echo "data on the cluster this might take from a few seconds to several hours."
  echo
  echo "Adding instance to the cluster..."
  settle_gr "$host"
  q1 "$host" "SET GLOBAL super_read_only = OFF" >/dev/null || api_error "$API: $SQL_ERROR"
  install_plugins "$host"
  # The clone plugin on every member too, so any of them can donate
  # (Cluster_impl::prepare_clone_recovery, BUG#29954085).
  local member
  while IFS= read -r member; do
    [[ -n "$member" ]] && install_plugins "$member"
  done < <(q "$PRIMARY" "SELECT MEMBER_HOST FROM performance_schema.replication_group_members WHERE MEMBER_STATE = 'ONLINE'")
  local account user password
  account="$(create_recovery_account "$PRIMARY" "$server_id")"
  IFS=$'\t' read -r user password <<<"$account"
  set_recovery_channel "$host" "$user" "$password"
  local_recovery_account "$host" "$user" "$password"
  persist_gr_settings "$host" "$GROUP_NAME" "$address" "$(cluster_seeds "$address")" \
    "$(q "$PRIMARY" "SELECT @@group_replication_ssl_mode")"
  if [[ "$method" == clone ]]; then
    # Force clone: group_replication_clone_threshold 1 for this join only (SET GLOBAL,
    # not persisted), and RESET BINARY LOGS AND GTIDS so a diverged GTID set cannot stop
    # the clone (cluster_impl.cc prepare_clone_recovery, mysqlshdk/libs/mysql/clone.cc
    # force_clone; the statement's 8.4+ name: binlog_utils get_binary_logs_keyword).
    q1 "$host" "SET GLOBAL group_replication_clone_threshold = 1; RESET BINARY LOGS AND GTIDS" >/dev/null ||
      api_error "$API: $SQL_ERROR"
    echo "Clone based state recovery is now in progress."
    echo
    echo "NOTE: A server restart is expected to happen as part of the clone process. If the"
    echo "server does not support the RESTART command or does not come back after a"
    echo "while, you may need to manually start it back."
  else
    echo "Incremental state recovery is now in progress."
  fi
  start_gr "$host" false
  # The recipient of a clone restarts itself; its persisted settings (mysqld-auto.cnf is
  # not cloned) bring it back into the group with start_on_boot.
  wait_online "$host"
  # The metadata after the join (add_instance.cc: "Adding instance to the cluster
  # metadata..."), then every member's seeds (Cluster_impl::update_group_peers).
  # shellcheck source=mysqlsh-create.bash
  source "$STANDIN_DIR/mysqlsh-create.bash"
  metadata_insert_instance "$PRIMARY" "$CLUSTER_ID" "$host"
  update_seeds "$PRIMARY"
  restore_recovery_accounts
  echo "The instance '$address' was successfully added to the cluster."
}

rejoin_instance() {
  local host="$1" address md
  if ! q1 "$host" "SELECT 1" >/dev/null; then
    api_error "$API: Could not open connection to '$host:3306': $SQL_ERROR"
  fi
  address="$(canonical_address "$host")"
  host="${address%:*}"
  md="$(metadata_instance "$address")"
  if [[ -z "$md" ]]; then
    api_error "$API: The instance '$address' does not belong to the cluster: '$CLUSTER_NAME'."
  fi
  local state
  state="$(member_state "$host")"
  # rejoin_instance.cc check_rejoinable: ONLINE or RECOVERING is a note, nothing to do.
  case "$state" in
    ONLINE | RECOVERING)
      echo "NOTE: $address is already an active ($state) member of cluster '$CLUSTER_NAME'."
      return 0
      ;;
    ERROR)
      echo "NOTE: '$address' is in an ERROR state. Attempting to stop Group Replication to proceed with the rejoin."
      q "$host" "STOP GROUP_REPLICATION" >/dev/null
      ;;
  esac
  # The server must be the one in the metadata (validate_instance_rejoinable: uuid), and
  # of the same group; its GTIDs must not diverge from the cluster's
  # (validations.cc / gtid_validations.cc: errant transactions refuse the rejoin).
  local uuid server_id their_group
  IFS=$'\t' read -r uuid server_id <<<"$md"
  if [[ "$(q "$host" "SELECT @@server_uuid")" != "$uuid" ]]; then
    api_error "$API: The instance '$address' has a server_uuid different from the one in the cluster's metadata; remove it with removeInstance() and add it again."
  fi
  their_group="$(group_name_of "$host")"
  if [[ -n "$their_group" && "$their_group" != "$GROUP_NAME" ]]; then
    api_error "$API: The instance '$address' may belong to a different cluster as the one registered in the Metadata since the value of 'group_replication_group_name' does not match the one registered in the Metadata: possible split-brain scenario. Please remove the instance from the cluster."
  fi
  local method
  method="$(resolve_recovery_method "$host" "${named[recovery-method]:-incremental}")"
  echo "Rejoining instance '$address' to cluster '$CLUSTER_NAME'..."
  settle_gr "$host"
  q1 "$host" "SET GLOBAL super_read_only = OFF" >/dev/null || true
  install_plugins "$host"
  # The Shell resets the recovery account when it must (rejoin_instance.cc: with the MySQL
  # stack "the account must already exist", re-created when missing); the stand-in always
  # re-creates it with a new password, which is one of those paths.
  local account user password
  account="$(create_recovery_account "$PRIMARY" "$server_id")"
  IFS=$'\t' read -r user password <<<"$account"
  set_recovery_channel "$host" "$user" "$password"
  local_recovery_account "$host" "$user" "$password"
  persist_gr_settings "$host" "$GROUP_NAME" "$address" "$(cluster_seeds "$address")" \
    "$(q "$PRIMARY" "SELECT @@group_replication_ssl_mode")"
  if [[ "$method" == clone ]]; then
    q1 "$host" "SET GLOBAL group_replication_clone_threshold = 1; RESET BINARY LOGS AND GTIDS" >/dev/null ||
      api_error "$API: $SQL_ERROR"
  fi
  start_gr "$host" false
  wait_online "$host"
  update_seeds "$PRIMARY"
  restore_recovery_accounts
  echo "The instance '$address' was successfully rejoined to the cluster."
}

remove_instance() {
  local target="$1" address="$1:3306" md reachable=true
  local force="${named[force]:-}"
  if q1 "$target" "SELECT 1" >/dev/null; then
    address="$(canonical_address "$target")"
    target="${address%:*}"
  else
    reachable=false
  fi
  md="$(metadata_instance "$address")"
  if [[ "$reachable" == false ]]; then
    # remove_instance.cc prepare: unreachable and not in the metadata is an error even with
    # force; unreachable needs force.
    if [[ -z "$md" ]]; then
      echo "ERROR: The instance $address is not reachable and does not belong to the cluster either. Please ensure the member is either connectable or remove it through the exact address as shown in the cluster status output." >&2
      api_error "$API: Metadata for instance $address not found"
    fi
    if [[ "$force" != true ]]; then
      echo "ERROR: The instance '$address' is not reachable and cannot be safely removed from the cluster." >&2
      api_error "$API: $SQL_ERROR"
    fi
    echo "NOTE: The instance '$address' is not reachable and it will only be removed from the metadata. Please take any necessary actions to ensure the instance will not rejoin the cluster if brought back online."
    echo
  else
    if [[ -z "$md" ]]; then
      api_error "$API: The instance '$address' does not belong to the Cluster."
    fi
    local state
    state="$(member_state "$target")"
    if [[ "$state" != ONLINE && "$state" != RECOVERING ]]; then
      if [[ "$force" != true ]]; then
        echo "ERROR: $address is reachable but has state $state" >&2
        api_error "$API: Instance is not ONLINE and cannot be safely removed"
      fi
      echo "NOTE: $address is reachable but has state $state"
    fi
  fi
  # ensure_not_last_instance_in_cluster (remove_instance.cc).
  local count
  count="$(q "$PRIMARY" "SELECT COUNT(*) FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID")")"
  if [[ "$count" -le 1 ]]; then
    api_error "$API: The instance '$address' is the last member of the cluster"
  fi
  local uuid server_id
  IFS=$'\t' read -r uuid server_id <<<"$md"
  echo "The instance will be removed from the InnoDB Cluster."
  # The metadata first (remove_instance.cc: "remove it from the metadata" before leaving the
  # group, so the removed member does not take a stale copy along), then its recovery
  # account (Cluster_impl::drop_replication_user), then the member leaves the group
  # (provision.cc leave_cluster: STOP GROUP_REPLICATION, start_on_boot OFF, seeds, local
  # address and bootstrap_group reset) if reachable, then the others' seeds.
  q1 "$PRIMARY" "DELETE FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID") AND mysql_server_uuid = $(sq "$uuid")" >/dev/null ||
    api_error "$API: $SQL_ERROR"
  if [[ "$reachable" == true && "$target" != "$PRIMARY" ]]; then
    # Let the member receive its own removal before it leaves (remove_instance.cc waits for
    # the member to apply the primary's GTIDs, timeout option).
    local gtids
    gtids="$(q "$PRIMARY" "SELECT @@gtid_executed")"
    q "$target" "SELECT WAIT_FOR_EXECUTED_GTID_SET($(sq "$gtids"), ${named[timeout]:-60})" >/dev/null 2>&1 || true
  fi
  q "$PRIMARY" "DROP USER IF EXISTS 'mysql_innodb_cluster_${server_id}'@'%'" >/dev/null 2>&1 || true
  if [[ "$reachable" == true ]]; then
    q1 "$target" "STOP GROUP_REPLICATION; SET PERSIST group_replication_start_on_boot = OFF; RESET PERSIST IF EXISTS group_replication_group_seeds; RESET PERSIST IF EXISTS group_replication_local_address; SET GLOBAL group_replication_group_seeds = ''" >/dev/null ||
      echo "WARNING: $address could not leave the group: $SQL_ERROR" >&2
  fi
  update_seeds "$PRIMARY"
  echo "The instance '$address' was successfully removed from the cluster."
}

# Cluster.status, reduced: the cluster, the primary, and each metadata member with its
# state and role as seen from the primary (cluster/status.cc; field names kept, most of
# its fields left out). Status OK (3+ ONLINE, tolerates one failure), OK_PARTIAL,
# OK_NO_TOLERANCE (common_status.cc / status.cc get_cluster_status).
cluster_status() {
  local online total topo="" address state role
  while IFS=$'\t' read -r address state role; do
    [[ -n "$address" ]] || continue
    local mode=n/a
    [[ "$role" == PRIMARY ]] && mode=R/W
    [[ "$role" == SECONDARY ]] && mode=R/O
    topo+="${topo:+,}\"$address\":{\"address\":\"$address\",\"memberRole\":\"${role:-SECONDARY}\",\"mode\":\"$mode\",\"status\":\"$state\"}"
  done < <(q "$PRIMARY" "SELECT i.address, IFNULL(m.MEMBER_STATE, '(MISSING)'), IFNULL(m.MEMBER_ROLE, '') FROM mysql_innodb_cluster_metadata.instances i LEFT JOIN performance_schema.replication_group_members m ON m.MEMBER_ID = i.mysql_server_uuid WHERE i.cluster_id = $(sq "$CLUSTER_ID") ORDER BY i.address")
  online="$(q "$PRIMARY" "SELECT COUNT(*) FROM performance_schema.replication_group_members WHERE MEMBER_STATE = 'ONLINE'")"
  total="$(q "$PRIMARY" "SELECT COUNT(*) FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID")")"
  local status
  if ((online >= 3 && online == total)); then
    status=OK
  elif ((online >= 3)); then
    status=OK_PARTIAL
  else
    status=OK_NO_TOLERANCE
  fi
  printf '{"clusterName":"%s","defaultReplicaSet":{"name":"default","primary":"%s:3306","ssl":"%s","status":"%s","topology":{%s},"topologyMode":"Single-Primary"},"groupInformationSourceMember":"%s:3306"}\n' \
    "$CLUSTER_NAME" "$PRIMARY" "$(q "$PRIMARY" "SELECT @@group_replication_ssl_mode")" "$status" "$topo" "$PRIMARY"
}

# Cluster.setPrimaryInstance (cluster/set_primary_instance.cc): the target must be in the
# metadata; already primary is a message, not an error; the election is GR's UDF
# group_replication_set_as_primary(uuid[, runningTransactionsTimeout]) run on a member
# (mysqlshdk/libs/mysql/group_replication.cc set_as_primary).
set_primary_instance() {
  local host="$1" address="$1:3306" uuid="" md
  if q1 "$host" "SELECT 1" >/dev/null; then
    address="$(canonical_address "$host")"
    host="${address%:*}"
    uuid="$(q "$host" "SELECT @@server_uuid")"
  fi
  md="$(q "$PRIMARY" "SELECT address FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$CLUSTER_ID") AND mysql_server_uuid = $(sq "$uuid")")"
  [[ -n "$uuid" && -n "$md" ]] ||
    api_error "$API: The instance '$address' does not belong to the cluster: '$CLUSTER_NAME'."
  echo "Setting instance '$address' as the primary instance of cluster '$CLUSTER_NAME'..."
  echo
  if [[ "$host" == "$PRIMARY" ]]; then
    echo "The instance '$address' is already the current primary of the Cluster."
    return 0
  fi
  local udf
  udf="group_replication_set_as_primary($(sq "$uuid"))"
  [[ -v "named[running-transactions-timeout]" ]] &&
    udf="group_replication_set_as_primary($(sq "$uuid"), ${named[running-transactions-timeout]})"
  if ! q1 "$PRIMARY" "SELECT $udf" >/dev/null; then
    echo "Failed to set '$address' as primary instance: $SQL_ERROR"
    api_error "$API: Instance cannot be set as primary"
  fi
  echo "The instance '$address' was successfully elected as primary."
}
