#!/usr/bin/env bash
# Proof of the mysqlsh stand-in on real MySQL 9.7 servers, on hosts of local-cloud/hosts/ha-host
# (network namespace + overlay of the rootfs + the stand-ins on the PATH). Run as root:
#   local-cloud/standins/mysqlsh-realtest.bash        (about 3 minutes; exit 0 = every check held)
# Each server is configured the way the InnoDB Cluster requirements say (GTIDs, a unique
# server_id, report_host; /etc/my.cnf, which Oracle's RPM's mysqld reads) and started by the
# systemctl stand-in (supervised: the clone's restart, exit 16, comes back). Then:
#   1. dba create-cluster on m-db1, cluster add-instance m-db2 and m-db3 with clone: three ONLINE,
#      one PRIMARY, equal GTID sets, three instances in the metadata;
#   2. mysqlrouter --bootstrap against that metadata on m-web1, a write through 6446 lands on
#      the primary;
#   3. complete outage with m-db3 one transaction behind: every mysqld killed (-9) and
#      restarted, reboot-cluster-from-complete-outage from m-db3 reboots from an up-to-date
#      member, with the same group name, three ONLINE, no write lost;
#   4. m-db3 lost (killed): remove-instance without force is refused, with --force=true it is
#      gone from the metadata, the group keeps its two members;
#   5. a reachable member removed (it leaves the group, start_on_boot OFF) and added back with
#      incremental recovery, catching up a write it missed;
#   6. the command line: invalid options, unknown objects and non-emulated operations fail
#      with the real exit codes;
#   7. dba configure-instance on a fresh server: refused by create-cluster first, configured
#      with SET PERSIST[_ONLY], restarted with RESTART under the supervisor, then valid.
# Names m-*, network 10.99.0.0/16 (throwaway); everything is destroyed at the end.
set -euo pipefail
HERE="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
HA_HOST="$HERE/../hosts/ha-host"
readonly NET=m-net PASSWORD='Cl4ster-Adm1n!pw'
readonly RELEASE=https://repo.mysql.com/mysql97-community-release-el9-1.noarch.rpm

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo; echo "=== $*"; }
hx() {
  local host="$1"
  shift
  "$HA_HOST" exec "$host" MYSQLSH_STANDIN_TIMEOUT=300 -- "$@"
}
# root over the socket on HOST
root_sql() { hx "$1" mysql --user=root --batch --skip-column-names -e "$2"; }
shell() {
  local host="$1"
  shift
  printf '%s\n' "$PASSWORD" | hx "$host" mysqlsh --passwords-from-stdin --uri "clusteradmin@$host:3306" -- "$@"
}
# MYSQLSH_REALTEST_KEEP=1 keeps the hosts after a failure, to look at them.
cleanup() { "$HA_HOST" network-down "$NET" >/dev/null 2>&1 || true; }
finish() { [[ $? -ne 0 && -n "${MYSQLSH_REALTEST_KEEP:-}" ]] || cleanup; }
trap finish EXIT

db_host() {
  local host="$1" id="$2"
  "$HA_HOST" create "$NET" "$host" "10.99.0.$((10 + id))" "$host" >/dev/null
  hx "$host" dnf install -y "$RELEASE" >/dev/null
  hx "$host" dnf install -y mysql-community-server >/dev/null
  local root
  root="$("$HA_HOST" root "$host")"
  printf '%s\n' "server_id=$id" "report_host=$host" "gtid_mode=ON" "enforce_gtid_consistency=ON" \
    >>"$root/etc/my.cnf"
  hx "$host" mysqld --initialize-insecure --user=mysql
  hx "$host" systemctl start mysqld
  root_sql "$host" "CREATE USER 'clusteradmin'@'%' IDENTIFIED BY '$PASSWORD'; GRANT ALL PRIVILEGES ON *.* TO 'clusteradmin'@'%' WITH GRANT OPTION"
}

members() {
  root_sql "$1" "SELECT CONCAT(MEMBER_HOST, ' ', MEMBER_STATE, ' ', MEMBER_ROLE) FROM performance_schema.replication_group_members ORDER BY MEMBER_HOST"
}
gtids() { root_sql "$1" "SELECT REPLACE(@@gtid_executed, '\n', '')"; }
metadata_members() {
  root_sql "$1" "SELECT GROUP_CONCAT(address ORDER BY address) FROM mysql_innodb_cluster_metadata.instances"
}
wait_members() {
  local host="$1" want="$2" i
  for ((i = 0; i < 120; i++)); do
    # exactly WANT members in the view, all ONLINE (a lost member stays UNREACHABLE in the
    # view until it is expelled, and still counts towards the majority)
    local view
    view="$(members "$host" 2>/dev/null || true)"
    [[ "$(grep -c ONLINE <<<"$view")" == "$want" && "$(grep -c . <<<"$view")" == "$want" ]] && return 0
    sleep 1
  done
  members "$host" >&2 || true
  fail "$host does not see $want ONLINE members"
}

