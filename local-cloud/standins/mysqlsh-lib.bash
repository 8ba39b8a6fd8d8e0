# shellcheck shell=bash
# Globals from mysqlsh: SESSION_*, API, named[], and from get_cluster: CLUSTER_ID, CLUSTER_NAME,
# GROUP_NAME, PRIMARY.
# shellcheck disable=SC2153
# Helpers of the `mysqlsh` stand-in: SQL on real servers with the real `mysql` client, and the
# Group Replication steps MySQL Shell 9.7's AdminAPI performs (sources cited at each function;
# github.com/mysql/mysql-shell, paths relative to its root).

# Connection: every server by its host name on port 3306, as the session's user with the
# session's password (the Shell opens the other members with the session's credentials:
# modules/adminapi/common/instance_pool.cc, connect_unchecked with the cluster's
# admin credentials). The password goes in a 0600 options file, never argv.
SH_OPTIONS=""
sh_open() {
  SH_OPTIONS="$(mktemp)"
  chmod 600 "$SH_OPTIONS"
  # Option-file values in double quotes take backslash escapes: escape '\' and '"'.
  local password="${SESSION_PASSWORD//\\/\\\\}"
  password="${password//\"/\\\"}"
  printf '[client]\nuser=%s\npassword="%s"\nport=%s\nconnect-timeout=%s\n' \
    "$SESSION_USER" "$password" 3306 "${MYSQLSH_STANDIN_CONNECT_TIMEOUT:-5}" >"$SH_OPTIONS"
  trap 'rm -f "$SH_OPTIONS"' EXIT
}

# q HOST SQL: the rows, tab-separated, no header. Errors go to stderr, status non-zero.
q() {
  mysql --defaults-extra-file="$SH_OPTIONS" --host="$1" --batch --skip-column-names \
    --raw -e "$2"
}

# q1 HOST SQL: like q, but the error text is kept (in $SQL_ERROR) for the caller's message.
SQL_ERROR=""
q1() {
  local out status=0 err
  err="$(mktemp)"
  out="$(q "$1" "$2" 2>"$err")" || status=$?
  SQL_ERROR="$(grep -v '^mysql: \[Warning\]' "$err" | sed 's/^ERROR \([0-9]*\) (\([0-9A-Z]*\))[^:]*: /MySQL Error \1 (\2): /' || true)"
  rm -f "$err"
  [[ $status -eq 0 ]] || return "$status"
  printf '%s' "$out"
}

# sq STR: STR as an SQL string literal.
sq() {
  local s="${1//\\/\\\\}"
  printf "'%s'" "${s//\'/\'\'}"
}

reachable() {
  q "$1" "SELECT 1" >/dev/null 2>&1
}

# The address the Shell uses for an instance, in the metadata and as GR's local address:
# @@report_host (else @@hostname) and @@port (Instance::get_canonical_address,
# mysqlshdk/libs/mysql/instance.cc).
canonical_address() {
  q "$1" "SELECT CONCAT(COALESCE(@@report_host, @@hostname), ':', @@port)"
}

# This member's GR state as the Shell reads it (mysqlshdk/libs/mysql/group_replication.cc
# get_member_state): performance_schema.replication_group_members of the member itself;
# no row, or GR not started, is OFFLINE.
member_state() {
  q "$1" "SELECT IFNULL((SELECT MEMBER_STATE FROM performance_schema.replication_group_members WHERE MEMBER_ID = @@server_uuid), 'OFFLINE')"
}

# The group name, from performance_schema (the variable does not exist before the plugin).
group_name_of() {
  q "$1" "SELECT IFNULL((SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_group_name'), '')"
}

# The primary's host in the view of HOST (single-primary mode).
primary_of() {
  q "$1" "SELECT MEMBER_HOST FROM performance_schema.replication_group_members WHERE MEMBER_ROLE = 'PRIMARY' AND MEMBER_STATE = 'ONLINE'"
}

