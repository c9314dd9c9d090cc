#!/usr/bin/env bash
# podbed.sh: a real containerd + CRI test bed for podscope, with no kubelet,
# no systemd and no image registry. See usage() below.
#
# Why it looks the way it does (measured on the project's Debian 12 VMs):
# - containerd runs under `tini -s`: PID 1 here reaps orphaned shims lazily and
#   zombies pile up otherwise.
# - `restrict_oom_score_adj = true`: root lacks CAP_SYS_RESOURCE; without it
#   RunPodSandbox fails with "can't get final child's PID from pipe: EOF".
# - cgroupfs driver: there is no systemd to create slices.
# - Everything (socket, root, state, runc state, CNI config and IPAM data, pod
#   logs) lives under $PODBED_DIR so two instances can run side by side and
#   `down` can remove every trace.
# - containerd never removes pod-level cgroups (kubelet's job), so `down`
#   removes them, in every v1 hierarchy and in the v2 one.
set -euo pipefail

PODBED_DIR=${PODBED_DIR:-/run/podscope-testbed}
PODBED_DIR=${PODBED_DIR%/}
PODBED_BRIDGE=${PODBED_BRIDGE:-podbed0}
PODBED_SUBNET=${PODBED_SUBNET:-10.88.77.0/24}
PODBED_CACHE=${PODBED_CACHE:-/var/cache/podscope-testbed}
PODBED_TIMEOUT=${PODBED_TIMEOUT:-30}

SOCK=$PODBED_DIR/containerd.sock
ROOT_DIR=$PODBED_DIR/root
STATE_DIR=$PODBED_DIR/state
RUNC_ROOT=$PODBED_DIR/runc
CNI_CONF_DIR=$PODBED_DIR/cni/net.d
CNI_DATA_DIR=$PODBED_DIR/cni/ipam
CONFIG=$PODBED_DIR/config.toml
PIDFILE=$PODBED_DIR/tini.pid
LOG=$PODBED_DIR/containerd.log
NETNAME=podbed-$PODBED_BRIDGE
CNI_BIN_DIR=/usr/lib/cni
BUSYBOX_REF=localhost/busybox:latest
PAUSE_REF=localhost/pause:latest
PACKAGES=(containerd runc containernetworking-plugins busybox-static tini iproute2 gcc libc6-dev protobuf-compiler)

SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SELF_DIR/.." && pwd)

log() { echo "podbed: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: $0 install|up|down|status

  install  apt-get install what the test bed needs (idempotent)
  up       start containerd with its own socket/root/state under \$PODBED_DIR,
           a CNI bridge, and import localhost/busybox:latest and
           localhost/pause:latest; prints the socket path (idempotent)
  down     remove every pod, stop containerd and its shims, unmount, delete the
           bridge, the pod cgroups and \$PODBED_DIR (idempotent)
  status   is containerd up, and which pods run (exit 0 up, 3 down)
  import-rootfs DIR REF
           write the folder DIR as a one-layer OCI image REF (a fully
           qualified ref, e.g. localhost/curl:test) and import it

environment (defaults):
  PODBED_DIR=$PODBED_DIR    state dir; the socket is \$PODBED_DIR/containerd.sock
  PODBED_BRIDGE=$PODBED_BRIDGE           CNI bridge name (at most 15 characters)
  PODBED_SUBNET=$PODBED_SUBNET     pod subnet, private to this machine
  PODBED_CACHE=$PODBED_CACHE  cached OCI image archives
  PODBED_TIMEOUT=$PODBED_TIMEOUT              seconds to wait for containerd
  PODBED_BIN                      the podbed helper binary (found in target/ if unset)
EOF
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (containerd, cgroups and bridges need it)"
}

# ---------------------------------------------------------------- install

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

cmd_install() {
    need_root
    local missing=()
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "all packages present: ${PACKAGES[*]}"
        return 0
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
    log "installed: ${missing[*]}"
}

