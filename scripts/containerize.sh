#!/usr/bin/env bash
# `make container`: build the Bento, turn it into an OCI image with `bentoml containerize`, run it on loopback and
# check that it answers /recommend exactly like `bentoml serve` of the same Bento on the host.
#
#   1. the model pair of the BentoML store (the one `recsys train` / `make serve` use); only when that store has
#      no pair, a stand-in is trained there with `recsys train --size $CONTAINER_TRAIN_SIZE`, loudly
#   2. `bentoml build`        -> Bento tag
#   3. `bentoml containerize` -> image; backend docker if a Docker daemon answers, else podman (rootful; installed
#      with apt-get if missing, configured for this machine kind, base image built locally with debootstrap when
#      no registry is reachable)
#   4. run the image on 127.0.0.1, wait for /readyz, POST /recommend, compare with `bentoml serve` on the host,
#      stop everything (trap on EXIT), print per-phase timings and PASS/FAIL.
#
# Settings (environment):
#   CONTAINER_BENTOML_HOME  BentoML store to containerize    (default: $BENTOML_HOME, else ~/bentoml)
#   RECSYS_HOME             datasets/reports of a stand-in training (default: var/container-recsys)
#   CONTAINER_TRAIN_SIZE    synthetic dataset size if the store has no pair: tiny|small|medium|default|kion (default: tiny)
#   CONTAINER_BACKEND       auto|docker|podman               (default: auto)
#   CONTAINER_PORT          loopback port of the container   (default: a free port)
#   CONTAINER_HOST_PORT     port of the host `bentoml serve` (default: a free port)
#   CONTAINER_TOP_K         recommendations to ask for       (default: 5)
#   CONTAINER_READY_TIMEOUT seconds to wait for /readyz       (default: 240)
#   CONTAINER_BASE_SOURCE   local|pull: when the Dockerfile's base image is missing, build a stand-in with
#                           debootstrap (local, default) or pull it from its registry (pull)
#   DEBIAN_MIRROR           mirror for debootstrap           (default: the first one in the machine's apt sources)
#   CONTAINER_STATE_DIR     script-owned config/state dir    (default: var/container)
#   CONTAINER_NETWORK=host  skip -p 127.0.0.1:PORT:3000 and run with --network host (used anyway if -p fails)
#   CONTAINER_RM_IMAGE=1    remove the app image at the end (default: keep it; earlier runs' images are removed)
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
BIN=$REPO/.venv/bin
PY=$BIN/python
SMOKE=$REPO/scripts/container/smoke.py

export BENTOML_HOME=${CONTAINER_BENTOML_HOME:-${BENTOML_HOME:-$HOME/bentoml}}
export RECSYS_HOME=${RECSYS_HOME:-$REPO/var/container-recsys}
export BENTOML_DO_NOT_TRACK=True
TRAIN_SIZE=${CONTAINER_TRAIN_SIZE:-tiny}
BACKEND=${CONTAINER_BACKEND:-auto}
TOP_K=${CONTAINER_TOP_K:-5}
READY_TIMEOUT=${CONTAINER_READY_TIMEOUT:-240}
BASE_SOURCE=${CONTAINER_BASE_SOURCE:-local}
STATE=${CONTAINER_STATE_DIR:-$REPO/var/container}
APT_PACKAGES=(podman runc debootstrap fuse-overlayfs slirp4netns uidmap iptables)

CT=""               # docker | podman
TAG=""              # Bento tag = image tag
BENTO_PATH=""
CNAME="recsys-container-$$"
CONTAINER_STARTED=0
CT_T0=""
HOST_T0=""
HOST_PID=""
ROOTFS=""
PHASE="start"
RESULT="FAIL"
FAIL_REASON=""
T_START=$(date +%s.%N)
PHASE_NAMES=()
PHASE_TIMES=()