# ensure_instance_config API HOST: the checks of dba.checkInstanceConfiguration that
# createCluster/addInstance run on their target (modules/adminapi/common/validations.cc
# ensure_gr_instance_configuration_valid -> mysqlshdk/libs/mysql/repl_config.cc): for a 9.x
# server binlog_format ROW, enforce_gtid_consistency ON, gtid_mode ON, log_replica_updates ON,
# group_replication_tls_source not mysql_admin, replica_preserve_commit_order ON
# (parallel_applier_options.cc), report_port = port; log_bin ON (check_log_bin_compatibility);
# server_id not 0 and not the compiled default (check_server_id_compatibility:
# has_variable_compiled_value). Plus the table checks the Shell runs before createCluster
# (validations.cc validate_instance_tables / check_table_compatibility): only InnoDB tables
# in user schemas. On failure the Shell lists the invalid settings and raises "Instance
# check failed"; the wording of the list here is the stand-in's.
ensure_instance_config() {
  local api="$1" host="$2" row problems=()
  row="$(q1 "$host" "SELECT @@binlog_format, @@enforce_gtid_consistency, @@gtid_mode, @@log_replica_updates, @@replica_preserve_commit_order, @@report_port = @@port, @@log_bin, @@server_id, (SELECT VARIABLE_SOURCE FROM performance_schema.variables_info WHERE VARIABLE_NAME = 'server_id')")" ||
    api_error "$api: $SQL_ERROR"
  local binlog_format enforce gtid_mode log_replica_updates preserve report_port log_bin server_id id_source
  IFS=$'\t' read -r binlog_format enforce gtid_mode log_replica_updates preserve report_port log_bin server_id id_source <<<"$row"
  [[ "$binlog_format" == ROW ]] || problems+=("binlog_format=$binlog_format (ROW required)")
  [[ "$enforce" == ON || "$enforce" == 1 ]] || problems+=("enforce_gtid_consistency=$enforce (ON required)")
  [[ "$gtid_mode" == ON ]] || problems+=("gtid_mode=$gtid_mode (ON required)")
  [[ "$log_replica_updates" == 1 ]] || problems+=("log_replica_updates=OFF (ON required)")
  [[ "$preserve" == 1 ]] || problems+=("replica_preserve_commit_order=OFF (ON required)")
  [[ "$report_port" == 1 ]] || problems+=("report_port differs from port")
  [[ "$log_bin" == 1 ]] || problems+=("log_bin=OFF (ON required)")
  if [[ "$server_id" == 0 || "$id_source" == COMPILED ]]; then
    problems+=("server_id=$server_id (a unique, explicitly set ID required)")
  fi
  local tables
  tables="$(q "$host" "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME, ' (', ENGINE, ')') FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND ENGINE <> 'InnoDB' AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')")"
  [[ -z "$tables" ]] || problems+=("non-InnoDB tables: ${tables//$'\n'/, }")
  if [[ ${#problems[@]} -gt 0 ]]; then
    echo "ERROR: The following configuration issues of '$host:3306' make it unsuitable for InnoDB Cluster:" >&2
    printf '  %s\n' "${problems[@]}" >&2
    echo "Instance must be configured and validated with dba.checkInstanceConfiguration() and dba.configureInstance() before it can be used in an InnoDB cluster." >&2
    api_error "$api: Instance check failed"
  fi
}

# install_plugins HOST: group_replication and clone, each only when not ACTIVE
# (mysqlshdk/libs/mysql/plugin.cc install_plugin, via gr::install_group_replication_plugin and
# mysql::install_clone_plugin; createCluster and Cluster_impl::prepare_clone_recovery). The
# Shell clears super_read_only for it and does not write it to the binary log
# (Suppress_binary_log is not used: INSTALL PLUGIN is not binlogged by the server).
install_plugins() {
  local host="$1" plugin file status
  for plugin in group_replication:group_replication.so clone:mysql_clone.so; do
    file="${plugin#*:}"
    plugin="${plugin%%:*}"
    status="$(q "$host" "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = '$plugin'")"
    case "$status" in
      ACTIVE) ;;
      "") q1 "$host" "INSTALL PLUGIN $plugin SONAME '$file'" >/dev/null ||
        api_error "$API: Error installing plugin '$plugin' on '$host:3306': $SQL_ERROR" ;;
      *) api_error "$API: The $plugin plugin is $status on '$host:3306'" ;;
    esac
  done
}

