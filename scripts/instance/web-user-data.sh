#!/usr/bin/env bash
# User data of every web instance (Amazon Linux 2023): nginx + php-fpm serving WordPress,
# and the health check path the target group probes. Rendered by the provision function
# (placeholders below); it carries no secret: the database credentials are read from
# Secrets Manager on the instance once the database tier is set up.
set -euo pipefail

readonly WEB_PORT="__WEB_PORT__"
readonly HEALTH_CHECK_PATH="__HEALTH_CHECK_PATH__"
readonly WORDPRESS_URL="https://wordpress.org/wordpress-6.8.3.tar.gz"
readonly WEB_ROOT=/usr/share/nginx/wordpress
readonly HEALTH_SCRIPT=/usr/share/nginx/ha-health/health.php

exec > >(tee -a /var/log/ha-orchestrator-user-data.log) 2>&1
echo "user data started $(date --iso-8601=seconds)"

dnf install -y nginx php-fpm php-mysqlnd php-json php-gd php-mbstring php-xml

# WordPress, verified against the checksum published beside the archive, unless the image
# already carries it (EgressMode=VpcEndpoints has no internet: bake it into the AMI).
if [[ ! -f "$WEB_ROOT/wp-settings.php" ]]; then
  workdir="$(mktemp -d)"
  trap 'rm -rf "$workdir"' EXIT
  curl --fail --silent --show-error --location --retry 5 -o "$workdir/wordpress.tar.gz" "$WORDPRESS_URL"
  curl --fail --silent --show-error --location --retry 5 -o "$workdir/wordpress.tar.gz.sha1" "$WORDPRESS_URL.sha1"
  echo "$(cat "$workdir/wordpress.tar.gz.sha1")  $workdir/wordpress.tar.gz" | sha1sum --check --status
  mkdir -p "$WEB_ROOT"
  tar -xzf "$workdir/wordpress.tar.gz" -C "$WEB_ROOT" --strip-components=1
fi
# The code belongs to root (readable by nginx for static files and by php-fpm's pool user,
# apache on AL2023); only wp-content (uploads, plugins, themes) is the pool's to write.
chown -R root:root "$WEB_ROOT"
chown -R apache:apache "$WEB_ROOT/wp-content"

# The health check the target group probes answers for what a visitor needs: nginx, php-fpm
# and the database through this node's Router, reached the way WordPress reaches it (the
# settings of wp-config.php, which WebRouter writes once the database tier is up; read, not
# included: including it would load all of WordPress). 200 "ok" only after a trivial query;
# 503 and a short reason otherwise, never a setting or an error text. Timeouts stay within
# the target group's 3 s health check timeout (shared/src/aws/targets.rs), so a hung database is
# a failed check, not a pile of waiting workers: connect 2 s, read 1 s (through the Router a
# hung server costs two reads, measured: 2 s; tests/tests/web_health.rs). Not cacheable. Outside the web root: only
# the health check path reaches it. No secret here: the password is read at request time.
# What the sweep does when every node fails it (the database is the likelier cause): see
# shared/src/tasks/healing.
mkdir -p "$(dirname "$HEALTH_SCRIPT")"
cat > "$HEALTH_SCRIPT" <<'PHP'
<?php
header('Cache-Control: no-store, max-age=0');
header('Content-Type: text/plain; charset=utf-8');

function unhealthy(string $reason): void
{
    http_response_code(503);
    echo $reason, "\n";
    exit;
}

// WordPress's own settings, from the single-quoted define()s WebRouter writes.
function wordpress_settings(string $file): ?array
{
    $text = @file_get_contents($file);
    if ($text === false) {
        return null;
    }
    $settings = [];
    foreach (['DB_NAME', 'DB_USER', 'DB_PASSWORD', 'DB_HOST'] as $name) {
        $pattern = '~define\(\s*\x27' . $name . '\x27\s*,\s*\x27((?:[^\x27\\\\]|\\\\.)*)\x27\s*\)~';
        if (preg_match($pattern, $text, $match) !== 1) {
            return null;
        }
        $settings[$name] = strtr($match[1], ['\\\\' => '\\', '\\\'' => '\'']);
    }
    return $settings;
}

$file = $_SERVER['WP_CONFIG'] ?? '';
$settings = is_string($file) && $file !== '' ? wordpress_settings($file) : null;
if ($settings === null) {
    unhealthy('not configured');
}
if (!function_exists('mysqli_init')) {
    unhealthy('no mysqli');
}
// DB_HOST as WordPress reads it: host[:port].
$host = $settings['DB_HOST'];
$port = 3306;
if (preg_match('~^(.+):([0-9]+)$~', $host, $match) === 1) {
    $host = $match[1];
    $port = (int) $match[2];
}
mysqli_report(MYSQLI_REPORT_OFF);
try {
    $db = mysqli_init();
    $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 2);
    $db->options(MYSQLI_OPT_READ_TIMEOUT, 1);
    if (!@$db->real_connect($host, $settings['DB_USER'], $settings['DB_PASSWORD'], $settings['DB_NAME'], $port)) {
        unhealthy('database unreachable');
    }
    $result = $db->query('SELECT 1');
    $row = $result === false ? null : $result->fetch_row();
    if (!is_array($row) || (string) $row[0] !== '1') {
        unhealthy('database query failed');
    }
    $db->close();
} catch (Throwable $error) {
    unhealthy('database unreachable');
}
echo "ok\n";
PHP
chmod 0644 "$HEALTH_SCRIPT"

cat > /etc/nginx/conf.d/wordpress.conf <<NGINX
server {
    listen ${WEB_PORT} default_server;
    root ${WEB_ROOT};
    index index.php;
    server_tokens off;

    location = ${HEALTH_CHECK_PATH} {
        access_log off;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME ${HEALTH_SCRIPT};
        fastcgi_param WP_CONFIG ${WEB_ROOT}/wp-config.php;
        fastcgi_connect_timeout 1s;
        fastcgi_read_timeout 5s;
        fastcgi_pass unix:/run/php-fpm/www.sock;
    }
    location / {
        try_files \$uri \$uri/ /index.php?\$args;
    }
    location ~ \.php\$ {
        fastcgi_pass unix:/run/php-fpm/www.sock;
        fastcgi_index index.php;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
    }
}
NGINX
# The default server block would also claim port 80.
sed -i 's/listen\s\+80 default_server;/listen 8081;/; s/listen\s\+\[::\]:80 default_server;/listen [::]:8081;/' /etc/nginx/nginx.conf

systemctl enable --now php-fpm nginx
echo "user data finished $(date --iso-8601=seconds)"
