# shellcheck shell=bash
# dba.rebootClusterFromCompleteOutage (modules/adminapi/dba/reboot_cluster_from_complete_outage.cc
# Reboot_cluster_from_complete_outage::do_run and pick_best_instance_gtid).

# gtid_relation SEED OTHER: the state of OTHER towards SEED (mysqlshdk/libs/mysql/
# gtid_utils.cc check_replica_gtid_state): IDENTICAL, RECOVERABLE (subset, nothing it lacks
# purged on the seed), IRRECOVERABLE (the seed purged some it lacks), NEW (empty),
# DIVERGED (it has transactions the seed lacks).
gtid_relation() {
  local seed="$1" other="$2" theirs
  theirs="$(q "$other" "SELECT REPLACE(@@gtid_executed, '\n', '')")"
  q "$seed" "SELECT CASE
      WHEN $(sq "$theirs") = '' AND REPLACE(@@gtid_executed, '\n', '') <> '' THEN 'NEW'
      WHEN NOT GTID_SUBSET($(sq "$theirs"), @@gtid_executed) THEN 'DIVERGED'
      WHEN GTID_SUBSET(@@gtid_executed, $(sq "$theirs")) THEN 'IDENTICAL'
      WHEN GTID_SUBTRACT(@@gtid_purged, $(sq "$theirs")) <> '' THEN 'IRRECOVERABLE'
      ELSE 'RECOVERABLE' END"
}

