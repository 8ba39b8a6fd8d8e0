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
chown -R nginx:nginx "$WEB_ROOT"

cat > /etc/nginx/conf.d/wordpress.conf <<NGINX
server {
    listen ${WEB_PORT} default_server;
    root ${WEB_ROOT};
    index index.php;
    server_tokens off;

    location = ${HEALTH_CHECK_PATH} {
        access_log off;
        default_type text/plain;
        return 200 "ok\n";
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