# create_recovery_account PRIMARY SERVER_ID: the account the member with SERVER_ID uses for
# distributed recovery and, with the MySQL communication stack, for GR's own connections:
# mysql_innodb_cluster_<server_id>@'%' (mysqlshdk/libs/mysql/group_replication.h
# k_group_recovery_user_prefix; replicationAllowedHost default '%'), created on the primary
# so it replicates everywhere, random password (the server caps replication passwords at 32 characters), grants REPLICATION SLAVE, BACKUP_ADMIN
# (clone donor), GROUP_REPLICATION_STREAM (MySQL stack), CONNECTION_ADMIN
# (group_replication.cc create_recovery_user). A leftover account of that name is dropped
# and re-created, as the Shell does (create_user_with_random_password re-creates). Prints
# "user<TAB>password".
create_recovery_account() {
  local primary="$1" id="$2" user password
  user="mysql_innodb_cluster_${id}"
  password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')Aa1!"
  q1 "$primary" "DROP USER IF EXISTS '$user'@'%'; CREATE USER '$user'@'%' IDENTIFIED BY $(sq "$password") PASSWORD EXPIRE NEVER; GRANT REPLICATION SLAVE, BACKUP_ADMIN ON *.* TO '$user'@'%'; GRANT GROUP_REPLICATION_STREAM ON *.* TO '$user'@'%'; GRANT CONNECTION_ADMIN ON *.* TO '$user'@'%'" >/dev/null ||
    api_error "$API: creating the recovery account $user on '$primary:3306': $SQL_ERROR"
  printf '%s\t%s\n' "$user" "$password"
}

# set_recovery_channel HOST USER PASSWORD: the credentials of the recovery channel
# (mysqlshdk/libs/mysql/replication.cc change_replication_credentials: CHANGE REPLICATION
# SOURCE TO SOURCE_USER, SOURCE_PASSWORD FOR CHANNEL 'group_replication_recovery').
set_recovery_channel() {
  q1 "$1" "CHANGE REPLICATION SOURCE TO SOURCE_USER = $(sq "$2"), SOURCE_PASSWORD = $(sq "$3") FOR CHANNEL 'group_replication_recovery'" >/dev/null ||
    api_error "$API: setting the recovery channel on '$1:3306': $SQL_ERROR"
}

# persist_gr_settings HOST GROUP_NAME LOCAL_ADDRESS SEEDS: what set_gr_options,
# start_cluster and join_cluster (modules/adminapi/common/provision.cc) apply with SET PERSIST
# (PERSIST_ONLY for read-only variables), so the member restarts into the group:
# super_read_only ON (persist only: "the server starts with it enabled in case it
# restarts"), group name, single-primary mode with update-everywhere checks off (in that
# order), recovery over SSL without server certificate verification (memberSslMode
# REQUIRED), group_replication_ssl_mode, local address, group seeds, start_on_boot ON, the
# MySQL communication stack (the default the Shell picks for 8.0.27+: create_cluster.cc
# check_comm_stack_defaults_to_mysql), paxos_single_leader persisted at its default, and
# the single-primary auto-increment settings (group_replication.cc update_auto_increment:
# increment 1, offset 2). The ip allowlist is not set: with the MySQL stack the Shell refuses
# it and GR authenticates with the recovery account instead.
persist_gr_settings() {
  local host="$1" group="$2" local_address="$3" seeds="$4" ssl_mode="${5:-REQUIRED}"
  local verify=OFF
  [[ "$ssl_mode" == VERIFY_IDENTITY ]] && verify=ON
  local use_ssl=ON
  [[ "$ssl_mode" == DISABLED ]] && use_ssl=OFF
  q1 "$host" "SET PERSIST_ONLY super_read_only = ON;
SET PERSIST group_replication_group_name = $(sq "$group");
SET PERSIST group_replication_enforce_update_everywhere_checks = OFF;
SET PERSIST group_replication_single_primary_mode = ON;
SET PERSIST group_replication_recovery_use_ssl = $use_ssl;
SET PERSIST group_replication_recovery_ssl_verify_server_cert = $verify;
SET PERSIST group_replication_ssl_mode = $(sq "$ssl_mode");
SET PERSIST group_replication_local_address = $(sq "$local_address");
SET PERSIST group_replication_group_seeds = $(sq "$seeds");
SET PERSIST group_replication_start_on_boot = ON;
SET PERSIST group_replication_communication_stack = 'MYSQL';
SET PERSIST group_replication_paxos_single_leader = DEFAULT;
SET PERSIST auto_increment_increment = 1;
SET PERSIST auto_increment_offset = 2" >/dev/null ||
    api_error "$API: configuring Group Replication on '$host:3306': $SQL_ERROR"
}

