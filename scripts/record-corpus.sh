#!/usr/bin/env bash
# Records the HTTP parsers' regression corpus (crates/podscope-proto/tests/corpus/)
# from real servers: Debian's nginx on a 127.0.0.x port with an HTTP/1.1 and
# an h2c listener, driven by curl and h2load, under `podscope-bench
# record-http` (the http probe's raw records, 16 KiB per call). Then
# `PODSCOPE_UPDATE_CORPUS=1 cargo test -p podscope-proto --test corpus`
# writes what the parsers make of each recording (NAME.out); review it
# against nginx's access log, which this script prints. Needs root.
# Usage: bash scripts/record-corpus.sh [BENCH_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:-${CARGO_TARGET_DIR:-target}/debug/podscope-bench}
OUT=crates/podscope-proto/tests/corpus
DIR=$(mktemp -d /tmp/podscope-corpus.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
mkdir -p "$DIR/www"
echo hello > "$DIR/www/index.html"
head -c 20000 /dev/zero | tr '\0' 'a' > "$DIR/www/big.txt"
head -c 5000 /dev/zero | tr '\0' 'b' > "$DIR/body.bin"
IP=127.0.0.77
cat > "$DIR/nginx.conf" <<CONF
daemon off;
master_process off;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
events { worker_connections 64; }
http {
  log_format witness '\$server_protocol \$request_method \$request_uri \$status \$request_length \$bytes_sent';
  access_log $DIR/access.log witness;
  client_body_temp_path $DIR/body;
  proxy_temp_path $DIR/proxy;
  fastcgi_temp_path $DIR/fastcgi;
  uwsgi_temp_path $DIR/uwsgi;
  scgi_temp_path $DIR/scgi;
  sendfile on;
  server {
    listen $IP:18701;
    listen $IP:18702 http2;
    root $DIR/www;
    location /post { proxy_pass http://$IP:18701/sink; }
    location /sink { return 200 "posted\n"; }
  }
}
CONF
cat > "$DIR/http1.sh" <<SH
set -e
/usr/sbin/nginx -c $DIR/nginx.conf -p $DIR &
for i in \$(seq 50); do curl -s -o /dev/null http://$IP:18701/ 2>/dev/null && break; sleep 0.1; done
: > $DIR/access.log
curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null http://$IP:18701/index.html http://$IP:18701/big.txt 'http://$IP:18701/missing?token=abc&x' 'http://$IP:18701/index.html?q=1'
curl -s -I -o /dev/null http://$IP:18701/index.html
curl -s -o /dev/null -d 'name=value&other=1' http://$IP:18701/post
curl -s -o /dev/null -H 'Transfer-Encoding: chunked' --data-binary @$DIR/body.bin 'http://$IP:18701/post?chunked=yes'
kill %1; wait
SH
cat > "$DIR/h2c.sh" <<SH
set -e
/usr/sbin/nginx -c $DIR/nginx.conf -p $DIR &
for i in \$(seq 50); do curl -s -o /dev/null http://$IP:18701/ 2>/dev/null && break; sleep 0.1; done
: > $DIR/access.log
curl -s --http2-prior-knowledge -o /dev/null http://$IP:18702/index.html
curl -s --http2-prior-knowledge -o /dev/null 'http://$IP:18702/missing?token=abc'
curl -s --http2-prior-knowledge -I -o /dev/null http://$IP:18702/big.txt
h2load -n 20 -c 1 -m 5 -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' http://$IP:18702/index.html http://$IP:18702/missing >/dev/null
kill %1; wait
SH
for name in http1 h2c; do
  "$BENCH" record-http "$OUT/nginx-$name.rec" -- bash "$DIR/$name.sh"
  echo "== nginx's access log for nginx-$name ($(wc -l < "$DIR/access.log") requests):"
  sort "$DIR/access.log" | uniq -c
done