# ---------------------------------------------------------------- helpers

tini_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 1
    pid=$(cat "$PIDFILE")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    # A recycled pid would not be tini with our config on its command line.
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$CONFIG" || return 1
    echo "$pid"
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

containerd_answers() {
    [[ -S $SOCK ]] && timeout 5 ctr --address "$SOCK" version >/dev/null 2>&1
}

cri_plugin_ok() {
    timeout 5 ctr --address "$SOCK" plugins ls 2>/dev/null |
        awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" && $NF == "ok" { found = 1 } END { exit !found }'
}

is_up() { tini_pid >/dev/null && containerd_answers; }

log_tail() {
    if [[ -s $LOG ]]; then
        log "last lines of $LOG:"
        tail -n 25 "$LOG" | sed 's/^/podbed:   | /' >&2
    fi
}

# Finds the podbed helper binary (crates/podscope-runtime/src/bin/podbed.rs).
find_podbed_bin() {
    local c
    if [[ -n ${PODBED_BIN:-} ]]; then
        [[ -x $PODBED_BIN ]] && echo "$PODBED_BIN" && return 0
        return 1
    fi
    for c in "${CARGO_TARGET_DIR:-$REPO_DIR/target}"/{debug,release}/podbed \
        "$REPO_DIR"/target/{debug,release}/podbed /work/target-helper/{debug,release}/podbed; do
        [[ -x $c ]] && echo "$c" && return 0
    done
    return 1
}