cleanup
"$HA_HOST" network-up "$NET" 10.99.0.0/16 >/dev/null
step "hosts m-db1..3 with real mysqld 9.7"
for i in 1 2 3; do db_host "m-db$i" "$i"; done

step "1. create the cluster and add two instances with clone"
shell m-db1 dba create-cluster demo --multiPrimary=false --memberSslMode=REQUIRED
shell m-db1 cluster add-instance m-db2:3306 --recoveryMethod=clone
shell m-db1 cluster add-instance m-db3:3306 --recovery-method=clone
wait_members m-db1 3
[[ "$(members m-db1 | grep -c PRIMARY)" == 1 ]] || fail "not exactly one PRIMARY"
[[ "$(gtids m-db1)" == "$(gtids m-db2)" && "$(gtids m-db1)" == "$(gtids m-db3)" ]] ||
  fail "GTID sets differ: $(gtids m-db1) / $(gtids m-db2) / $(gtids m-db3)"
[[ "$(metadata_members m-db3)" == "m-db1:3306,m-db2:3306,m-db3:3306" ]] ||
  fail "metadata members: $(metadata_members m-db3)"
[[ "$(root_sql m-db2 "SELECT cluster_name FROM mysql_innodb_cluster_metadata.clusters")" == demo ]] ||
  fail "cluster name in the metadata"
group="$(root_sql m-db1 "SELECT @@group_replication_group_name")"
echo "OK: three ONLINE, one PRIMARY, equal GTID sets, group $group"

step "2. Router bootstrap against the metadata, a write through 6446"
"$HA_HOST" create "$NET" m-web1 10.99.0.21 m-web1 >/dev/null
hx m-web1 dnf install -y "$RELEASE" >/dev/null
hx m-web1 dnf install -y mysql-router-community >/dev/null
printf '%s\n' "$PASSWORD" | hx m-web1 mysqlrouter --bootstrap clusteradmin@m-db1:3306 \
  --user=mysqlrouter --conf-base-port=6446 --force
if ! hx m-web1 systemctl start mysqlrouter; then
  tail -n 20 "$("$HA_HOST" root m-web1)"/var/log/mysqlrouter/mysqlrouter.{console,log} >&2 || true
  fail "mysqlrouter did not start"
fi
router_sql() {
  hx m-web1 mysql --host=127.0.0.1 --port="$1" --user=clusteradmin --password="$PASSWORD" \
    --batch --skip-column-names -e "$2" 2>/dev/null
}
router_sql 6446 "CREATE DATABASE t; CREATE TABLE t.x (id INT AUTO_INCREMENT PRIMARY KEY, v INT); INSERT INTO t.x (v) VALUES (1)"
[[ "$(router_sql 6446 "SELECT @@report_host")" == m-db1 ]] || fail "6446 does not reach the primary"
if grep -E "version not supported|not supported by this Router|ERROR" \
  "$("$HA_HOST" root m-web1)/var/log/mysqlrouter/mysqlrouter.log"; then
  fail "Router complains about the metadata"
fi
echo "OK: Router bootstrapped, 6446 writes on m-db1"

step "3. complete outage with m-db3 one transaction behind, reboot"
root_sql m-db3 "STOP GROUP_REPLICATION"
router_sql 6446 "INSERT INTO t.x (v) VALUES (2)"
for i in 1 2 3; do "$HA_HOST" kill "m-db$i"; done
for i in 1 2 3; do hx "m-db$i" systemctl start mysqld; done
if shell m-db3 dba reboot-cluster-from-complete-outage other 2>/dev/null; then
  fail "reboot of a cluster of another name accepted"
fi
shell m-db3 dba reboot-cluster-from-complete-outage demo
wait_members m-db1 3
[[ "$(root_sql m-db3 "SELECT @@group_replication_group_name")" == "$group" ]] || fail "group name changed"
[[ "$(root_sql m-db3 "SELECT COUNT(*) FROM t.x")" == 2 ]] || fail "a write was lost"
[[ "$(members m-db1 | grep PRIMARY | cut -d' ' -f1)" != m-db3 ]] || fail "the lagging member became the seed"
echo "OK: rebooted with group $group, both writes present"

