#!/usr/bin/env bash
# Ship this node's closed binary logs to S3 for point-in-time restores
# (s3://BUCKET/clusters/CLUSTER_ID/binlogs/<server uuid>/<file>). Only the PRIMARY ships:
# it holds every transaction of the cluster in its binary log. It first closes the active
# log (FLUSH BINARY LOGS) when anything was committed since its last run, so what is
# committed before the run is in a closed file; the active log is never shipped (it is
# still being written). What was shipped is remembered on the node, so a file goes once.
# Usage: db-binlog-archive.sh BUCKET CLUSTER_ID
# Exit 0; last stdout line JSON: on the primary {"role":"PRIMARY","serverUuid":..,
# "shipped":[..],"consistentAt":..} (everything committed here before consistentAt is in S3),
# elsewhere {"role":"SECONDARY","skipped":true} (or the member state instead of SECONDARY).
# (ADMIN_SECRET_ID names the cluster admin password's secret)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly bucket="${1:?usage: db-binlog-archive.sh BUCKET CLUSTER_ID}"
readonly cluster_id="${2:?usage: db-binlog-archive.sh BUCKET CLUSTER_ID}"
[[ "$cluster_id" =~ ^c-[0-9a-f]{12}$ ]] || { echo "bad cluster id '$cluster_id': c- and 12 lowercase hex digits" >&2; exit 2; }
readonly STATE="${SYSROOT}/var/lib/ha-orchestrator/binlog-shipped"

mkdir -p "$STATE"
# One run at a time on a node (a slow upload must not be shipped twice).
exec 9>"$STATE/.lock"
flock 9

# Taken before reading anything: every transaction committed before this second is either
# in a log closed by an earlier run (gtid_executed unchanged) or by this run's flush.
consistent_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
IFS=$'\x1f' read -r state role _group _cluster gtid < <(node_view)
if [[ "$state" != ONLINE || "$role" != PRIMARY ]]; then
  printf '{"role":%s,"skipped":true}\n' "$(json_string "$([[ "$state" == ONLINE ]] && echo "$role" || echo "$state")")"
  exit 0
fi
server_uuid="$(local_sql "SELECT @@server_uuid")"
shipped_list="$STATE/$server_uuid"
touch "$shipped_list"

if [[ "$gtid" != "$(cat "$STATE/$server_uuid.gtid" 2>/dev/null || true)" ]]; then
  local_sql "FLUSH BINARY LOGS"
  printf '%s\n' "$gtid" >"$STATE/$server_uuid.gtid.pending"
fi
active="$(local_sql "SHOW BINARY LOG STATUS" | cut -f1)"
datadir="$(local_sql "SELECT @@datadir")"
shipped=()
while IFS=$'\t' read -r file _rest; do
  [[ -n "$file" && "$file" != "$active" ]] || continue
  grep -qxF "$file" "$shipped_list" && continue
  aws s3 cp "${SYSROOT}${datadir%/}/$file" \
    "s3://${bucket}/clusters/${cluster_id}/binlogs/${server_uuid}/${file}" --only-show-errors
  printf '%s\n' "$file" >>"$shipped_list"
  shipped+=("$file")
done < <(local_sql "SHOW BINARY LOGS")
# The GTID set is recorded only once its logs are all in S3: a failed upload flushes and
# ships again on the next run.
if [[ -f "$STATE/$server_uuid.gtid.pending" ]]; then
  mv "$STATE/$server_uuid.gtid.pending" "$STATE/$server_uuid.gtid"
fi

list=""
for file in "${shipped[@]+"${shipped[@]}"}"; do
  list+="${list:+,}$(json_string "$file")"
done
printf '{"role":"PRIMARY","serverUuid":%s,"shipped":[%s],"consistentAt":%s}\n' \
  "$(json_string "$server_uuid")" "$list" "$(json_string "$consistent_at")"
