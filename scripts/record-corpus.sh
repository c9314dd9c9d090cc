#!/usr/bin/env bash
# Records the HTTP parsers' regression corpus (crates/podscope-proto/tests/corpus/)
# from real servers: Debian's nginx on a 127.0.0.x port with an HTTP/1.1 and
# an h2c listener, driven by curl and h2load, and a Python grpcio server and
# client (Debian's python3-grpcio: unary, server-streaming and failing
# calls on one channel, then a second channel), under `podscope-bench
# record-http` (the http probe's raw records, 16 KiB per call). Then
# `PODSCOPE_UPDATE_CORPUS=1 cargo test -p podscope-proto --test corpus`
# writes what the parsers make of each recording (NAME.out); review it
# against nginx's access log and the gRPC client's own count, which this
# script prints. Needs root.
# Usage: bash scripts/record-corpus.sh [BENCH_BINARY [NAME...]]  (NAME: http1 h2c grpcio; default all)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:-${CARGO_TARGET_DIR:-target}/debug/podscope-bench}
shift || true
NAMES=${*:-http1 h2c grpcio}
wanted() { [[ " $NAMES " == *" $1 "* ]]; }
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
cat > "$DIR/grpc_client.py" <<'PY'
import sys, grpc
ident = lambda b: b
calls = {"Say": 0, "Stream": 0, "Missing": 0}
for channel in range(2):
    with grpc.insecure_channel(sys.argv[1]) as ch:
        say = ch.unary_unary("/demo.Echo/Say", request_serializer=ident, response_deserializer=ident)
        stream = ch.unary_stream("/demo.Echo/Stream", request_serializer=ident, response_deserializer=ident)
        missing = ch.unary_unary("/demo.Echo/Missing", request_serializer=ident, response_deserializer=ident)
        for _ in range(3):
            assert say(b"hi" * 20, metadata=(("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),), timeout=10) == b"hi" * 20
            calls["Say"] += 1
        assert len(list(stream(b"s", timeout=10))) == 3
        calls["Stream"] += 1
        try:
            missing(b"k1", timeout=10)
            raise SystemExit("Missing succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
        calls["Missing"] += 1
print("client calls:", calls, file=open(sys.argv[2], "w"))
PY
cat > "$DIR/grpcio.sh" <<SH
set -e
/usr/bin/python3 $PWD/crates/podscope/tests/grpc_echo_server.py $IP:18703 > $DIR/server.out &
for i in \$(seq 100); do grep -q listening $DIR/server.out 2>/dev/null && break; sleep 0.1; done
/usr/bin/python3 $DIR/grpc_client.py $IP:18703 $DIR/client.out
kill %1; wait || true
SH
for name in http1 h2c; do
  wanted $name || continue
  "$BENCH" record-http "$OUT/nginx-$name.rec" -- bash "$DIR/$name.sh"
  echo "== nginx's access log for nginx-$name ($(wc -l < "$DIR/access.log") requests):"
  sort "$DIR/access.log" | uniq -c
done
if wanted grpcio; then
  "$BENCH" record-http "$OUT/grpcio.rec" -- bash "$DIR/grpcio.sh"
  echo "== the gRPC client's own count for grpcio:"
  cat "$DIR/client.out"
fi
