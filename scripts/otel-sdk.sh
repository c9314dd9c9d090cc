#!/usr/bin/env bash
# The OpenTelemetry Python SDK for tests/xtrace.rs's instrumented-app test:
# a venv of Debian's /usr/bin/python3 (so a pod that mounts the host's /usr
# runs it) at $OTEL_SDK_VENV (default /var/tmp/podscope-otel-sdk), with the
# SDK, its OTLP/gRPC exporter and the WSGI and requests instrumentations
# from PyPI, pinned. Idempotent: an existing venv with these versions is kept.
set -euo pipefail
VENV=${OTEL_SDK_VENV:-/var/tmp/podscope-otel-sdk}
PKGS=(
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-exporter-otlp-proto-grpc==1.45.2
  opentelemetry-instrumentation-wsgi==0.66b2
  opentelemetry-instrumentation-requests==0.66b2
  requests==2.34.2
)
stamp="$VENV/.podscope-pins"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${PKGS[*]}" ]; then
  echo "otel-sdk: $VENV is ready" >&2
  exit 0
fi
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
echo "${PKGS[*]}" > "$stamp"
echo "otel-sdk: installed ${PKGS[*]} in $VENV" >&2
