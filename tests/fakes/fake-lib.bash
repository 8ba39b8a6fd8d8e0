#!/usr/bin/env bash
# Shared by the recording fakes of tests/fakes/ (used by tests/tests/db_scripts.rs and by the
# local cloud's SSM agent stand-in). A node's state lives in $FAKE_MYSQL_ROOT/<host>/
# {state,role,group,cluster,gtid,plugins,server,...}; its files under $HA_SYSROOT; every call
# is appended to $FAKE_MYSQL_ROOT/calls.log (argv only: secrets must never be there).
#
# Rule for every fake here: it may not accept what the real tool rejects. Each rule cites the
# manual page or source file it follows; where a behaviour is an assumption, the comment says
# so. Anything a fake does not know is refused (exit 2, "not emulated"), never accepted.
set -euo pipefail

readonly root="${FAKE_MYSQL_ROOT:?FAKE_MYSQL_ROOT is not set}"

record() {
  printf '%s\n' "$*" >>"$root/calls.log"
}

# 127.0.0.1 is the node the script runs on.
node_dir() {
  local host="$1"
  [[ "$host" == "127.0.0.1" || "$host" == "localhost" ]] && host="${FAKE_NODE_HOST:?}"
  mkdir -p "$root/$host"
  printf '%s' "$root/$host"
}

read_attr() {
  cat "$1/$2" 2>/dev/null || true
}

write_attr() {
  printf '%s' "$3" >"$1/$2"
}

# An absolute path of the instance, inside this node's sysroot.
sys_path() {
  printf '%s%s' "${HA_SYSROOT:-}" "$1"
}

check_password() {
  if [[ "$1" != "${FAKE_MYSQL_PASSWORD:?}" ]]; then
    echo "ERROR 1045 (28000): Access denied for user 'clusteradmin'" >&2
    exit 1
  fi
}

# Packages installed on this node (by the dnf fake), one name a line.
installed() {
  grep -qx "$1" "$(node_dir "${FAKE_NODE_HOST:?}")/packages" 2>/dev/null
}

# Is Group Replication's plugin installed on the node in directory $1? MySQL Shell installs
# it (INSTALL PLUGIN, kept in mysql.plugin across restarts) when it creates, adds or reboots
# a member; until then the server knows none of its group_replication_* variables.
# (MySQL 8.4 manual, "Group Replication System Variables": "these variables are available
# only when the plugin is installed"; https://dev.mysql.com/doc/refman/8.4/en/group-replication-system-variables.html)
gr_plugin_installed() {
  grep -qx group_replication "$1/plugins" 2>/dev/null
}

install_gr_plugin() {
  gr_plugin_installed "$1" || printf 'group_replication\n' >>"$1/plugins"
}

# ---------------------------------------------------------------------------------------------
# mysqld's option files and options.
#
# Files read, in order (MySQL 8.4 manual, "Using Option Files", table "Option Files Read on Unix
# and Unix-Like Systems"; https://dev.mysql.com/doc/refman/8.4/en/option-files.html):
# /etc/my.cnf, /etc/mysql/my.cnf, SYSCONFDIR/my.cnf (/etc for Oracle's RPMs, so /etc/my.cnf
# again), $MYSQL_HOME/my.cnf, --defaults-extra-file, ~/.my.cnf. The fake reads the first two
# inside the sysroot; it assumes no $MYSQL_HOME and no ~/.my.cnf for the mysql service user.
# Inside a file, `!include FILE` and `!includedir DIR` (every *.cnf file of DIR on Unix) are
# followed; nothing else pulls in another file, so a file in /etc/my.cnf.d/ is read only when
# /etc/my.cnf names that directory, which Oracle's RPM my.cnf does not
# (mysql-server packaging/rpm-common/my.cnf.in: [mysqld] datadir, socket, log-error, pid-file).
# The server reads the groups [mysqld], [server] and [mysqld-<major.minor>] (same page).
# ---------------------------------------------------------------------------------------------

