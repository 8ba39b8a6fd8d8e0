#!/usr/bin/env bash
# Back up this database node to S3: a physical copy made by the clone plugin
# (CLONE LOCAL DATA DIRECTORY, MySQL 9.7 manual "Cloning Data Locally"), streamed as
# tar | gzip to s3://BUCKET/clusters/CLUSTER_ID/backups/BACKUP_ID/data.tar.gz, then its
# manifest.json LAST: a backup without a manifest does not exist (a failed or killed run
# leaves none). Run on a SECONDARY: the primary is refused while another member is ONLINE,
# so backups never load the member taking the writes.
# Usage: db-backup.sh BUCKET CLUSTER_ID BACKUP_ID
# Exit: 0 done (last stdout line: the manifest), 3 refused (reason on stderr), other: failed.
# (ADMIN_SECRET_ID names the cluster admin password's secret)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly bucket="${1:?usage: db-backup.sh BUCKET CLUSTER_ID BACKUP_ID}"
readonly cluster_id="${2:?usage: db-backup.sh BUCKET CLUSTER_ID BACKUP_ID}"
readonly backup_id="${3:?usage: db-backup.sh BUCKET CLUSTER_ID BACKUP_ID}"
[[ "$cluster_id" =~ ^c-[0-9a-f]{12}$ ]] || { echo "bad cluster id '$cluster_id': c- and 12 lowercase hex digits" >&2; exit 2; }
[[ "$backup_id" =~ ^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$ ]] \
  || { echo "bad backup id '$backup_id': yyyymmddThhmmssZ-<8 lowercase hex>" >&2; exit 2; }

# The clone's parent: CLONE LOCAL writes as the mysqld user into a directory that must not
# exist yet (an absolute path; the server creates it), so its parent belongs to mysql.
readonly BACKUP_ROOT="${SYSROOT}/var/lib/mysql-backup"
readonly prefix="clusters/${cluster_id}/backups/${backup_id}"

# Role guard, from this member's own view of the group.
row="$(local_sql "SELECT IFNULL(MAX(CASE WHEN MEMBER_ID = @@server_uuid THEN MEMBER_STATE END), 'OFFLINE'), IFNULL(MAX(CASE WHEN MEMBER_ID = @@server_uuid THEN MEMBER_ROLE END), ''), SUM(MEMBER_ID <> @@server_uuid AND MEMBER_STATE = 'ONLINE') FROM performance_schema.replication_group_members")"
IFS=$'\t' read -r state role others_online <<<"$row"
if [[ "$state" != ONLINE ]]; then
  echo "refusing: this node is not an ONLINE group member (state $state); back up an ONLINE secondary" >&2
  exit 3
fi
if [[ "$role" == PRIMARY && "${others_online:-0}" != 0 && "${others_online:-0}" != NULL ]]; then
  echo "refusing: this node is the PRIMARY and $others_online other member(s) are ONLINE; back up a secondary" >&2
  exit 3
fi

scratch="$BACKUP_ROOT/$backup_id"
work="$(mktemp -d)"
probe_pid=""
cleanup() {
  if [[ -n "$probe_pid" ]]; then
    kill "$probe_pid" 2>/dev/null || true
    wait "$probe_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch" "$work"
}
trap cleanup EXIT
install -d -o mysql -m 0750 "$BACKUP_ROOT"
# A backup the agent killed (timeout, cancel: SIGKILL to the process group, so no EXIT trap)
# left its whole copy here. The orchestrator runs one backup of a cluster at a time, so
# anything here now is such a leftover, and two of them could fill the disk.
find "$BACKUP_ROOT" -mindepth 1 -maxdepth 1 -exec rm -rf {} +

started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
local_sql "CLONE LOCAL DATA DIRECTORY = '$scratch'"
# A LOCAL clone leaves performance_schema.clone_status's BINLOG_FILE, BINLOG_POSITION and
# GTID_EXECUTED empty (seen on 9.7.4; only a remote clone's donor reports them). The copy's
# GTID set is in its own mysql.gtid_executed table (InnoDB writes each transaction's GTID
# there at commit since 8.0.17, which is what makes a clone consistent), so a throwaway
# server started on the copy (no network, no binary log, its own socket) reads it. That
# start also finishes the clone's recovery, so the archive is a clean data directory.
# The binary log coordinates recorded are this server's right after the copy: an upper
# bound (every transaction of the copy is before them); gtidExecuted is the exact point.
binlog="$(local_sql "SHOW BINARY LOG STATUS" | cut -f1,2)"
IFS=$'\t' read -r binlog_file binlog_position <<<"$binlog"
version="$(local_sql "SELECT @@version")"
server_uuid="$(local_sql "SELECT @@server_uuid")"
source_host="$(local_sql "SELECT IFNULL(@@report_host, @@hostname)")"

