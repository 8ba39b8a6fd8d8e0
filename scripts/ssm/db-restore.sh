#!/usr/bin/env bash
# Restore a backup made by db-backup.sh onto this node, the seed of a new cluster: run after
# db-install.sh and before db-create-cluster.sh. The archive's SHA-256 is checked against
# the manifest before mysqld is stopped; the node's data directory is kept aside during the
# swap and put back when anything fails. With STOP_AT, the source cluster's archived binary
# logs (db-binlog-archive.sh) are replayed up to, excluding, that second (point in time).
# Afterwards the node is a standalone server holding the source's data, with this cluster's
# passwords, no cluster metadata, no group settings and no replication channels: ready for
# db-create-cluster.sh, whose joiners then get the data by clone.
# Usage: db-restore.sh BUCKET SOURCE_CLUSTER_ID BACKUP_ID [STOP_AT]   (STOP_AT e.g. 2026-12-01T06:30:00Z)
# Exit: 0 restored or already restored from that backup (last stdout line JSON
# {"backupId","gtidExecuted","appliedUntil"}), 3 refused (reason on stderr), other: failed.
# (ADMIN_SECRET_ID and APP_SECRET_ID name this cluster's two passwords' secrets)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly usage="usage: db-restore.sh BUCKET SOURCE_CLUSTER_ID BACKUP_ID [STOP_AT]"
readonly bucket="${1:?$usage}" source_cluster="${2:?$usage}" backup_id="${3:?$usage}"
readonly stop_at="${4:-}"
[[ "$source_cluster" =~ ^c-[0-9a-f]{12}$ ]] || { echo "bad cluster id '$source_cluster': c- and 12 lowercase hex digits" >&2; exit 2; }
[[ "$backup_id" =~ ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$ ]] \
  || { echo "bad backup id '$backup_id': yyyymmddThhmmssZ-<8 lowercase hex>" >&2; exit 2; }
[[ -z "$stop_at" || "$stop_at" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]] \
  || { echo "bad STOP_AT '$stop_at': RFC 3339 UTC to the second, e.g. 2026-12-01T06:30:00Z" >&2; exit 2; }

readonly DATADIR="${SYSROOT}/var/lib/mysql"
readonly STATE="${SYSROOT}/var/lib/ha-orchestrator"
readonly MARKER="$RESTORE_MARKER"
readonly backup="s3://${bucket}/clusters/${source_cluster}/backups/${backup_id}"

# root logs in over the socket (auth_socket, db-install.sh), in the restored mysql.user too.
root_sql() {
  mysql --user=root --batch --skip-column-names "$@"
}
sql_quote() {
  local value="${1//\\/\\\\}"
  printf "'%s'" "${value//\'/\'\'}"
}

# Idempotence: a node restored from this backup answers what it answered then.
if [[ -s "$MARKER" ]]; then
  if [[ "$(head -1 "$MARKER")" == "$backup_id" ]]; then
    echo "already restored from backup $backup_id; nothing to do"
    tail -1 "$MARKER"
    exit 0
  fi
  echo "refusing: this node already holds a restore of backup $(head -1 "$MARKER")" >&2
  exit 3
fi

# A restore the agent killed mid-swap (a timeout or cancel sends SIGKILL to the whole
# process group, amazon-ssm-agent executers_unix.go killProcess, so no EXIT trap runs) left
# the node's previous data directory aside and no marker: put it back before anything else.
if [[ -d "${SYSROOT}/var/lib/mysql-before-restore" ]]; then
  echo "an interrupted restore left the previous data directory aside; putting it back"
  systemctl stop mysqld
  rm -rf "$DATADIR"
  mv "${SYSROOT}/var/lib/mysql-before-restore" "$DATADIR"
  systemctl start mysqld
fi