log() { printf '%s\n' "[containerize] $*"; }
warn() { printf '%s\n' "[containerize] WARNING: $*" >&2; }
die() {
    FAIL_REASON=$1
    printf '\n%s\n' "[containerize] CANNOT CONTINUE ($PHASE): $1" >&2
    shift
    local line
    for line in "$@"; do printf '%s\n' "    $line" >&2; done
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# phase NAME FUNCTION [ARGS...]: run a step, record its wall time.
phase() {
    local name=$1 t0
    shift
    PHASE=$name
    t0=$(now)
    log "==> $name"
    "$@"
    PHASE_NAMES+=("$name")
    PHASE_TIMES+=("$(elapsed "$t0")")
    log "    $name: ${PHASE_TIMES[-1]} s"
}

cleanup() {
    local rc=$? t0 i what="cleanup (container, host server)"
    trap - EXIT INT TERM
    # The report below must always be printed and the exit status is decided explicitly at the end, so no step of
    # the clean-up may end the script early through errexit.
    set +e
    t0=$(now)
    if [[ $CONTAINER_STARTED == 1 ]]; then
        if [[ $rc != 0 ]]; then
            log "last container logs ($CNAME):"
            "$CT" logs --tail 40 "$CNAME" 2>&1 | sed 's/^/    | /' || true
        fi
        "$CT" rm -f "$CNAME" >/dev/null 2>&1 || warn "could not remove container $CNAME"
    fi
    if [[ ${CONTAINER_RM_IMAGE:-0} == 1 ]]; then
        what="cleanup (container, host server, image)"
        if [[ -n $TAG && -n $CT ]] && "$CT" image inspect "$TAG" >/dev/null 2>&1; then
            if "$CT" rmi "$TAG" >/dev/null 2>&1; then log "removed image $TAG"; else warn "could not remove image $TAG"; fi
        fi
    fi
    if [[ -n $HOST_PID ]]; then
        if [[ $rc != 0 && -f $STATE/host-serve.log ]]; then
            log "last host server log lines ($STATE/host-serve.log):"
            tail -n 20 "$STATE/host-serve.log" | sed 's/^/    | /' || true
        fi
        # the server runs in its own process group (setsid) and its circus workers in groups of their own:
        # TERM the server (it stops its workers), wait, then KILL whatever of them is left, by pid
        local workers
        workers=$(pgrep -P "$HOST_PID" 2>/dev/null | tr '\n' ' ' || true)
        kill -TERM -- "-$HOST_PID" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$HOST_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$HOST_PID" 2>/dev/null || true
        # shellcheck disable=SC2086  # one pid per word
        [[ -n $workers ]] && kill -KILL $workers 2>/dev/null
    fi
    [[ -n $ROOTFS && -d $ROOTFS ]] && rm -rf --one-file-system "$ROOTFS"
    PHASE_NAMES+=("$what")
    PHASE_TIMES+=("$(elapsed "$t0")")
    echo
    log "timings:"
    for i in "${!PHASE_NAMES[@]}"; do printf '    %-50s %7s s\n' "${PHASE_NAMES[$i]}" "${PHASE_TIMES[$i]}"; done
    printf '    %-50s %7s s\n' "total" "$(elapsed "$T_START")"
    echo
    if [[ $rc == 0 && $RESULT == PASS ]]; then
        echo "PASS: $TAG containerized with $CT; the container's /recommend matches bentoml serve on the host"
    else
        [[ $rc == 0 ]] && rc=1
        echo "FAIL: in phase '$PHASE' (exit $rc)${FAIL_REASON:+: $FAIL_REASON}"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------------------------
preflight() {
    [[ -x $BIN/bentoml && -x $BIN/recsys ]] \
        || die "no project virtualenv at $REPO/.venv" "run \`make setup\` first (\`make container\` does it for you)"
    case $TRAIN_SIZE in tiny | small | medium | default | kion) ;; *) die "CONTAINER_TRAIN_SIZE=$TRAIN_SIZE: use tiny, small, medium, default or kion" ;; esac

    if [[ $BACKEND == auto || $BACKEND == docker ]] && command -v docker >/dev/null \
        && timeout 20 docker info >/dev/null 2>&1; then
        CT=docker
        log "backend: docker (docker info answered)"
    elif [[ $BACKEND == docker ]]; then
        die "CONTAINER_BACKEND=docker but no Docker daemon answers \`docker info\`" \
            "start dockerd, or use CONTAINER_BACKEND=podman (or auto)"
    else
        CT=podman
        log "backend: podman (no Docker daemon answers docker info)"
    fi

    if [[ $CT == podman ]]; then
        if [[ $(id -u) != 0 ]]; then
            die "the podman path needs root (uid is $(id -u))" \
                "it installs packages with apt-get and runs rootful podman (cgroupfs, runc, /var/lib/containers)." \
                "Run it as root (e.g. \`sudo make container\`), or provide a running Docker daemon" \
                "(then CONTAINER_BACKEND=docker works without root if your user may use docker)."
        fi
    fi
    mkdir -p "$STATE" "$BENTOML_HOME" || die "cannot create $STATE and $BENTOML_HOME"
    # absolute: containerize runs in another directory
    STATE=$(cd "$STATE" && pwd)
    BENTOML_HOME=$(cd "$BENTOML_HOME" && pwd)
    local proxies
    proxies=$(env | grep -iE '^(https?|no)_proxy=' | cut -d= -f1 | tr '\n' ' ' || true)
    log "proxy variables on the host: ${proxies:-none (egress is transparent here; builds need only the proxy CA)}"
}