socket="$work/probe.sock"
chown mysql "$work"
mysqld --no-defaults --user=mysql --datadir="$scratch" --socket="$socket" \
  --pid-file="$work/probe.pid" --log-error="$work/probe.err" --skip-networking --mysqlx=OFF \
  --skip-log-bin --server-id=1 --gtid-mode=ON --enforce-gtid-consistency=ON \
  --skip-replica-start --plugin-load-add=auth_socket.so &
probe_pid=$!
probe() { mysql --user=root --socket="$socket" --batch --skip-column-names -e "$1"; }
for ((i = 0; i < 600; i++)); do
  [[ -S "$socket" ]] && probe "SELECT 1" >/dev/null 2>&1 && break
  kill -0 "$probe_pid" 2>/dev/null || { echo "the copy does not start:" >&2; tail -5 "$work/probe.err" >&2; exit 1; }
  sleep 0.2
done
gtid_executed="$(probe "SELECT REPLACE(@@gtid_executed, '\n', '')")"
probe "SHUTDOWN"
wait "$probe_pid"
probe_pid=""
# What the throwaway server made for itself is not data: its auto.cnf (server_uuid), TLS
# keys and certificates, its temporary tablespace; the clone's own bookkeeping is done.
data_bytes="$(du -sb --exclude=auto.cnf --exclude='*.pem' --exclude='#innodb_temp' --exclude='#clone' --exclude=ibtmp1 "$scratch" | cut -f1)"
# The CLI sizes a stream's multipart parts from --expected-size (needed above 50 GB: at most
# 10,000 parts). gzip can grow incompressible data a little, and tar adds headers: 1% and
# 1 MiB of headroom over the uncompressed size.
expected_size=$((data_bytes + data_bytes / 100 + 1048576))

# tar | gzip | tee: the archive's SHA-256 and size are taken from the very bytes uploaded.
mkfifo "$work/sha" "$work/count"
sha256sum <"$work/sha" | cut -d' ' -f1 >"$work/sha256" &
sha_pid=$!
wc -c <"$work/count" >"$work/bytes" &
count_pid=$!
tar -C "$scratch" --exclude=./auto.cnf --exclude='./*.pem' --exclude='./#innodb_temp' --exclude=./ibtmp1 \
    --exclude='./#clone' -cf - . \
  | gzip -c \
  | tee "$work/sha" "$work/count" \
  | aws s3 cp - "s3://${bucket}/${prefix}/data.tar.gz" --only-show-errors --expected-size "$expected_size"
wait "$sha_pid" "$count_pid"
sha256="$(cat "$work/sha256")"
archive_bytes="$(tr -d ' ' <"$work/bytes")"
completed_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

manifest="$(printf '{"formatVersion":1,"backupId":%s,"clusterId":%s,"method":"clone-local","mysqlVersion":%s,"sourceHost":%s,"sourceServerUuid":%s,"sourceRole":%s,"startedAt":%s,"completedAt":%s,"gtidExecuted":%s,"binlogFile":%s,"binlogPosition":%s,"dataBytes":%s,"archive":{"key":%s,"compression":"gzip","bytes":%s,"sha256":%s}}' \
  "$(json_string "$backup_id")" "$(json_string "$cluster_id")" "$(json_string "${version%%-*}")" \
  "$(json_string "$source_host")" "$(json_string "$server_uuid")" "$(json_string "$role")" \
  "$(json_string "$started_at")" "$(json_string "$completed_at")" "$(json_string "$gtid_executed")" \
  "$(json_string "$binlog_file")" "${binlog_position:-0}" "$data_bytes" \
  "$(json_string "${prefix}/data.tar.gz")" "$archive_bytes" "$(json_string "$sha256")")"
printf '%s\n' "$manifest" | aws s3 cp - "s3://${bucket}/${prefix}/manifest.json" --only-show-errors
printf '%s\n' "$manifest"