# Only a node that is in no group and holds no data is overwritten.
IFS=$'\x1f' read -r state _role group cluster _gtid < <(node_view)
if [[ -n "$group" || "$state" != OFFLINE || -n "$cluster" ]]; then
  echo "refusing: this node is $state in group ${group:-none} (cluster ${cluster:-none}); restore onto a fresh node only" >&2
  exit 3
fi
schemas="$(root_sql -e "SELECT GROUP_CONCAT(SCHEMA_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql','sys','information_schema','performance_schema')")"
if [[ -n "$schemas" && "$schemas" != NULL ]]; then
  echo "refusing: this node holds data (schemas $schemas); restore onto a fresh node only" >&2
  exit 3
fi

work="${SYSROOT}/var/lib/mysql-restore/${backup_id}"
aside="${SYSROOT}/var/lib/mysql-before-restore"
swapped=false
finish() {
  local status=$?
  if [[ "$status" != 0 && "$swapped" == true ]]; then
    echo "restore failed (exit $status): putting the previous data directory back" >&2
    systemctl stop mysqld || true
    rm -rf "$DATADIR"
    mv "$aside" "$DATADIR"
    systemctl start mysqld || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap finish EXIT
rm -rf "$work"
mkdir -p "$work" "$STATE"

# The manifest first: only a backup with a manifest exists.
aws s3 cp "$backup/manifest.json" "$work/manifest.json" --only-show-errors
manifest="$(cat "$work/manifest.json")"
field() {
  root_sql -e "SELECT JSON_UNQUOTE(JSON_EXTRACT(CAST($(sql_quote "$manifest") AS JSON), '$1'))"
}
[[ "$(field '$.backupId')" == "$backup_id" && "$(field '$.formatVersion')" == 1 ]] \
  || { echo "manifest of $backup_id names another backup or format" >&2; exit 1; }
archive_key="$(field '$.archive.key')"
expected_sha="$(field '$.archive.sha256')"
aws s3 cp "s3://${bucket}/${archive_key}" "$work/data.tar.gz" --only-show-errors
actual_sha="$(sha256sum "$work/data.tar.gz" | cut -d' ' -f1)"
if [[ "$actual_sha" != "$expected_sha" ]]; then
  echo "archive of $backup_id is corrupt: SHA-256 $actual_sha, manifest says $expected_sha; nothing changed" >&2
  exit 1
fi
mkdir "$work/data"
tar -xzf "$work/data.tar.gz" -C "$work/data"
rm -f "$work/data.tar.gz"

# The source's archived binary logs, before anything stops (a download failure changes
# nothing). One folder per server (binlogs/<server uuid>/), each a chain of files.
if [[ -n "$stop_at" ]]; then
  mkdir "$work/binlogs"
  aws s3 cp --recursive "s3://${bucket}/clusters/${source_cluster}/binlogs/" "$work/binlogs" --only-show-errors
fi

# The swap. This node keeps its own identity: its auto.cnf (server_uuid) and TLS keys; the
# archive carries neither, nor mysqld-auto.cnf (a clone does not copy persisted settings).
systemctl stop mysqld
rm -rf "$aside"
mv "$DATADIR" "$aside"
swapped=true
mv "$work/data" "$DATADIR"
cp -p "$aside/auto.cnf" "$DATADIR/"
cp -p "$aside"/*.pem "$DATADIR/"
chown -R mysql: "$DATADIR"
systemctl start mysqld
# A clone of a SECONDARY may come up read-only; the replay below writes.
root_sql -e "SET GLOBAL super_read_only = OFF; SET GLOBAL read_only = OFF"

# Point in time: each server's chain in the order of its first event (the primaries one
# after the other), replayed by mysqlbinlog up to STOP_AT. Transactions the backup already
# holds are skipped by the server itself: a transaction whose GTID is in gtid_executed is
# ignored (MySQL 9.7 manual, "GTID Auto-Skip"), so overlapping chains are harmless.
# mysqlbinlog stops at the first event whose timestamp is equal to or later than
# --stop-datetime, read "relative to the local time zone on the machine where you run
# mysqlbinlog" (MySQL 9.7 manual, mysqlbinlog options): TZ=UTC, as STOP_AT is UTC.
applied_until=null
if [[ -n "$stop_at" ]]; then
  chains=()
  for dir in "$work/binlogs"/*/; do
    [[ -d "$dir" ]] || continue
    # Whole pipelines only: under pipefail a reader that stops early (head, awk's exit)
    # kills its writer with SIGPIPE and the script with it, once the output outgrows the
    # pipe's buffer (a chain of hundreds of files, a binary log of more than 64 KiB).
    mapfile -t files < <(find "$dir" -maxdepth 1 -type f -name '*.[0-9]*' | sort)
    [[ ${#files[@]} -gt 0 ]] || continue
    when="$(TZ=UTC mysqlbinlog "${files[0]}" | awk '!seen && /^#[0-9]{6} +[0-9]+:[0-9]+:[0-9]+/ { split($2, t, ":"); printf "%s%02d%02d%02d\n", substr($1, 2), t[1], t[2], t[3]; seen = 1 }')"
    chains+=("${when:-0} $dir")
  done
  stop_datetime="${stop_at/T/ }"
  stop_datetime="${stop_datetime%Z}"
  while read -r _when dir; do
    [[ -n "${dir:-}" ]] || continue
    mapfile -t files < <(find "$dir" -maxdepth 1 -type f -name '*.[0-9]*' | sort)
    echo "replaying ${#files[@]} binary log(s) of server $(basename "$dir") up to $stop_at"
    TZ=UTC mysqlbinlog --stop-datetime="$stop_datetime" "${files[@]}" | root_sql
  done < <(printf '%s\n' "${chains[@]+"${chains[@]}"}" | sort)
  applied_until="$(json_string "$stop_at")"
fi

# This cluster's accounts and no trace of the source's cluster, none of it binary-logged
# (the joiners copy this server by clone). The restored mysql.user is the source's: the
# admin and application passwords become this cluster's secrets.
admin="$(admin_password)"
app="$(app_password)"
recovery_users="$(root_sql -e "SELECT CONCAT(QUOTE(user), '@', QUOTE(host)) FROM mysql.user WHERE user LIKE 'mysql\\_innodb\\_cluster\\_%'" | paste -sd, -)"
root_sql <<SQL
SET SESSION sql_log_bin = 0;
SET GLOBAL super_read_only = OFF;
SET GLOBAL read_only = OFF;
CREATE USER IF NOT EXISTS '${ADMIN_USER}'@'%' IDENTIFIED BY $(sql_quote "$admin");
ALTER USER '${ADMIN_USER}'@'%' IDENTIFIED BY $(sql_quote "$admin");
GRANT ALL PRIVILEGES ON *.* TO '${ADMIN_USER}'@'%' WITH GRANT OPTION;
ALTER USER IF EXISTS '${APP_USER}'@'%' IDENTIFIED BY $(sql_quote "$app");
DROP SCHEMA IF EXISTS mysql_innodb_cluster_metadata;
${recovery_users:+DROP USER ${recovery_users};}
SQL
unset admin app
for channel in group_replication_recovery group_replication_applier; do
  root_sql -e "RESET REPLICA ALL FOR CHANNEL '$channel'" 2>/dev/null || true
done
root_sql -e "RESET PERSIST"
gtid_executed="$(root_sql -e "SELECT REPLACE(@@gtid_executed, '\n', '')")"

result="$(printf '{"backupId":%s,"gtidExecuted":%s,"appliedUntil":%s}' \
  "$(json_string "$backup_id")" "$(json_string "$gtid_executed")" "$applied_until")"
printf '%s\n%s\n' "$backup_id" "$result" >"$MARKER"
swapped=false
rm -rf "$aside"
echo "restored backup $backup_id of cluster $source_cluster"
printf '%s\n' "$result"
