#!/usr/bin/env bash
# Install MySQL Router on a web node and bootstrap it against the InnoDB Cluster, so the
# application writes to 127.0.0.1:6446 (read-write, follows the primary) and reads from
# 127.0.0.1:6447; then points WordPress at 127.0.0.1:6446 with the application account.
# Safe to run again: a router already bootstrapped for the cluster is only (re)started, and
# a WordPress configuration that already matches is left as it is.
# Usage: web-router.sh CLUSTER_NAME PRIMARY_HOST  (ADMIN_SECRET_ID, APP_SECRET_ID: secrets)
set -euo pipefail
# shellcheck source=db-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/db-lib.sh"

readonly name="${1:?usage: web-router.sh CLUSTER_NAME PRIMARY_HOST}"
readonly primary="${2:?usage: web-router.sh CLUSTER_NAME PRIMARY_HOST}"
readonly CONFIG="${SYSROOT}/etc/mysqlrouter/mysqlrouter.conf"
readonly WP_DIR="${SYSROOT}/usr/share/nginx/wordpress"

# The MySQL repository only when Router is missing: an AMI that already carries it
# (EgressMode VpcEndpoints, no internet) must not need repo.mysql.com.
if ! rpm -q mysql-router-community >/dev/null 2>&1; then
  if ! rpm -q "$REPO_PACKAGE" >/dev/null 2>&1; then
    dnf install -y "$REPO_RPM"
  fi
  dnf install -y mysql-router-community
fi
# Router names the cluster in its [metadata_cache:...] section as metadata_cluster=.
if grep -qs "^metadata_cluster=${name}\$" "$CONFIG"; then
  echo "router already bootstrapped for cluster $name"
else
  # The metadata cache finds every member from any one; --force replaces a router
  # configuration left by an earlier cluster on a reused instance. Router to server always
  # over TLS (--server-ssl-mode=REQUIRED): PHP's mysqli (WordPress) connects to Router
  # without TLS, and the servers refuse plaintext (require_secure_transport=ON). Router
  # 9.7's bootstrap writes PREFERRED, which works while TLS does, but Router's default when
  # the option is unset is AS_CLIENT, a plain connection for a plain client, refused
  # (1045 once the authentication cache is cold: measured on 9.7.4); REQUIRED states it and
  # fails loudly instead of falling back.
  admin_password | mysqlrouter --bootstrap "${ADMIN_USER}@${primary}:3306" \
    --user=mysqlrouter --conf-base-port=6446 --server-ssl-mode=REQUIRED --force
fi
systemctl enable --now mysqlrouter
systemctl restart mysqlrouter
echo "MySQL Router for cluster $name listening on 127.0.0.1:6446 (read-write) and 6447 (read-only)"

# WordPress (installed by the web user data) writes through the router. Its configuration
# is written from the sample with bash alone: the password never reaches a command line.
if [[ -f "$WP_DIR/wp-config-sample.php" ]]; then
  password="$(app_password)"
  current="$(cat "$WP_DIR/wp-config.php" 2>/dev/null || true)"
  if [[ "$current" != *"'127.0.0.1:6446'"* || "$current" != *"'${password}'"* ]]; then
    config="$(<"$WP_DIR/wp-config-sample.php")"
    config="${config//database_name_here/$APP_DATABASE}"
    config="${config//username_here/$APP_USER}"
    config="${config//password_here/$password}"
    config="${config//\'localhost\'/\'127.0.0.1:6446\'}"
    # Unique keys and salts, one per install (kept on later runs: sessions survive).
    while [[ "$config" == *"put your unique phrase here"* ]]; do
      config="${config/put your unique phrase here/$(head -c 48 /dev/urandom | base64 -w0)}"
    done
    (umask 027 && printf '%s\n' "$config" >"$WP_DIR/wp-config.php")
    echo "WordPress configured: ${APP_USER}@127.0.0.1:6446, schema ${APP_DATABASE}"
  else
    echo "WordPress already uses 127.0.0.1:6446"
  fi
  unset password
  # Only PHP reads it, and PHP runs as php-fpm's pool user: `apache` on Amazon Linux 2023,
  # whose /etc/php-fpm.d/www.conf (Fedora's php packaging, php-fpm-www.conf: "user = apache",
  # "group = apache", listen.acl_users = apache,nginx; that AL2023 keeps Fedora's file is an
  # assumption) runs the workers as apache:apache; nginx only passes *.php to the socket and
  # never reads the file. root:nginx made every page a 500. Set on every run, so a node
  # configured by an earlier version is corrected too.
  chown root:apache "$WP_DIR/wp-config.php"
  chmod 0640 "$WP_DIR/wp-config.php"
fi
