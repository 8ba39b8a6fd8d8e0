#!/usr/bin/env bash
# Install and configure MySQL 9.7 LTS and MySQL Shell on a database node (Amazon Linux
# 2023), ready for InnoDB Cluster: GTIDs on, a unique server_id, report_host set, and the
# cluster admin account. Safe to run again: every step checks before it changes anything.
# Usage: db-install.sh     (ADMIN_SECRET_ID names the cluster admin password's secret)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly CONFIG="${SYSROOT}/etc/my.cnf.d/ha-orchestrator.cnf"
readonly DATADIR="${SYSROOT}/var/lib/mysql"
readonly MY_CNF="${SYSROOT}/etc/my.cnf"

# The MySQL repository only when a package is missing: an AMI that already carries them
# (EgressMode VpcEndpoints, no internet) must not need repo.mysql.com.
if ! rpm -q mysql-community-server mysql-shell >/dev/null 2>&1; then
  if ! rpm -q "$REPO_PACKAGE" >/dev/null 2>&1; then
    dnf install -y "$REPO_RPM"
  fi
  dnf install -y mysql-community-server mysql-shell
fi

# Initialise the data directory ourselves before anything starts the server: the packaged
# unit's first start (mysqld_pre_systemd) would initialise it with a random, expired root
# password instead. Root then logs in only over the socket.
first_start=false
if [[ ! -d "$DATADIR/mysql" ]]; then
  mysqld --initialize-insecure --user=mysql --datadir="$DATADIR"
  first_start=true
fi

# Identity from IMDSv2: server_id from the private address, report_host its DNS name.
token="$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)"
metadata() {
  curl -sf -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}
address="$(metadata local-ipv4)"
hostname="$(metadata local-hostname)"
IFS=. read -r a b c d <<<"$address"
server_id=$(( (a << 24 | b << 16 | c << 8 | d) % 4294967295 + 1 ))

# mysql_clone.so from the config, not INSTALL PLUGIN: a SECONDARY runs with super_read_only,
# where INSTALL PLUGIN (a write to mysql.plugin) is refused, and db-backup.sh clones locally
# on a secondary (MySQL 9.7 manual, "Installing the Clone Plugin": plugin-load-add).
desired="$(cat <<CNF
[mysqld]
server_id=${server_id}
report_host=${hostname}
gtid_mode=ON
enforce_gtid_consistency=ON
disabled_storage_engines=MyISAM,BLACKHOLE,FEDERATED,ARCHIVE,MEMORY
require_secure_transport=ON
plugin-load-add=auth_socket.so
plugin-load-add=mysql_clone.so
CNF
)"
# Oracle's RPM /etc/my.cnf includes no directory: without this line mysqld never reads the
# settings above.
include_changed=false
if ! grep -qx '!includedir /etc/my.cnf.d' "$MY_CNF" 2>/dev/null; then
  printf '!includedir /etc/my.cnf.d\n' >>"$MY_CNF"
  include_changed=true
fi
if [[ "$(cat "$CONFIG" 2>/dev/null || true)" != "$desired" || "$include_changed" == true ]]; then
  mkdir -p "$(dirname "$CONFIG")"
  printf '%s\n' "$desired" >"$CONFIG"
  systemctl restart mysqld
fi
systemctl enable --now mysqld
if [[ "$first_start" == true ]]; then
  mysql --user=root --batch -e "ALTER USER 'root'@'localhost' IDENTIFIED WITH auth_socket"
fi

# The cluster admin account, from the secret; root keeps its socket-only login.
password="$(admin_password)"
if ! mysql --user=root --batch --skip-column-names \
    -e "SELECT 1 FROM mysql.user WHERE user='${ADMIN_USER}'" | grep -q 1; then
  mysql --user=root --batch <<SQL
CREATE USER '${ADMIN_USER}'@'%' IDENTIFIED BY '${password//\'/\'\'}';
GRANT ALL PRIVILEGES ON *.* TO '${ADMIN_USER}'@'%' WITH GRANT OPTION;
SQL
fi
unset password
echo "MySQL $(mysqld --version | awk '{print $3}') ready on ${hostname} (server_id ${server_id})"