# The [mysqld]-group options of FILE (and the files it includes) as "name=value" lines.
mysqld_file_options() {
  local file="$1" line group="" name value target
  [[ -f "$file" ]] || return 0
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%%#*}"
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    [[ -z "$line" || "$line" == ";"* ]] && continue
    case "$line" in
      "!includedir "*)
        target="$(sys_path "${line#!includedir }")"
        for included in "$target"/*.cnf; do
          [[ -f "$included" ]] && mysqld_file_options "$included"
        done
        continue
        ;;
      "!include "*) mysqld_file_options "$(sys_path "${line#!include }")"; continue ;;
      "["*"]") group="${line:1:${#line}-2}"; continue ;;
      *) ;;
    esac
    case "$group" in
      mysqld | server | mysqld-8.4) ;;
      *) continue ;;
    esac
    name="${line%%=*}"
    name="${name%"${name##*[![:space:]]}"}"
    if [[ "$line" == *=* ]]; then
      value="${line#*=}"
      value="${value#"${value%%[![:space:]]*}"}"
      printf '%s=%s\n' "$name" "$value"
    else
      printf '%s\n' "$name"
    fi
  done <"$file"
}

# Every option mysqld would read from its option files on this node, in file order.
mysqld_config_options() {
  mysqld_file_options "$(sys_path /etc/my.cnf)"
  mysqld_file_options "$(sys_path /etc/mysql/my.cnf)"
}

# Server options and system variables the fake knows, valid in MySQL 8.4 LTS and 9.7 LTS alike
# (MySQL 8.4 and 9.7 manuals, "Server Option, System Variable, and Status Variable Reference"
# and "Server Command Options"; https://dev.mysql.com/doc/refman/8.4/en/server-option-variable-reference.html).
# Names use '_' (mysqld treats '-' and '_' alike in option names). An option missing here is
# refused even when real: add it only after checking it on both pages. Deliberately absent
# because the server no longer knows them ("Option and Variable Changes for MySQL 8.4/8.3/8.2",
# https://dev.mysql.com/doc/mysqld-version-reference/en/optvar-changes-8-4.html):
# binlog_transaction_dependency_tracking (removed 8.4.0: WRITESET is now built in),
# default_authentication_plugin, avoid_temporal_upgrade, have_ssl, have_openssl (removed
# 8.4.0), transaction_write_set_extraction, master_info_repository, relay_log_info_repository,
# group_replication_ip_whitelist, group_replication_primary_member (removed 8.3.0),
# expire_logs_days (removed 8.2.0).
readonly MYSQLD_OPTIONS=" basedir bind_address binlog_checksum binlog_expire_logs_seconds
  binlog_format binlog_transaction_dependency_history_size character_set_server
  collation_server daemonize datadir default_time_zone disabled_storage_engines
  enforce_gtid_consistency gtid_mode initialize initialize_insecure innodb_buffer_pool_size
  innodb_dedicated_server log_bin log_error log_error_verbosity log_replica_updates
  log_timestamps lower_case_table_names max_connections mysqlx mysqlx_port pid_file
  plugin_load plugin_load_add port relay_log replica_parallel_workers
  replica_preserve_commit_order report_host report_port require_secure_transport
  secure_file_priv server_id skip_name_resolve skip_networking socket ssl_ca ssl_cert ssl_key
  tls_version user validate_config version "

# The group_replication_* options the plugin no longer has (removed 8.3.0 / 8.4.0, pages above).
readonly GR_REMOVED=" group_replication_ip_whitelist group_replication_primary_member
  group_replication_recovery_complete_at group_replication_allow_local_disjoint_gtids_join "

# Check mysqld's options: from the option files, then the command line (ARGS). The plugin's
# group_replication_* options are known only when it is loaded: by plugin-load(-add) naming
# group_replication.so, or (when not initializing) because it was installed before. Any other
# unknown option aborts the server; with the `loose-` prefix it is a warning only (MySQL 8.4
# manual, "Program Option Modifiers": "If an option is prefixed by --loose, a program does not
# exit with an error if it does not recognize the option, but instead issues only a warning";
# https://dev.mysql.com/doc/refman/8.4/en/option-modifiers.html). Messages as the server
# writes them: [MY-000068] "unknown option '--no-such-option'." then [MY-010119] "Aborting"
# (MySQL 8.4 manual, "Server Configuration Validation",
# https://dev.mysql.com/doc/refman/8.4/en/server-configuration-validation.html), and for a
# NAME=VALUE option [MY-000067] "unknown variable 'tx_read_only=on'." (WL#12360's example in
# the MySQL Server blog "How to validate server configuration settings").
# Prints the accepted options as "name=value" (names normalised to '_') on stdout.
mysqld_check_options() {
  local initializing="$1" here="$2"
  shift 2
  local entries=() entry raw name plugins="" loaded=false failed=false
  while IFS= read -r entry; do entries+=("file:$entry"); done < <(mysqld_config_options)
  for entry in "$@"; do entries+=("cli:${entry#--}"); done
  for entry in "${entries[@]}"; do
    raw="${entry#*:}"
    name="${raw%%=*}"
    name="${name//-/_}"
    if [[ "$name" == plugin_load || "$name" == plugin_load_add ]]; then
      plugins+=" ${raw#*=}"
    fi
  done
  if [[ "$plugins" == *group_replication.so* ]] || { [[ "$initializing" == false ]] && gr_plugin_installed "$here"; }; then
    loaded=true
  fi
  for entry in "${entries[@]}"; do
    raw="${entry#*:}"
    name="${raw%%=*}"
    name="${name//-/_}"
    local loose=false
    if [[ "$name" == loose_* ]]; then
      loose=true
      name="${name#loose_}"
    fi
    local known=false
    if listed "$MYSQLD_OPTIONS" "$name"; then
      known=true
    elif [[ "$name" == group_replication_* && "$loaded" == true ]] && ! listed "$GR_REMOVED" "$name"; then
      # Assumption: every other group_replication_* name is one the loaded plugin knows.
      known=true
    fi
    if [[ "$known" == true ]]; then
      if [[ "$raw" == *=* ]]; then printf '%s=%s\n' "$name" "${raw#*=}"; else printf '%s\n' "$name"; fi
      continue
    fi
    if [[ "$loose" == true ]]; then
      echo "[Warning] [MY-000067] [Server] unknown variable '$raw'." >&2
      continue
    fi
    if [[ "$raw" == *=* ]]; then
      echo "[ERROR] [MY-000067] [Server] unknown variable '$raw'." >&2
    else
      echo "[ERROR] [MY-000068] [Server] unknown option '--$raw'." >&2
    fi
    failed=true
    break
  done
  if [[ "$failed" == true ]]; then
    echo "[ERROR] [MY-010119] [Server] Aborting" >&2
    return 1
  fi
}

# The value of option NAME in "name=value" lines on stdin (the last one wins, as in mysqld).
option_value() {
  sed -n "s/^$1=//p" | tail -n1
}

# Is NAME one of the words of LIST (words separated by spaces or newlines)?
listed() {
  local list="${1//$'\n'/ }"
  [[ " $list " == *" $2 "* ]]
}

# The InnoDB Cluster metadata of the node in directory $1: the `address` ("host:port") of
# each row of mysql_innodb_cluster_metadata.instances, one a line, in instance_id order
# (mysql-shell modules/adminapi/common/metadata/metadata-model-2.2.0.sql; the address is the
# instance's COALESCE(@@report_host, @@hostname):port, modules/adminapi/common/sql.cc and
# mysqlshdk/libs/mysql/instance.cc get_canonical_address; here the node's host name). The
# schema exists on a node exactly when it holds a cluster (the `cluster` attribute).
metadata_addresses() {
  read_attr "$1" metadata
}

# The metadata is a schema replicated by the group: a change made through one member reaches
# every member ONLINE or RECOVERING in group $1; an OFFLINE or unreachable one keeps its copy.
# Sets the instances to the lines of $2 on each of them.
replicate_metadata() {
  local group="$1" addresses="$2" dir
  for dir in "$root"/*/; do
    [[ -n "$group" && "$(read_attr "$dir" group)" == "$group" ]] || continue
    case "$(read_attr "$dir" state)" in
      ONLINE | RECOVERING) write_attr "$dir" metadata "$addresses" ;;
      *) ;;
    esac
  done
}

# Is this node's server running (started by the systemctl fake)?
server_running() {
  [[ "$(read_attr "$1" server)" == running ]]
}