validate_env() {
    [[ $PODBED_DIR == /* ]] || die "PODBED_DIR must be an absolute path, got '$PODBED_DIR'"
    # sun_path is 108 bytes; containerd also listens on "$SOCK.ttrpc".
    ((${#SOCK} + 6 < 108)) || die "socket path '$SOCK.ttrpc' is longer than 107 bytes: use a shorter PODBED_DIR"
    ((${#PODBED_BRIDGE} <= 15)) || die "PODBED_BRIDGE '$PODBED_BRIDGE' is longer than 15 characters"
    [[ $PODBED_BRIDGE =~ ^[A-Za-z0-9_.-]+$ ]] || die "PODBED_BRIDGE '$PODBED_BRIDGE' has characters an interface name cannot have"
    [[ $PODBED_SUBNET =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] ||
        die "PODBED_SUBNET must look like 10.88.77.0/24, got '$PODBED_SUBNET'"
}

# ---------------------------------------------------------------- images

# Writes an OCI image archive (oci-layout, index.json, manifest, config, one
# uncompressed layer) from a rootfs folder.
#   build_oci_archive ROOTFS OUT REF CONFIG_JSON_FRAGMENT
build_oci_archive() {
    local rootfs=$1 out=$2 ref=$3 cfg=$4
    local work arch blobs layer_digest layer_size config_digest config_size manifest_digest manifest_size
    work=$(mktemp -d)
    blobs=$work/blobs/sha256
    mkdir -p "$blobs"
    case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
    esac

    tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
    layer_digest=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    layer_size=$(stat -c %s "$work/layer.tar")
    mv "$work/layer.tar" "$blobs/$layer_digest"

    printf '{"created":"1970-01-01T00:00:00Z","architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"podscope testbed/podbed.sh"}]}' \
        "$arch" "$cfg" "$layer_digest" >"$work/config.json"
    config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
    config_size=$(stat -c %s "$work/config.json")
    mv "$work/config.json" "$blobs/$config_digest"

    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
    manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
    manifest_size=$(stat -c %s "$work/manifest.json")
    mv "$work/manifest.json" "$blobs/$manifest_digest"

    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
        "$manifest_digest" "$manifest_size" "$arch" "$ref" "${ref##*:}" >"$work/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"

    mkdir -p "$(dirname "$out")"
    tar --numeric-owner --owner=0 --group=0 -C "$work" -cf "$out.tmp" oci-layout index.json blobs
    mv "$out.tmp" "$out"
    rm -rf "$work"
}

build_busybox_image() {
    local out=$1 rootfs applet
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,root,var,usr}
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
    done
    ln -s bin "$rootfs/sbin"
    ln -s ../bin "$rootfs/usr/bin"
    ln -s ../bin "$rootfs/usr/sbin"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    # Exists only in this image: proves a reader is in the container's mount namespace.
    echo "podscope testbed busybox image" >"$rootfs/podbed-marker"
    build_oci_archive "$rootfs" "$out" "$BUSYBOX_REF" \
        '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"}'
    rm -rf "$rootfs"
}

build_pause_image() {
    local out=$1 rootfs
    rootfs=$(mktemp -d)
    cat >"$rootfs/pause.c" <<'EOF'
/* The pod sandbox's placeholder process: hold the namespaces, reap zombies. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, on_term);
    signal(SIGTERM, on_term);
    signal(SIGCHLD, on_chld);
    for (;;) pause();
}
EOF
    gcc -static -O2 -s -o "$rootfs/pause" "$rootfs/pause.c" || die "gcc -static failed: is libc6-dev installed? ($0 install)"
    rm "$rootfs/pause.c"
    build_oci_archive "$rootfs" "$out" "$PAUSE_REF" '{"Entrypoint":["/pause"],"WorkingDir":"/"}'
    rm -rf "$rootfs"
}

ensure_images() {
    local have
    have=$(ctr_ images ls -q 2>/dev/null || true)
    if ! grep -qxF "$BUSYBOX_REF" <<<"$have"; then
        [[ -f $PODBED_CACHE/busybox.oci.tar ]] || {
            log "building $BUSYBOX_REF"
            build_busybox_image "$PODBED_CACHE/busybox.oci.tar"
        }
        log "importing $BUSYBOX_REF"
        ctr_ images import "$PODBED_CACHE/busybox.oci.tar" >/dev/null
    fi
    if ! grep -qxF "$PAUSE_REF" <<<"$have"; then
        [[ -f $PODBED_CACHE/pause.oci.tar ]] || {
            log "building $PAUSE_REF"
            build_pause_image "$PODBED_CACHE/pause.oci.tar"
        }
        log "importing $PAUSE_REF"
        ctr_ images import "$PODBED_CACHE/pause.oci.tar" >/dev/null
    fi
    have=$(ctr_ images ls -q)
    grep -qxF "$BUSYBOX_REF" <<<"$have" || die "$BUSYBOX_REF is missing after import (delete $PODBED_CACHE and retry)"
    grep -qxF "$PAUSE_REF" <<<"$have" || die "$PAUSE_REF is missing after import (delete $PODBED_CACHE and retry)"
}

# ---------------------------------------------------------------- up

write_config() {
    mkdir -p "$ROOT_DIR" "$STATE_DIR" "$RUNC_ROOT" "$CNI_CONF_DIR" "$CNI_DATA_DIR" "$PODBED_DIR/opt" "$PODBED_DIR/pod-logs"
    cat >"$CONFIG" <<EOF
# Written by testbed/podbed.sh: a containerd for tests only.
version = 2
root = "$ROOT_DIR"
state = "$STATE_DIR"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$PODBED_DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_REF"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUNC_ROOT"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
    # No routes in IPAM: pods get only their subnet route (no default route),
    # and ipMasq is off, so pod traffic stays on this machine.
    cat >"$CNI_CONF_DIR/10-$NETNAME.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NETNAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$PODBED_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_DATA_DIR",
        "ranges": [[{ "subnet": "$PODBED_SUBNET" }]]
      }
    }
  ]
}
EOF
}

check_subnet_free() {
    local dev
    # Another bed (or anything else) already routing this subnet would make
    # the two bridges fight over it.
    dev=$(ip -4 route show "$PODBED_SUBNET" 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1) }' | head -n1)
    if [[ -n $dev && $dev != "$PODBED_BRIDGE" ]]; then
        die "subnet $PODBED_SUBNET is already routed via $dev: set PODBED_SUBNET (and PODBED_BRIDGE) for this instance"
    fi
}

cmd_up() {
    need_root
    validate_env
    local t0 pid waited
    t0=$(date +%s.%N)
    if is_up; then
        log "already up ($PODBED_DIR)"
        ensure_images
        echo "$SOCK"
        return 0
    fi
    for c in containerd runc tini ctr ip gcc tar sha256sum busybox; do
        command -v "$c" >/dev/null || die "'$c' not found: run '$0 install' first"
    done
    [[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local && -x $CNI_BIN_DIR/loopback ]] ||
        die "CNI plugins missing in $CNI_BIN_DIR: run '$0 install' first"
    if [[ -e $PODBED_DIR ]]; then
        log "stale state in $PODBED_DIR (containerd not running): cleaning it first"
        cmd_down
    fi
    check_subnet_free

    write_config
    log "starting containerd (state $PODBED_DIR, bridge $PODBED_BRIDGE, subnet $PODBED_SUBNET)"
    # setsid: containerd must outlive the shell (and CI step) that started it.
    setsid tini -s -- containerd --config "$CONFIG" </dev/null >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"

    waited=0
    started=$!
    until containerd_answers && cri_plugin_ok; do
        if ! pid=$(tini_pid); then
            # Until the background child has exec'd tini its command line is
            # this shell's, not tini's: alive means still starting, not dead
            # (under load that took long enough to be reported as an exit
            # and leave containerd orphaned).
            if [[ -d /proc/$started ]] && ((waited < PODBED_TIMEOUT * 10)); then
                sleep 0.1
                waited=$((waited + 1))
                continue
            fi
            log_tail
            kill -TERM "$started" 2>/dev/null || true
            die "containerd exited during start-up (log: $LOG)"
        fi
        if ((waited >= PODBED_TIMEOUT * 10)); then
            log_tail
            kill -TERM "$pid" 2>/dev/null || true
            die "containerd did not answer on $SOCK within ${PODBED_TIMEOUT}s (log: $LOG; stopped it; '$0 down' removes the rest)"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    ensure_images
    log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s; socket:"
    echo "$SOCK"
}

# ---------------------------------------------------------------- down

# Container cgroup paths (relative to a hierarchy root) of every task whose
# bundle is still in our state dir: found without asking containerd, so this
# works after a crash too.
bundle_cgroup_paths() {
    local cfg
    for cfg in "$STATE_DIR"/io.containerd.runtime.v2.task/*/*/config.json; do
        [[ -f $cfg ]] || continue
        grep -o '"cgroupsPath": *"[^"]*"' "$cfg" | sed 's/.*: *"\(.*\)"/\1/' || true
    done | sort -u
}

# Every hierarchy root: v1 controllers (and named ones) plus the v2 mount.
cgroup_roots() {
    # The filesystem type follows the " - " separator (optional fields vary).
    awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup" || $(i + 1) == "cgroup2") print $5; break } }' \
        /proc/self/mountinfo 2>/dev/null | sort -u
}

# Kills every process in the given cgroups (v2 path, and v1 ones as fallback).
kill_cgroup_procs() {
    local rel root tries pids
    for tries in 1 2 3 4 5 6 7 8 9 10; do
        pids=""
        for rel in "$@"; do
            for root in $(cgroup_roots); do
                [[ -f $root$rel/cgroup.procs ]] && pids+=" $(tr '\n' ' ' 2>/dev/null <"$root$rel/cgroup.procs")"
            done
        done
        pids=$(tr ' ' '\n' <<<"$pids" | grep -E '^[0-9]+$' | sort -un | tr '\n' ' ' || true)
        [[ -z ${pids// /} ]] && return 0
        ((tries == 1)) && log "killing leftover container processes: $pids"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.2
    done
    log "warning: processes still alive in pod cgroups: $pids"
}

# rmdir a cgroup and everything below it, bottom-up, in every hierarchy.
rmdir_cgroup_tree() {
    local rel=$1 root
    for root in $(cgroup_roots); do
        [[ -d $root$rel ]] || continue
        find "$root$rel" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

shim_pids() {
    local d cmd
    for d in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
        case $cmd in
        *containerd-shim*"-address $SOCK "*) echo "${d#/proc/}" ;;
        esac
    done
}

# containerd processes started with our config (also one orphaned by a killed tini).
containerd_pids() {
    local d cmd
    for d in /proc/[0-9]*; do
        cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
        [[ $cmd == "containerd --config $CONFIG " ]] && echo "${d#/proc/}"
    done
    return 0
}

kill_shims() {
    local shims
    shims=$(shim_pids | tr '\n' ' ')
    [[ -n ${shims// /} ]] || return 0
    log "killing shims: $shims"
    # shellcheck disable=SC2086
    kill -KILL $shims 2>/dev/null || true
    for _ in $(seq 1 50); do
        [[ -z $(shim_pids) ]] && return 0
        sleep 0.1
    done
}

cmd_down() {
    need_root
    validate_env
    local pid bin cg pod_dirs=() addr root rel qos

    if [[ ! -e $PODBED_DIR ]] && ! ip link show "$PODBED_BRIDGE" >/dev/null 2>&1; then
        log "already down ($PODBED_DIR does not exist)"
        rmdir /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true
        return 0
    fi

    # 1. Gracefully, through CRI: stops containers, runs CNI DEL, removes pod cgroups.
    if containerd_answers; then
        if bin=$(find_podbed_bin); then
            log "removing pods through CRI ($bin rm-all)"
            "$bin" --socket "$SOCK" rm-all >/dev/null || log "warning: '$bin rm-all' failed; removing by force"
        else
            log "podbed helper binary not built; removing pods by force"
        fi
    fi

    # 2. Whatever is left, by force. Remember cgroups, task ids and shim
    #    sockets first: the task bundles in the state dir list them even when
    #    containerd has crashed.
    mapfile -t cgs < <(bundle_cgroup_paths)
    local shim_sockets=() task_ids=() b
    for b in "$STATE_DIR"/io.containerd.runtime.v2.task/*/*/; do
        [[ -d $b ]] || continue
        task_ids+=("$(basename "$b")")
        [[ -f $b/address ]] && shim_sockets+=("$(sed 's|^unix://||' "$b/address")")
    done

    # 3. Container processes first, then their shims, while tini (a
    #    subreaper) still runs to reap them; PID 1 here reaps orphans lazily.
    ((${#cgs[@]} > 0)) && kill_cgroup_procs "${cgs[@]}"
    kill_shims

    # 4. Stop containerd (tini forwards the signal and exits with it).
    if pid=$(tini_pid); then
        log "stopping containerd (tini pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then
            log "containerd did not stop in 10s: killing it"
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    local orphans
    orphans=$(containerd_pids | tr '\n' ' ')
    if [[ -n ${orphans// /} ]]; then
        log "killing containerd without tini: $orphans"
        # shellcheck disable=SC2086
        kill -KILL $orphans 2>/dev/null || true
    fi
    kill_shims
    for addr in "${shim_sockets[@]}"; do
        [[ -S $addr ]] && rm -f "$addr"
    done

    # 5. Unmount everything under the state dir, deepest first.
    if [[ -e $PODBED_DIR ]]; then
        local mounts
        mounts=$(awk -v d="$PODBED_DIR" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
        if [[ -n $mounts ]]; then
            log "unmounting $(wc -l <<<"$mounts") mount(s) under $PODBED_DIR"
            while read -r m; do
                umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
            done <<<"$mounts"
        fi
    fi

    # 6. The bridge (veths die with their netns).
    if ip link show "$PODBED_BRIDGE" >/dev/null 2>&1; then
        log "deleting bridge $PODBED_BRIDGE"
        ip link del "$PODBED_BRIDGE" 2>/dev/null || log "warning: cannot delete bridge $PODBED_BRIDGE"
    fi
    # CNI result caches of sandboxes that never got their CNI DEL.
    rm -f /var/lib/cni/results/"$NETNAME"-* 2>/dev/null || true
    for b in "${task_ids[@]}"; do
        rm -f /var/lib/cni/results/*-"$b"-* 2>/dev/null || true
    done

    # 7. Cgroups: our containers' and their pods' (containerd never removes
    #    the pod level), then empty pod dirs other runs left behind. A pod dir
    #    of a live pod (this or another bed's) has children, so rmdir fails on
    #    it harmlessly. Never touch /kubepods when a real kubelet owns it.
    for cg in "${cgs[@]}"; do
        [[ $cg == */kubepods/* ]] || continue
        pod_dirs+=("${cg%/*}")
        rmdir_cgroup_tree "$cg"
    done
    for rel in "${pod_dirs[@]}"; do
        rmdir_cgroup_tree "$rel"
    done
    if ! pgrep -x kubelet >/dev/null 2>&1; then
        local removed=0
        for root in $(cgroup_roots); do
            for rel in "$root"/kubepods/pod* "$root"/kubepods/*/pod*; do
                [[ -d $rel ]] || continue
                find "$rel" -depth -type d -exec rmdir {} \; 2>/dev/null || true
                [[ -d $rel ]] || removed=$((removed + 1))
            done
            for qos in besteffort burstable; do
                rmdir "$root/kubepods/$qos" 2>/dev/null || true
            done
            rmdir "$root/kubepods" 2>/dev/null || true
        done
        ((removed > 0)) && log "removed $removed pod cgroup dir(s)"
    fi

    # 8. The state dir itself.
    if [[ -e $PODBED_DIR ]]; then
        if awk -v d="$PODBED_DIR" 'index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            die "mounts remain under $PODBED_DIR; not deleting it"
        fi
        rm -rf "$PODBED_DIR"
    fi
    # Directories the shims and CNI create outside the state dir, when empty
    # (a real containerd, or another bed with running shims, keeps them full).
    rmdir /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true
    log "down"
}

# ---------------------------------------------------------------- status

cmd_status() {
    validate_env
    local pid bin
    if ! pid=$(tini_pid) || ! containerd_answers; then
        log "down ($PODBED_DIR)"
        return 3
    fi
    log "up: containerd under tini pid $pid, socket $SOCK, bridge $PODBED_BRIDGE ($PODBED_SUBNET)"
    if bin=$(find_podbed_bin); then
        "$bin" --socket "$SOCK" list
    else
        log "podbed helper binary not built; containers as ctr sees them:"
        ctr_ containers ls
    fi
}

cmd_import_rootfs() {
    need_root
    validate_env
    local dir=${1:-} ref=${2:-} archive
    [[ -d $dir && -n $ref ]] || die "usage: $0 import-rootfs DIR REF"
    containerd_answers || die "containerd is not up at $SOCK (run: $0 up)"
    archive=$(mktemp -u)
    build_oci_archive "$dir" "$archive" "$ref" '{"WorkingDir":"/"}'
    ctr_ images import "$archive" >/dev/null
    rm -f "$archive"
    # (Not `ctr ... | grep -q`: under pipefail, grep's early exit can fail
    # the pipeline with ctr's SIGPIPE although the image is there.)
    local have
    have=$(ctr_ images ls -q)
    grep -qxF "$ref" <<<"$have" || die "$ref is missing after import"
    log "imported $ref"
}

case ${1:-} in
install) cmd_install ;;
import-rootfs) cmd_import_rootfs "${2:-}" "${3:-}" ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
-h | --help | help)
    usage
    ;;
*)
    usage
    exit 2
    ;;
esac
