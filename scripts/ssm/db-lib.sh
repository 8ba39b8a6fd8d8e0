#!/usr/bin/env bash
# Shared by the database scripts (the SSM documents ship it beside each script).
# Credentials come from Secrets Manager on the instance, with the instance role: they are
# never in a command line, a document parameter, user data or a log line.
set -euo pipefail

readonly ADMIN_USER="clusteradmin"
# The application's account and schema (WordPress on the web tier). Used by the scripts
# that source this file.
# shellcheck disable=SC2034
readonly APP_USER="wordpress" APP_DATABASE="wordpress"
# MySQL 9.7 LTS packages for Amazon Linux 2023 (EL9): Oracle's repository setup RPM, named
# after the series it enables by default (as mysql84-community-release was for 8.4 LTS; the
# 9.7 name follows that scheme, an assumption to check against
# https://dev.mysql.com/downloads/repo/yum/ before deploying). Used by the scripts that
# source this.
# shellcheck disable=SC2034
readonly REPO_PACKAGE="mysql97-community-release"
# shellcheck disable=SC2034
readonly REPO_RPM="https://repo.mysql.com/${REPO_PACKAGE}-el9-1.noarch.rpm"
# Prefix of every file path the scripts write: empty on an instance; the tests point it at
# a temp dir so the scripts run unprivileged against the recording fakes.
# shellcheck disable=SC2034
readonly SYSROOT="${HA_SYSROOT:-}"
# db-restore.sh writes the id of the backup it restored this node from here (first line);
# db-report.sh reports it, so the orchestrator creates the group only on a restored seed.
# shellcheck disable=SC2034
readonly RESTORE_MARKER="${SYSROOT}/var/lib/ha-orchestrator/restored-backup"

# A secret's value, read with the instance role.
secret_value() {
  aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text
}

# The cluster admin password, from the secret named by $ADMIN_SECRET_ID.
admin_password() {
  secret_value "${ADMIN_SECRET_ID:?ADMIN_SECRET_ID is not set}"
}

# The application user's password, from the secret named by $APP_SECRET_ID.
app_password() {
  secret_value "${APP_SECRET_ID:?APP_SECRET_ID is not set}"
}

# Run `mysqlsh <target> -- <object> <method> [args]`, the password on stdin.
shell_api() {
  local target="$1"
  shift
  admin_password | mysqlsh --passwords-from-stdin --uri "${ADMIN_USER}@${target}" -- "$@"
}

# Run the mysql client on HOST as the cluster admin with extra arguments; the password goes
# in a 0600 options file, not argv. SQL comes from the arguments or from stdin.
mysql_as_admin() {
  local host="$1" options status=0
  shift
  options="$(mktemp)"
  chmod 600 "$options"
  printf '[client]\nuser=%s\npassword=%s\nhost=%s\n' "$ADMIN_USER" "$(admin_password)" "$host" >"$options"
  mysql --defaults-extra-file="$options" --batch "$@" || status=$?
  rm -f "$options"
  return "$status"
}

# Run one SQL statement on HOST.
sql_on() {
  mysql_as_admin "$1" --skip-column-names -e "$2"
}

local_sql() {
  sql_on 127.0.0.1 "$1"
}

# Hosts of the group members this node sees, one per line.
group_members() {
  local_sql "SELECT MEMBER_HOST FROM performance_schema.replication_group_members WHERE MEMBER_STATE <> 'OFFLINE'"
}

# This node's view as "state role group-name cluster-name gtid-set", separated by the ASCII
# unit separator (\x1f): read splits on it without merging empty fields, which it does for a
# tab (IFS whitespace), so an OFFLINE member's empty role would shift every later field. The
# group name comes from performance_schema.global_variables: @@group_replication_group_name
# is an error (1193, unknown system variable) until MySQL Shell has installed the plugin.
node_view() {
  local member cluster
  member="$(local_sql "SELECT IFNULL(m.MEMBER_STATE,'OFFLINE'), IFNULL(m.MEMBER_ROLE,''), IFNULL((SELECT VARIABLE_VALUE FROM performance_schema.global_variables WHERE VARIABLE_NAME = 'group_replication_group_name'),''), REPLACE(@@gtid_executed, '\n', '') FROM (SELECT 1) AS one LEFT JOIN performance_schema.replication_group_members AS m ON m.MEMBER_ID = @@server_uuid")"
  cluster="$(local_sql "SELECT cluster_name FROM mysql_innodb_cluster_metadata.clusters LIMIT 1" 2>/dev/null || true)"
  IFS=$'\x1f' read -r state role group gtid <<<"${member//$'\t'/$'\x1f'}"
  printf '%s\x1f%s\x1f%s\x1f%s\x1f%s\n' "${state:-OFFLINE}" "${role:-}" "${group:-}" "${cluster:-}" "${gtid:-}"
}

# Escape a value for a JSON string (the values here are identifiers and GTID sets).
json_string() {
  local value="${1//\\/\\\\}"
  printf '"%s"' "${value//\"/\\\"}"
}
