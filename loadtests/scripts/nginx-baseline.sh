#!/usr/bin/env bash
# The nginx baseline by hand: Debian's nginx as a plain WebSocket reverse proxy in front of one or
# more workspace services, in the foreground, from its own temporary prefix. aether-load
# (--baseline nginx|all) generates the same configuration itself (loadtests/src/proxy/nginx.rs); this
# script is for poking at the baseline outside a run.
#
#   loadtests/scripts/nginx-baseline.sh 127.0.0.1:PORT_A [127.0.0.1:PORT_B ...]
#
# Workspace i is then reachable at ws://127.0.0.1:$NGINX_PORT/w$i/ws. NGINX_PORT defaults to a
# free port; NGINX_WORKERS to `auto`. Ctrl-C stops nginx and removes the prefix.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,10p' "$0"; exit 2; }
nginx_bin=${NGINX_BIN:-/usr/sbin/nginx}
workers=${NGINX_WORKERS:-auto}
port=${NGINX_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
prefix=$(mktemp -d /tmp/nginx-baseline-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
mkdir -p "$prefix/tmp"
user=""
[ "$(id -u)" = 0 ] && user="user root;"

{
  cat <<CONF
daemon off;
master_process on;
$user
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path $prefix/tmp/body;
  proxy_temp_path $prefix/tmp/proxy;
  fastcgi_temp_path $prefix/tmp/fastcgi;
  uwsgi_temp_path $prefix/tmp/uwsgi;
  scgi_temp_path $prefix/tmp/scgi;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$port backlog=4096;
CONF
  i=0
  for up in "$@"; do
    cat <<CONF
    location /w$i/ {
      proxy_pass http://$up/;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
CONF
    i=$((i + 1))
  done
  echo "  }"
  echo "}"
} > "$prefix/nginx.conf"

echo "nginx on 127.0.0.1:$port (workers: $workers, prefix $prefix)" >&2
"$nginx_bin" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" -t -q
exec_status=0
"$nginx_bin" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" || exec_status=$?
exit $exec_status