# ---------------------------------------------------------------------------------------------------------------------
host_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [[ ${#missing[@]} == 0 ]]; then
        log "already installed: ${APT_PACKAGES[*]}"
        return
    fi
    command -v apt-get >/dev/null \
        || die "missing ${missing[*]} and no apt-get to install them" \
               "install podman (>= 4), runc, debootstrap, fuse-overlayfs, slirp4netns, uidmap, iptables by hand"
    log "installing with apt-get: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/apt.log" 2>&1 \
        || die "apt-get update failed (see $STATE/apt.log)" "needed: a reachable Debian mirror for: ${missing[*]}"
    apt-get install -y -qq "${missing[@]}" >>"$STATE/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed (see $STATE/apt.log)" \
               "install them by hand, then rerun; podman >= 4 with runc is what was tested"
    log "podman $(podman --version | awk '{print $3}') installed"
}

# ---------------------------------------------------------------------------------------------------------------------
# Script-owned containers.conf / registries.conf (nothing under /etc is changed): crun does not work with this
# machine kind's cgroup v1 hybrid mode and capped open-files limit, and no registry is reachable.
write_if_changed() {
    local file=$1 content=$2
    if [[ ! -f $file ]] || [[ $(cat "$file") != "$content" ]]; then
        printf '%s\n' "$content" >"$file"
        log "wrote $file"
    fi
}

podman_config() {
    local nofile
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    mkdir -p "$STATE/conf"
    write_if_changed "$STATE/conf/containers.conf" "# written by scripts/containerize.sh
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=32768:32768\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\""
    write_if_changed "$STATE/conf/registries.conf" "# written by scripts/containerize.sh: no registry look-ups for short names
unqualified-search-registries = []"
    export CONTAINERS_CONF=$STATE/conf/containers.conf
    export CONTAINERS_REGISTRIES_CONF=$STATE/conf/registries.conf
    log "CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_REGISTRIES_CONF=$CONTAINERS_REGISTRIES_CONF"
    podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}} {{.Host.NetworkBackend}}' \
        >"$STATE/podman-info.txt" 2>&1 \
        || die "podman does not work with this configuration: $(tail -n 3 "$STATE/podman-info.txt")"
    log "podman runtime/cgroups/storage/network: $(cat "$STATE/podman-info.txt")"
}