reboot_cluster() {
  local wanted="$1" md cluster_id cluster_name group
  md="$(metadata_cluster "$SESSION_HOST")"
  if [[ -z "$md" ]]; then
    # get_cluster of the metadata: a server without it is not part of any cluster.
    api_error "$API: The MySQL instance '$SESSION_ADDRESS' does not belong to an InnoDB Cluster (no metadata on it)."
  fi
  IFS=$'\t' read -r cluster_id cluster_name group <<<"$md"
  if [[ -n "$wanted" && "$wanted" != "$cluster_name" ]]; then
    api_error "$API: The cluster with the name '$wanted' does not exist."
  fi
  echo "Restoring the Cluster '$cluster_name' from complete outage..."
  echo
  # Every instance of the metadata, reached by its address; the unreachable ones listed.
  local address host state reachable=() unreachable=() states=()
  while IFS= read -r address; do
    [[ -n "$address" ]] || continue
    host="${address%:*}"
    if state="$(member_state "$host" 2>/dev/null)"; then
      reachable+=("$host")
      states+=("'$address' ($state)")
    else
      unreachable+=("'$address'")
      states+=("'$address' (UNREACHABLE)")
    fi
  done < <(q "$SESSION_HOST" "SELECT address FROM mysql_innodb_cluster_metadata.instances WHERE cluster_id = $(sq "$cluster_id") ORDER BY address")
  local joined
  joined="$(printf '%s, ' "${states[@]}")"
  echo "Cluster instances: ${joined%, }"
  # ensure_all_members_offline (reboot_cluster_from_complete_outage.cc, mysql-shell 9.6):
  # every member whose state is not OFFLINE, MISSING, ERROR or RECOVERING counts as online,
  # quorum or not, and any such member makes the reboot refuse ("The Cluster is ONLINE");
  # members in ERROR or RECOVERING are stopped.
  for host in "${reachable[@]}"; do
    state="$(member_state "$host")"
    case "$state" in
      OFFLINE | MISSING)
        # A server restarted with start_on_boot may still be trying to join (see settle_gr).
        settle_gr "$host"
        ;;
      ERROR | RECOVERING)
        echo "Stopping Group Replication on '$host:3306'..."
        q1 "$host" "STOP GROUP_REPLICATION" >/dev/null || api_error "$API: Unable to stop Group Replication: $SQL_ERROR"
        ;;
      *) api_error "$API: The Cluster is ONLINE" ;;
    esac
  done
  if [[ ${#unreachable[@]} -gt 0 ]]; then
    joined="$(printf '%s, ' "${unreachable[@]}")"
    echo "WARNING: One or more instances of the Cluster could not be reached and cannot be rejoined nor ensured to be OFFLINE: ${joined%, }. Cluster may diverge and become inconsistent unless all instances are either reachable or certain to be OFFLINE and not accepting new transactions. You may use the 'force' option to bypass this check and proceed anyway." >&2
    [[ "${named[force]:-false}" == true ]] || api_error "$API: Could not determine if Cluster is completely OFFLINE"
  fi
  # The seed: the instance whose GTID set contains every other's (pick_best_instance_gtid:
  # the session's instance when it is one of those, else the first such); instances whose
  # sets are not comparable are a conflict that needs both force and primary. An explicit
  # --primary must be a member and, without force, one of the most up-to-date.
  local seed="" other candidates=() conflict=false
  for host in "${reachable[@]}"; do
    local best=true
    for other in "${reachable[@]}"; do
      [[ "$other" == "$host" ]] && continue
      case "$(gtid_relation "$host" "$other")" in
        DIVERGED) best=false ;;
      esac
    done
    [[ "$best" == true ]] && candidates+=("$host")
  done
  [[ ${#candidates[@]} -gt 0 ]] || conflict=true
  local intended="${named[primary]:-}"
  if [[ -n "$intended" ]]; then
    intended="${intended%:3306}"
    listed "${reachable[*]}" "$intended" ||
      api_error "$API: The requested instance '${named[primary]}' isn't part of the members of the Cluster."
  fi
  if [[ "$conflict" == true ]]; then
    echo "WARNING: Detected GTID conflits between instances: $(
      IFS=,
      echo "${reachable[*]}"
    )" >&2
    if [[ "${named[force]:-false}" != true || -z "$intended" ]]; then
      api_error "$API: To reboot a Cluster with GTID conflits, both the 'force' and 'primary' options must be used to proceed with the command and to explicitly pick a new seed instance."
    fi
    seed="$intended"
  elif [[ -n "$intended" ]]; then
    if listed "${candidates[*]}" "$intended" || [[ "${named[force]:-false}" == true ]]; then
      seed="$intended"
    else
      api_error "$API: The requested instance '${named[primary]}' can't be used as the new seed because it has a lower GTID when compared with the other members: $(printf "'%s:3306', " "${candidates[@]}" | sed 's/, $//'). Use option 'force' if this is indeed the desired behaviour."
    fi
  elif listed "${candidates[*]}" "$SESSION_HOST"; then
    seed="$SESSION_HOST"
  else
    seed="${candidates[0]}"
    echo "Switching over to the most up-to-date instance '$seed:3306' as the seed."
  fi
  # Without force every other reachable instance must be able to rejoin the seed.
  if [[ "${named[force]:-false}" != true ]]; then
    local relation reason
    for other in "${reachable[@]}"; do
      [[ "$other" == "$seed" ]] && continue
      relation="$(gtid_relation "$seed" "$other")"
      case "$relation" in
        IDENTICAL | RECOVERABLE) continue ;;
        DIVERGED) reason="GTIDs diverged" ;;
        IRRECOVERABLE) reason="former has missing transactions" ;;
        NEW) reason="former has an empty GTID set" ;;
      esac
      api_error "$API: The instance '$other:3306' has an incompatible GTID set with the seed instance '$seed:3306' ($reason). If you wish to proceed, the 'force' option must be explicitly set."
    done
  fi
  # Re-bootstrap the group on the seed with the group name of the metadata
  # (reboot: start_cluster with the cluster's group name; GR settings re-persisted).
  local seed_address
  seed_address="$(canonical_address "$seed")"
  echo "* Waiting for seed instance to become ONLINE..."
  install_plugins "$seed"
  persist_gr_settings "$seed" "$group" "$seed_address" \
    "$(seeds_except "$seed" "$seed_address")" "$(q "$seed" "SELECT @@group_replication_ssl_mode")"
  start_gr "$seed" true
  API="$API" wait_online "$seed"
  wait_primary "$seed"
  echo "$seed_address was restored."
  # Rejoin the other reachable instances (the reboot runs Rejoin_instance on each).
  CLUSTER_ID="$cluster_id"
  CLUSTER_NAME="$cluster_name"
  GROUP_NAME="$group"
  PRIMARY="$seed"
  # shellcheck source=mysqlsh-join.bash
  source "$STANDIN_DIR/mysqlsh-join.bash"
  for other in "${reachable[@]}"; do
    [[ "$other" == "$seed" ]] && continue
    echo "Rejoining '$other:3306' to Cluster '$cluster_name'..."
    if ! (rejoin_instance "$other"); then
      echo "WARNING: '$other:3306' could not be rejoined; rejoin it with Cluster.rejoinInstance()." >&2
    fi
  done
  echo "The Cluster was successfully rebooted."
}