step "4. lose m-db3 and remove it"
primary="$(members m-db2 | grep PRIMARY | cut -d' ' -f1)"
"$HA_HOST" kill m-db3
if shell "$primary" cluster remove-instance m-db3:3306 2>/dev/null; then
  fail "removal of an unreachable member without force accepted"
fi
shell "$primary" cluster remove-instance m-db3:3306 --force=true
[[ "$(metadata_members "$primary")" == "m-db1:3306,m-db2:3306" ]] ||
  fail "metadata members after removal: $(metadata_members "$primary")"
wait_members "$primary" 2
shell "$primary" cluster status
echo "OK: m-db3 removed from the metadata"

step "5. remove a reachable member, add it back with incremental recovery"
other=m-db1
[[ "$primary" == m-db1 ]] && other=m-db2
shell "$primary" cluster remove-instance "$other:3306"
[[ "$(metadata_members "$primary")" == "$primary:3306" ]] || fail "metadata after removing $other: $(metadata_members "$primary")"
[[ "$(root_sql "$other" "SELECT @@group_replication_start_on_boot")" == 0 ]] || fail "$other still starts GR on boot"
router_sql 6446 "INSERT INTO t.x (v) VALUES (3)"
shell "$primary" cluster add-instance "$other:3306" --recoveryMethod=incremental
wait_members "$primary" 2
[[ "$(root_sql "$other" "SELECT COUNT(*) FROM t.x")" == 3 ]] || fail "$other did not recover the missing write"
[[ "$(gtids "$primary")" == "$(gtids "$other")" ]] || fail "GTID sets differ after the incremental join"
echo "OK: $other removed and added back incrementally"

step "6. command line"
expect_status() {
  local want="$1" status=0
  shift
  printf '%s\n' "$PASSWORD" | hx m-db1 mysqlsh "$@" >/dev/null 2>&1 || status=$?
  [[ "$status" == "$want" ]] || fail "mysqlsh $*: exit $status, expected $want"
}
expect_status 1 --bogus --uri clusteradmin@m-db1:3306 -- cluster status
expect_status 10 --passwords-from-stdin --uri clusteradmin@m-db1:3306 -- cluster status --bogus
expect_status 10 --passwords-from-stdin --uri=clusteradmin@m-db1:3306 -- nosuchobject status
expect_status 10 --passwords-from-stdin clusteradmin@m-db1:3306 -- cluster
expect_status 2 --passwords-from-stdin clusteradmin@m-db1:3306 -- cluster dissolve
expect_status 0 --passwords-from-stdin clusteradmin@m-db1:3306 -- cluster status
echo "OK: command line"

step "7. configure-instance on a fresh server (server_id the compiled default)"
"$HA_HOST" create "$NET" m-db4 10.99.0.14 m-db4 >/dev/null
hx m-db4 dnf install -y "$RELEASE" >/dev/null
hx m-db4 dnf install -y mysql-community-server >/dev/null
printf '%s\n' "report_host=m-db4" >>"$("$HA_HOST" root m-db4)/etc/my.cnf"
hx m-db4 mysqld --initialize-insecure --user=mysql
hx m-db4 systemctl start mysqld
root_sql m-db4 "CREATE USER 'clusteradmin'@'%' IDENTIFIED BY '$PASSWORD'; GRANT ALL PRIVILEGES ON *.* TO 'clusteradmin'@'%' WITH GRANT OPTION"
if shell m-db4 dba create-cluster fresh >/dev/null 2>&1; then
  fail "create-cluster accepted an unconfigured server"
fi
shell m-db4 dba configure-instance | grep -q "needs to be restarted" || fail "no restart note"
# MySQL 9.7's defaults already have GTIDs on; server_id stays 1, the compiled default.
[[ "$(root_sql m-db4 "SELECT @@server_id")" == 1 ]] || fail "server_id changed without a restart"
shell m-db4 dba configure-instance --restart=true
[[ "$(root_sql m-db4 "SELECT @@gtid_mode, @@enforce_gtid_consistency")" == $'ON\tON' ]] || fail "GTIDs not on"
[[ "$(root_sql m-db4 "SELECT VARIABLE_SOURCE FROM performance_schema.variables_info WHERE VARIABLE_NAME = 'server_id'")" == PERSISTED ]] ||
  fail "server_id not persisted"
[[ "$(root_sql m-db4 "SELECT @@server_id")" != 1 ]] || fail "server_id still 1 after the restart"
shell m-db4 dba configure-instance | grep -q "is valid for InnoDB Cluster usage" || fail "not valid after configuring"
echo "OK: configure-instance"
echo
echo "ALL CHECKS PASSED"