# Wait until HOST is an ONLINE member (mysqlshdk/libs/mysql/group_replication.cc
# wait_member_online), reconnecting while it restarts (after a clone the recipient restarts
# itself: modules/adminapi/common/member_recovery_monitoring.cc waits for the restart and
# reconnects). MYSQLSH_STANDIN_TIMEOUT seconds, default 600 (the Shell's
# restartWaitTimeout default is 60 s of downtime, its recovery wait has no limit of its own).
wait_online() {
  local host="$1" deadline state="" last=""
  deadline=$((SECONDS + ${MYSQLSH_STANDIN_TIMEOUT:-600}))
  while ((SECONDS < deadline)); do
    state="$(member_state "$host" 2>/dev/null || echo UNREACHABLE)"
    [[ "$state" == ONLINE ]] && return 0
    if [[ "$state" == ERROR ]]; then
      api_error "$API: '$host:3306' entered ERROR state while joining the group: $(q "$host" "SELECT CONCAT(ERROR_CODE, ' ', DATA) FROM performance_schema.error_log WHERE SUBSYSTEM = 'Repl' ORDER BY LOGGED DESC LIMIT 3" 2>/dev/null | tr '\n' ' ')"
    fi
    if [[ "$state" != "$last" ]]; then
      echo "* Waiting for '$host:3306' to become ONLINE (now $state)..."
      last="$state"
    fi
    sleep 1
  done
  api_error "$API: Timeout waiting for '$host:3306' to become ONLINE (last state: $state after ${MYSQLSH_STANDIN_TIMEOUT:-600} s)"
}

# start_gr HOST BOOTSTRAP: START GROUP_REPLICATION, bootstrapping the group when asked
# (mysqlshdk/libs/mysql/group_replication.cc start_group_replication: bootstrap_group ON,
# START, bootstrap_group OFF). With the MySQL stack GR takes the credentials from the
# recovery channel (create_cluster.cc: "GR requires that the recovery channel is configured
# in order to obtain the credentials information").
start_gr() {
  local host="$1" bootstrap="$2" sql="START GROUP_REPLICATION"
  if [[ "$bootstrap" == true ]]; then
    sql="SET GLOBAL group_replication_bootstrap_group = ON; START GROUP_REPLICATION; SET GLOBAL group_replication_bootstrap_group = OFF"
  fi
  if ! q1 "$host" "$sql" >/dev/null; then
    local err="$SQL_ERROR"
    [[ "$bootstrap" == true ]] && q "$host" "SET GLOBAL group_replication_bootstrap_group = OFF" >/dev/null 2>&1
    echo "ERROR: Unable to start Group Replication for instance '$host:3306'." >&2
    q "$host" "SELECT CONCAT('  ', LOGGED, ' [', PRIO, '] [', ERROR_CODE, '] ', DATA) FROM performance_schema.error_log WHERE SUBSYSTEM = 'Repl' ORDER BY LOGGED DESC LIMIT 5" >&2 2>/dev/null || true
    api_error "$API: $err"
  fi
}

# Members' local addresses, comma-separated, as group seeds (provision.cc: the seeds are the
# grLocal addresses of the cluster's members).
seeds_except() {
  local meta="$1" except="$2"
  q "$meta" "SELECT IFNULL(GROUP_CONCAT(addresses->>'$.grLocal' ORDER BY instance_id SEPARATOR ','), '') FROM mysql_innodb_cluster_metadata.instances WHERE address <> $(sq "$except")"
}

# update_seeds HOST... : each reachable member's seeds become the other members' local
# addresses (Cluster_impl::update_group_peers in cluster_impl.cc, SET PERSIST on each member).
update_seeds() {
  local meta="$1" address host seeds
  while IFS= read -r address; do
    [[ -n "$address" ]] || continue
    host="${address%:*}"
    seeds="$(seeds_except "$meta" "$address")"
    q "$host" "SET PERSIST group_replication_group_seeds = $(sq "$seeds")" >/dev/null 2>&1 ||
      echo "WARNING: could not update group_replication_group_seeds on '$address'" >&2
  done < <(q "$meta" "SELECT address FROM mysql_innodb_cluster_metadata.instances")
}