# ---------------------------------------------------------------------------------------------------------------------
# The Bento packs the pair that recsys_ranker:latest of $BENTOML_HOME names (service.py; serving checks that the
# two belong together).
ensure_model() {
    local found
    found=$("$BIN/bentoml" models list -o json 2>/dev/null | "$PY" -c 'import json, sys
names = {m["tag"].split(":")[0] for m in json.load(sys.stdin)}
print(int({"recsys_candidates", "recsys_ranker"} <= names))' || true)
    if [[ $found == 1 ]]; then
        log "the BentoML store $BENTOML_HOME has a model pair: the Bento packs the one recsys_ranker:latest names"
        return
    fi
    warn "no model pair (recsys_candidates + recsys_ranker) in BentoML store $BENTOML_HOME"
    warn "training a STAND-IN pair there on the synthetic '$TRAIN_SIZE' dataset, so the image serves that, not your model."
    warn "To containerize your own pair: train it first (\`make train\` / \`recsys train\` with this BENTOML_HOME), or"
    warn "point the script at the store that has it: CONTAINER_BENTOML_HOME=/path/to/bentoml make container"
    "$BIN/recsys" train --size "$TRAIN_SIZE" >"$STATE/train.log" 2>&1 \
        || { tail -n 30 "$STATE/train.log" >&2; die "recsys train failed (log: $STATE/train.log)"; }
    grep -E '^(models|total)' "$STATE/train.log" | sed 's/^/    /' || true
}

build_bento() {
    local out
    out=$("$BIN/bentoml" build -o tag 2>"$STATE/build.log") \
        || { cat "$STATE/build.log" >&2; die "bentoml build failed"; }
    TAG=$(printf '%s\n' "$out" | sed -n 's/^__tag__://p' | tail -n 1)
    [[ -n $TAG ]] || die "could not read the Bento tag from \`bentoml build -o tag\`: $out"
    BENTO_PATH=$("$BIN/bentoml" get "$TAG" -o path)
    log "Bento $TAG at $BENTO_PATH"
}

# ---------------------------------------------------------------------------------------------------------------------
# The generated Dockerfile starts FROM python:<ver>-slim, which lives on Docker Hub. Where no registry answers, a
# stand-in with the same interpreter is built from the Debian mirror and stored under the same name, once.
debian_mirror() {
    if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' \
        | grep -v security | head -n 1 || true)
    [[ -z $uri ]] && uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

base_image() {
    local from image suite pyver mirror t0 ca n=0
    from=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$BENTO_PATH/env/docker/Dockerfile")
    [[ -n $from ]] || die "no FROM line in $BENTO_PATH/env/docker/Dockerfile"
    image=$from
    [[ $image != */* ]] && image=docker.io/library/$image
    if "$CT" image inspect "$image" >/dev/null 2>&1; then
        log "base image $image is present (reused)"
        return
    fi
    if [[ $BASE_SOURCE == pull ]]; then
        "$CT" pull "$image" || die "could not pull $image" "unset CONTAINER_BASE_SOURCE to build a local stand-in"
        return
    fi
    pyver=${from#*python:}
    pyver=${pyver%%-*}
    case "$from" in
        python:3.11-slim | python:3.11-slim-bookworm) suite=bookworm ;;
        *) die "base image $image is not present and no stand-in recipe exists for it" \
               "the stand-in is Debian bookworm's python3 (3.11) for python:3.11-slim; this Bento wants $from" \
               "pull it (CONTAINER_BASE_SOURCE=pull) where a registry is reachable, or set docker.python_version: \"3.11\"" ;;
    esac
    command -v debootstrap >/dev/null || die "debootstrap is needed to build a stand-in for $image" "apt-get install debootstrap"
    mirror=$(debian_mirror)
    ROOTFS=$(mktemp -d "$STATE/rootfs.XXXXXX")
    log "building a stand-in for $image: debootstrap --variant=minbase $suite from $mirror (python $pyver)"
    t0=$(now)
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        "$suite" "$ROOTFS" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$STATE/debootstrap.log" >&2; die "debootstrap failed (log: $STATE/debootstrap.log)" \
                 "it needs root and the Debian mirror $mirror (override with DEBIAN_MIRROR)"; }
    log "    debootstrap: $(elapsed "$t0") s"
    # TLS to PyPI goes through an intercepting proxy whose CA the host trusts: the image must trust it too.
    for ca in /usr/local/share/ca-certificates/*.crt; do
        [[ -f $ca ]] || continue
        cp "$ca" "$ROOTFS/usr/local/share/ca-certificates/"
        n=$((n + 1))
    done
    if [[ $n -gt 0 ]]; then
        chroot "$ROOTFS" update-ca-certificates >>"$STATE/debootstrap.log" 2>&1 || die "update-ca-certificates failed in the stand-in"
        log "    added $n CA certificate(s) from /usr/local/share/ca-certificates"
    fi
    ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
    [[ -e $ROOTFS/usr/bin/pip ]] || ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/* "$ROOTFS"/tmp/*
    t0=$(now)
    tar --numeric-owner -C "$ROOTFS" -c . | "$CT" import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV UV_NATIVE_TLS=1' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'LABEL org.recsys.stand-in=debootstrap-bookworm-minbase' \
        --change 'CMD ["python3"]' \
        - "$image" >/dev/null || die "$CT import of the stand-in failed"
    rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
    log "    import: $(elapsed "$t0") s; $image = $("$CT" run --rm "$image" python --version 2>&1)"
}

# ---------------------------------------------------------------------------------------------------------------------
containerize() {
    local opts=() v
    # Podman hands the host's proxy variables to RUN steps itself; docker needs them as build args.
    for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
        if [[ -n ${!v:-} ]]; then opts+=(--opt "build-arg=$v=${!v}"); fi
    done
    log "bentoml containerize $TAG --backend $CT (log: $STATE/containerize.log)"
    # BentoML 1.4.40 re-renders the bentofile's dockerfile_template from a temporary copy of the Bento and refuses a
    # template outside the working directory (bentoml#5566): so the copy is made under the working directory.
    mkdir -p "$STATE/tmp"
    (cd "$STATE" && TMPDIR=$STATE/tmp "$BIN/bentoml" containerize "$TAG" --backend "$CT" "${opts[@]}") \
        >"$STATE/containerize.log" 2>&1 \
        || { tail -n 40 "$STATE/containerize.log" >&2; die "bentoml containerize failed (log: $STATE/containerize.log)"; }
    "$CT" image inspect "$TAG" >/dev/null 2>&1 || die "containerize finished but there is no image $TAG"
    echo "$TAG" >>"$STATE/images"
    log "image $TAG: $("$CT" image inspect "$TAG" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

# The image must hold exactly the serving lock the Bento points to: the versions the tests ran with.
check_packages() {
    "$CT" run --rm --entrypoint /bin/sh "$TAG" -c 'uv pip freeze --python python3' >"$STATE/image-packages.txt" \
        2>"$STATE/image-packages.log" \
        || die "could not list the image's Python packages: $(tail -n 2 "$STATE/image-packages.log")"
    "$PY" "$SMOKE" packages "$REPO/requirements/serving.txt" "$STATE/image-packages.txt" \
        || die "the image's Python packages differ from requirements/serving.txt (listed in $STATE/image-packages.txt)"
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_ready NAME URL T0 CHECK_ALIVE_CMD...: poll URL/readyz until 200 (T0 = when the server was started); fail early
# if the server died
wait_ready() {
    local name=$1 url=$2 t0=$3
    shift 3
    while ! "$PY" "$SMOKE" probe "$url/readyz"; do
        "$@" || die "$name exited before it was ready (logs follow)"
        [[ $(awk -v e="$(elapsed "$t0")" -v m="$READY_TIMEOUT" 'BEGIN { print (e > m) }') == 1 ]] \
            && die "$name was not ready within ${READY_TIMEOUT}s"
        sleep 0.5
    done
    log "    $name ready at $url, $(elapsed "$t0") s after its start"
}

container_alive() { [[ $("$CT" inspect -f '{{.State.Running}}' "$CNAME" 2>/dev/null) == true ]]; }
host_alive() { kill -0 "$HOST_PID" 2>/dev/null; }

start_servers() {
    PORT=${CONTAINER_PORT:-$(free_port)}
    HOST_PORT=${CONTAINER_HOST_PORT:-$(free_port)}
    [[ $HOST_PORT == "$PORT" ]] && HOST_PORT=$(free_port)
    CT_T0=$(now)
    if [[ ${CONTAINER_NETWORK:-} != host ]] \
        && "$CT" run -d --name "$CNAME" -e BENTOML_DO_NOT_TRACK=True -p "127.0.0.1:$PORT:3000" "$TAG" \
        >"$STATE/run.log" 2>&1; then
        log "container $CNAME: -p 127.0.0.1:$PORT:3000"
    else
        [[ ${CONTAINER_NETWORK:-} == host ]] \
            || warn "port mapping failed ($(tail -n 1 "$STATE/run.log")); retrying with --network host, BENTOML_HOST=127.0.0.1 PORT=$PORT"
        "$CT" rm -f "$CNAME" >/dev/null 2>&1 || true
        "$CT" run -d --name "$CNAME" --network host -e BENTOML_DO_NOT_TRACK=True -e BENTOML_HOST=127.0.0.1 \
            -e "PORT=$PORT" "$TAG" >"$STATE/run.log" 2>&1 || die "$CT run failed: $(tail -n 3 "$STATE/run.log")"
        log "container $CNAME: --network host, port $PORT"
    fi
    CONTAINER_STARTED=1
    HOST_T0=$(now)
    setsid "$BIN/bentoml" serve "$TAG" --host 127.0.0.1 --port "$HOST_PORT" >"$STATE/host-serve.log" 2>&1 &
    HOST_PID=$!
    log "host: bentoml serve $TAG --host 127.0.0.1 --port $HOST_PORT (pid $HOST_PID, log $STATE/host-serve.log)"
}

wait_container() { wait_ready "container" "http://127.0.0.1:$PORT" "$CT_T0" container_alive; }
wait_host() { wait_ready "host bentoml serve" "http://127.0.0.1:$HOST_PORT" "$HOST_T0" host_alive; }

smoke_test() {
    local user
    user=$("$PY" "$SMOKE" user "$BENTO_PATH" 2>"$STATE/user.log") \
        || { cat "$STATE/user.log" >&2; die "could not read a known user id from the Bento's candidate model"; }
    log "known user: $user"
    "$PY" "$SMOKE" compare "$TOP_K" "$user" "http://127.0.0.1:$PORT" "http://127.0.0.1:$HOST_PORT" \
        || die "the container's answer is wrong or differs from the host's"
}

# Images of earlier runs, failed ones included (kept until the next pass for inspection), are listed in
# $STATE/images; only the newest passing one stays.
retire_images() {
    local prev
    if [[ -f $STATE/images ]]; then
        while read -r prev; do
            if [[ -n $prev && $prev != "$TAG" ]] && "$CT" image inspect "$prev" >/dev/null 2>&1; then
                if "$CT" rmi "$prev" >/dev/null 2>&1; then log "removed the image of an earlier run: $prev"; fi
            fi
        done <"$STATE/images"
    fi
    if [[ ${CONTAINER_RM_IMAGE:-0} == 1 ]]; then
        : >"$STATE/images"
        log "image $TAG is removed after the container (CONTAINER_RM_IMAGE=1)"
    else
        echo "$TAG" >"$STATE/images"
        local conf=""
        if [[ $CT == podman ]]; then conf="CONTAINERS_CONF=$CONTAINERS_CONF CONTAINERS_REGISTRIES_CONF=$CONTAINERS_REGISTRIES_CONF "; fi
        log "image kept: $TAG; run it with: $conf$CT run --rm -p 127.0.0.1:3000:3000 $TAG"
    fi
}

# ---------------------------------------------------------------------------------------------------------------------
log "repo $REPO; BENTOML_HOME=$BENTOML_HOME"
phase "preflight" preflight
if [[ $CT == podman ]]; then
    phase "host packages (apt-get)" host_packages
    phase "podman configuration" podman_config
fi
phase "model pair (train if missing)" ensure_model
phase "bentoml build" build_bento
phase "base image" base_image
phase "bentoml containerize" containerize
phase "image packages = requirements/serving.txt" check_packages
phase "start container + host server" start_servers
phase "container /readyz (waiting)" wait_container
phase "host serve /readyz (waiting, started alongside)" wait_host
phase "POST /recommend, compare" smoke_test
phase "image housekeeping" retire_images
RESULT=PASS