# local_recovery_account HOST USER PASSWORD: with the MySQL communication stack GR
# authenticates members with MySQL accounts, so the joining member's recovery account must
# exist on the joiner too before GR starts: created there with the binary log off (no errant
# transaction), then every ONLINE member's recovery channel is switched to it so whichever
# donor GR picks can authenticate to the joiner (cluster_impl.cc
# Cluster_impl::create_local_replication_user, change_recovery_credentials_all_members;
# add_instance.cc and rejoin_instance.cc call it for kCommunicationStackMySQL).
local_recovery_account() {
  local host="$1" user="$2" password="$3" member
  q1 "$host" "SET SESSION sql_log_bin = 0; DROP USER IF EXISTS '$user'@'%'; CREATE USER '$user'@'%' IDENTIFIED BY $(sq "$password") PASSWORD EXPIRE NEVER; GRANT REPLICATION SLAVE, BACKUP_ADMIN ON *.* TO '$user'@'%'; GRANT GROUP_REPLICATION_STREAM ON *.* TO '$user'@'%'; GRANT CONNECTION_ADMIN ON *.* TO '$user'@'%'; SET SESSION sql_log_bin = 1" >/dev/null ||
    api_error "$API: creating the recovery account $user on '$host:3306': $SQL_ERROR"
  while IFS= read -r member; do
    [[ -n "$member" ]] || continue
    set_recovery_channel "$member" "$user" "$password"
  done < <(q "$PRIMARY" "SELECT MEMBER_HOST FROM performance_schema.replication_group_members WHERE MEMBER_STATE = 'ONLINE'")
}

# restore_recovery_accounts: after a join with the MySQL stack every ONLINE member goes back
# to its own recovery account, with a new password set on the primary (replicated)
# (add_instance.cc: restore_recovery_account_all_members(reset_password) when the stack is
# MySQL; cluster_impl.cc reset_recovery_password). Members are the group's ONLINE members;
# each one's account is named after its server_id.
restore_recovery_accounts() {
  local member id password user
  while IFS= read -r member; do
    [[ -n "$member" ]] || continue
    id="$(q "$member" "SELECT @@server_id" 2>/dev/null)" || continue
    user="mysql_innodb_cluster_${id}"
    password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')Aa1!"
    if ! q "$PRIMARY" "ALTER USER '$user'@'%' IDENTIFIED BY $(sq "$password")" >/dev/null 2>&1; then
      echo "WARNING: could not reset the recovery account of '$member:3306'" >&2
      continue
    fi
    # The member must have applied the new password before its channel uses it.
    q "$member" "SELECT WAIT_FOR_EXECUTED_GTID_SET($(sq "$(q "$PRIMARY" "SELECT REPLACE(@@gtid_executed, '\\n', '')")"), 30)" >/dev/null 2>&1 || true
    set_recovery_channel "$member" "$user" "$password"
  done < <(q "$PRIMARY" "SELECT MEMBER_HOST FROM performance_schema.replication_group_members WHERE MEMBER_STATE = 'ONLINE'")
}

# settle_gr HOST: a server restarted with group_replication_start_on_boot keeps trying to
# join its old group for a while (until GR's join timeout); meanwhile GR settings cannot be
# changed (ERROR 3724 "cannot be set while START or STOP GROUP_REPLICATION is ongoing").
# The Shell refuses to add/rejoin an instance whose GR is starting or auto-rejoining
# (add_instance.cc: is_member_auto_rejoining); ASSUMPTION: the stand-in instead waits for
# the attempt to end and stops GR, up to MYSQLSH_STANDIN_TIMEOUT seconds, so an
# orchestrator retry is not needed.
settle_gr() {
  local host="$1" deadline
  deadline=$((SECONDS + ${MYSQLSH_STANDIN_TIMEOUT:-600}))
  [[ "$(q "$host" "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'group_replication'")" == ACTIVE ]] || return 0
  while ! q1 "$host" "STOP GROUP_REPLICATION" >/dev/null; do
    [[ "$SQL_ERROR" == *"3724"* || "$SQL_ERROR" == *"ongoing"* ]] ||
      api_error "$API: stopping Group Replication on '$host:3306': $SQL_ERROR"
    ((SECONDS < deadline)) || api_error "$API: '$host:3306' is still starting Group Replication; try again later"
    sleep 2
  done
}
