#!/usr/bin/env bash
# A real, local Kubernetes control plane for tests and development, run as
# plain loopback processes (no Docker): etcd + kube-apiserver, and by default
# also kube-controller-manager, kube-scheduler and kwok (a fake kubelet with
# one fake Node), so Deployments really roll out to fake pods that become Ready.
#
# Usage: e2e/scripts/controlplane.sh start [--minimal | --netns] | stop | status | env
#        e2e/scripts/controlplane.sh {stop|status|env} --netns | exec -- CMD...
#        e2e/scripts/controlplane.sh restart-apiserver [--signal TERM|KILL] [--grace SECONDS] [--down SECONDS]
#        e2e/scripts/controlplane.sh {pause|resume} COMPONENT
#   start      start everything (or report that it is already running); waits
#              for /readyz, default ServiceAccounts and a Ready node; prints timings
#   --minimal  etcd + kube-apiserver only (CRDs, CEL, SSA, subresources, RBAC)
#   --netns    the network-namespace tier (docs/e2e.md): the full control plane
#              inside a network namespace of its own, where the pod CIDR
#              10.244.0.0/16 and the Service range 10.96.0.0/12 are local
#              addresses, so harness processes can serve pod IPs and ClusterIPs;
#              kwok starts pods but never marks them Ready (the harness pod
#              runtime, e2e/src/bin/pod-runtime.rs, does). Own state dir (below).
#   stop       stop what `start` started, by recorded PID, and wait for it to exit
#   status     print each component's state; exit 0 only when all are running
#   env        print `export` lines: source <(e2e/scripts/controlplane.sh env)
#   exec       run CMD inside the netns tier's namespace with its KUBECONFIG
#              (and SPINDLE_TEST_KUBECONFIG) set and kubectl on PATH
#   restart-apiserver  the fault tier (e2e/tests/faults.rs): stop kube-apiserver
#              alone by its recorded PID (SIGTERM, the default, or SIGKILL; after
#              SIGTERM, SIGKILL when it has not exited within --grace, default 30 s
#              as a kubelet does), keep it down SECONDS (default 0), start it again
#              with the very same command line (same port, certs, etcd), wait for /readyz
#   pause, resume  SIGSTOP / SIGCONT one component by its recorded PID (the fault
#              tier pauses etcd)
#   SPINDLE_AUDIT=1 (start): kube-apiserver writes an audit log of every write
#              (create, update, patch, delete: Metadata level, nothing else) to
#              <state>/audit.log, JSON lines; the fault tier counts a replica's writes in it
#
# State (PKI, etcd data, logs, PIDs, kubeconfig) lives in
# ${SPINDLE_STATE:-<repo>/.spindle/cp} (--netns: ${SPINDLE_NETNS_STATE:-<repo>/.spindle/cp-netns}).
# Binaries come from build-tools.sh's cache.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=e2e/scripts/versions.sh
source "$here/scripts/versions.sh"

state=${SPINDLE_STATE:-$repo/.spindle/cp}
# --netns (for any subcommand; exec implies it) selects the network-namespace tier.
netns=0
[[ ${1:-} == exec ]] && netns=1
for a in "$@"; do [[ $a == -- ]] && break; [[ $a == --netns ]] && netns=1; done
# Prefix that runs a command inside the tier's namespace (empty by default).
nsx=()
if ((netns)); then
  # Its own variable: SPINDLE_STATE set for the default tier must not collide with it.
  state=${SPINDLE_NETNS_STATE:-$repo/.spindle/cp-netns}
  # One namespace per state dir, so a CI clone and a developer checkout never share one.
  ns_name=spindle-$(printf '%s' "$state" | sha256sum | cut -c1-12)
  ns_path=/run/netns/$ns_name
  nsx=(nsenter "--net=$ns_path")
fi
k8s_bin=$SPINDLE_CACHE/k8s-$K8S_VERSION
etcd_bin=$SPINDLE_CACHE/etcd-$ETCD_VERSION/etcd
kwok_dir=$SPINDLE_CACHE/kwok-$KWOK_VERSION
node_name=kwok-node-0
# Stop order is the reverse of start order.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf 'controlplane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
secs_since() { local d=$(($(now_ms) - $1)); printf '%d.%01ds' $((d / 1000)) $((d % 1000 / 100)); }

# The PID recorded for a component, if that process is still alive and is
# still the binary we started (guards against PID reuse).
live_pid() {
  local c=$1 pid
  [[ -f $state/pids/$c.pid ]] || return 1
  pid=$(<"$state/pids/$c.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$c" || return 1
  echo "$pid"
}

mode() { cat "$state/mode" 2>/dev/null || echo none; }

wanted() { # components of the recorded mode
  if [[ $(mode) == minimal ]]; then echo etcd kube-apiserver; else echo "${components[@]}"; fi
}

all_running() {
  local c
  [[ -f $state/mode ]] || return 1
  for c in $(wanted); do live_pid "$c" >/dev/null || return 1; done
}

# A TCP port on 127.0.0.1 nobody listens on (checked with ss; a tiny race
# remains between here and the bind, acceptable for a dev/test harness).
used_ports=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 30000))
    [[ $used_ports == *" $p "* ]] && continue
    if ! ss -Htln "sport = :$p" | grep -q .; then used_ports+="$p "; echo "$p"; return 0; fi
  done
  die "no free port found"
}

spawn() { # name logfile cmd... : start detached, record PID
  local c=$1; shift
  # Appends: a component restarted by restart-apiserver keeps its earlier log.
  setsid "${nsx[@]}" "$@" >>"$state/logs/$c.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$c.pid"
}

# Whether the process just spawned for a component still exists. Not live_pid:
# between fork and exec the child's cmdline is still this script's, and a
# check in that instant (a loaded machine) took a starting kube-apiserver for
# an exited one and stopped it before it had written a line.
spawned_alive() {
  local pid
  pid=$(<"$state/pids/$1.pid") 2>/dev/null || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

wait_until() { # timeout-seconds description component command...
  local t=$1 what=$2 c=$3; shift 3
  local deadline=$(($(now_ms) + t * 1000))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $c ]] && ! spawned_alive "$c"; then
      log "$c exited while waiting for $what; last lines of $state/logs/$c.log:"
      tail -n 30 "$state/logs/$c.log" >&2 || true
      stop_all; exit 1
    fi
    if (($(now_ms) > deadline)); then
      log "timed out after ${t}s waiting for $what; see $state/logs/"
      [[ -n $c ]] && tail -n 30 "$state/logs/$c.log" >&2
      stop_all; exit 1
    fi
    sleep 0.2
  done
}

gen_pki() {
  local d=$state/pki
  mkdir -p "$d"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$d/ca.key" -out "$d/ca.crt" -days 365 \
    -subj "/CN=spindle-test-ca" 2>/dev/null
  sign() { # name subject extensions
    openssl req "${ec[@]}" -keyout "$d/$1.key" -out "$d/$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 365 -out "$d/$1.crt" -extfile <(printf '%s\n' "$3") 2>/dev/null
  }
  sign apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
  sign admin "/O=system:masters/CN=spindle-admin" \
    "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

write_kubeconfig() { # port
  local d=$state/pki b64='base64 -w0'
  cat >"$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: spindle
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $($b64 <"$d/ca.crt")
users:
- name: spindle-admin
  user:
    client-certificate-data: $($b64 <"$d/admin.crt")
    client-key-data: $($b64 <"$d/admin.key")
contexts:
- name: spindle
  context:
    cluster: spindle
    user: spindle-admin
current-context: spindle
EOF
  chmod 600 "$state/kubeconfig"
}

kc() { "${nsx[@]}" "$k8s_bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

readyz() {
  "${nsx[@]}" curl -sf --max-time 2 --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" \
    --key "$state/pki/admin.key" "https://127.0.0.1:$(<"$state/apiserver.port")/readyz"
}

node_ready() {
  [[ $(kc get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

fake_node() {
  kc apply -f - <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node_name
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $node_name
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1100"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1100"}
  nodeInfo:
    architecture: amd64
    kubeletVersion: fake
    operatingSystem: linux
  phase: Running
EOF
}

start() {
  local want=full
  [[ ${1:-} == --minimal ]] && want=minimal
  [[ ${1:-} == --netns ]] && want=netns
  [[ $# -le 1 && ( $# -eq 0 || $1 == --minimal || $1 == --netns ) ]] || die "usage: controlplane.sh start [--minimal | --netns]"
  if all_running; then
    if [[ $(mode) == minimal && $want == full ]]; then
      die "a minimal control plane is running from $state; stop it first (controlplane.sh stop)"
    fi
    log "already running ($(mode)) from $state; kubeconfig $state/kubeconfig"
    return 0
  fi
  local c
  for c in "${components[@]}"; do
    if live_pid "$c" >/dev/null; then log "stopping leftovers of an incomplete start"; stop_all; break; fi
  done
  for b in "$etcd_bin" "$k8s_bin/kube-apiserver" "$k8s_bin/kubectl"; do
    [[ -x $b ]] || die "$b is missing; build it with e2e/scripts/build-tools.sh"
  done
  if [[ $want != minimal ]]; then
    for b in "$k8s_bin/kube-controller-manager" "$k8s_bin/kube-scheduler" "$kwok_dir/kwok" "$kwok_dir/stages.yaml"; do
      [[ -e $b ]] || die "$b is missing; build it with e2e/scripts/build-tools.sh (or use --minimal)"
    done
  fi
  for t in openssl curl ss setsid base64; do command -v "$t" >/dev/null || die "$t is required"; done

  local t0 t1
  t0=$(now_ms)
  rm -rf "$state"
  mkdir -p "$state/logs" "$state/pids"
  echo "$want" >"$state/mode"
  gen_pki

  # The node stages heartbeat only every ~10 min and expect kwok to renew the
  # node's Lease; without one kcm marks the node NotReady after its grace
  # period (every ~55 s, for ~5 s), and every pod NotReady with it: readiness
  # flaps and controllers write status for it (the converge benchmark's idle
  # writes).
  local etcd_port peer_port api_port kwok_config=$kwok_dir/stages.yaml
  local kwok_extra=(--node-lease-duration-seconds 40)
  if [[ $want == netns ]]; then
    make_netns
    netns_stages >"$state/kwok-stages.yaml"
    kwok_config=$state/kwok-stages.yaml
    # The namespace is private to this tier: fixed ports cannot collide.
    etcd_port=2379; peer_port=2380; api_port=6443
  else
    etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  fi
  echo "$api_port" >"$state/apiserver.port"
  write_kubeconfig "$api_port"

  t1=$(now_ms)
  spawn etcd "$etcd_bin" --name spindle --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "spindle=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level warn
  wait_until 30 "etcd /health" etcd "${nsx[@]}" curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health"
  log "etcd ready on 127.0.0.1:$etcd_port in $(secs_since "$t1")"

  t1=$(now_ms)
  local admission=()
  # Without kube-controller-manager nothing creates default ServiceAccounts.
  [[ $want == minimal ]] && admission=(--disable-admission-plugins=ServiceAccount)
  local audit=()
  if [[ ${SPINDLE_AUDIT:-0} == 1 ]]; then
    audit_policy >"$state/audit-policy.yaml"
    # Blocking mode (the log backend's default): an event is on disk before the
    # response is sent, so a count read after the fact misses nothing.
    audit=(--audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/audit.log"
      --audit-log-format json --audit-log-mode blocking --audit-log-maxsize 0)
  fi
  local p=$state/pki
  spawn kube-apiserver "$k8s_bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$p" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --endpoint-reconciler-type none "${admission[@]}" "${audit[@]}"
  wait_until 90 "kube-apiserver /readyz" kube-apiserver readyz
  log "kube-apiserver ready on https://127.0.0.1:$api_port in $(secs_since "$t1")"

  if [[ $want != minimal ]]; then
    t1=$(now_ms)
    spawn kube-controller-manager "$k8s_bin/kube-controller-manager" \
      --kubeconfig "$state/kubeconfig" --leader-elect=false --secure-port 0 \
      --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
      --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
      --use-service-account-credentials=false --flex-volume-plugin-dir "$state/flexvolume"
    spawn kube-scheduler "$k8s_bin/kube-scheduler" \
      --kubeconfig "$state/kubeconfig" --leader-elect=false --secure-port 0
    spawn kwok "$kwok_dir/kwok" --kubeconfig "$state/kubeconfig" --config "$kwok_config" \
      --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --cidr 10.244.0.1/16 --node-ip 10.244.0.1 "${kwok_extra[@]}"
    wait_until 60 "node registration" kwok fake_node
    wait_until 60 "node $node_name to be Ready" kwok node_ready
    wait_until 60 "the default ServiceAccount" kube-controller-manager kc -n default get serviceaccount default
    log "controller-manager, scheduler, kwok and node $node_name ready in $(secs_since "$t1")"
  fi
  log "control plane ($want) started in $(secs_since "$t0"); state in $state"
  if [[ $want == netns ]]; then
    log "netns $ns_name; run commands in it with: $here/scripts/controlplane.sh exec -- CMD"
  else
    log "use it with: source <($here/scripts/controlplane.sh env)"
  fi
}

# Writes only, at Metadata level (who, what, when, user agent; no bodies): reads
# and watches are most of the traffic and would cost the loaded machine more.
audit_policy() {
  cat <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
EOF
}

# Stops kube-apiserver alone, keeps etcd and the rest running, and starts it
# again from its own /proc cmdline, so it comes back on the same port with the
# same certs and flags and every client reconnects by itself.
restart_apiserver() {
  local sig=TERM down=0 grace=30
  while (($#)); do
    case $1 in
      --signal) sig=${2:-}; shift 2 ;;
      --down) down=${2:-}; shift 2 ;;
      --grace) grace=${2:-}; shift 2 ;;
      *) die "usage: controlplane.sh restart-apiserver [--signal TERM|KILL] [--grace SECONDS] [--down SECONDS]" ;;
    esac
  done
  [[ $sig == TERM || $sig == KILL ]] || die "--signal must be TERM or KILL, not $sig"
  [[ $down =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--down must be a number of seconds, not $down"
  [[ $grace =~ ^[0-9]+$ ]] || die "--grace must be a whole number of seconds, not $grace"
  local pid t0
  pid=$(live_pid kube-apiserver) || die "kube-apiserver is not running from $state"
  local args=()
  mapfile -d '' args <"/proc/$pid/cmdline"
  ((${#args[@]} > 0)) || die "cannot read the command line of kube-apiserver ($pid)"
  t0=$(now_ms)
  kill "-$sig" "$pid"
  # Not our child: poll. After SIGTERM it stops listening within a second but
  # then drains open watches for up to a minute; a kubelet would SIGKILL it
  # at the end of the pod's grace period.
  for _ in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "kube-apiserver ($pid) still draining after ${grace}s; SIGKILL"; kill -KILL "$pid"; fi
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  log "kube-apiserver ($pid) stopped by SIG$sig in $(secs_since "$t0"); down for ${down}s"
  sleep "$down"
  t0=$(now_ms)
  spawn kube-apiserver "${args[@]}"
  wait_until 90 "kube-apiserver /readyz after the restart" kube-apiserver readyz
  log "kube-apiserver ($(<"$state/pids/kube-apiserver.pid")) ready again in $(secs_since "$t0")"
}

signal_component() { # STOP|CONT component
  local sig=$1 c=${2:-} pid
  [[ " ${components[*]} " == *" $c "* ]] || die "unknown component '$c' (one of: ${components[*]})"
  pid=$(live_pid "$c") || die "$c is not running from $state"
  kill "-$sig" "$pid"
  log "sent SIG$sig to $c ($pid)"
}

# The netns tier's namespace: loopback up, and the pod CIDR and Service range
# made local ("AnyIP" routes), so any pod IP or ClusterIP can be bound in it.
make_netns() {
  [[ $(id -u) == 0 ]] || die "--netns needs root (ip netns add)"
  for t in ip nsenter sha256sum; do command -v "$t" >/dev/null || die "$t is required for --netns"; done
  if [[ -e $ns_path ]]; then ip netns delete "$ns_name" || die "cannot remove the stale namespace $ns_name"; fi
  ip netns add "$ns_name" || die "ip netns add $ns_name failed"
  ip -n "$ns_name" link set lo up
  ip -n "$ns_name" route add local 10.244.0.0/16 dev lo
  ip -n "$ns_name" route add local 10.96.0.0/12 dev lo
  echo "$ns_name" >"$state/netns"
}

# kwok stages of the netns tier: the node stages build-tools.sh extracted, and
# pod stages that start a pod (Running, an IP, after an emulated sandbox delay)
# but leave Ready to the harness pod runtime, and delete a terminating pod only
# at its deletionTimestamp (grace period over), as a kubelet kills at the end of
# the grace period; the pod runtime deletes it earlier once its preStop is done.
netns_stages() {
  awk '/^---$/ { if (doc ~ /kind: Node\n/) printf "---\n%s", doc; doc = ""; next }
    { doc = doc $0 "\n" } END { if (doc ~ /kind: Node\n/) printf "---\n%s", doc }' "$kwok_dir/stages.yaml"
  cat <<'EOF'
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-start-not-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
  delay:
    durationMilliseconds: 100
    jitterDurationMilliseconds: 400
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ $hostIPs := NodeIPsWith .spec.nodeName }}
      {{ with $hostIPs }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete-at-grace-end
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  delay:
    # The shorter of the two wins: one day, or until deletionTimestamp.
    durationMilliseconds: 86400000
    jitterDurationFrom:
      expressionFrom: '.metadata.deletionTimestamp'
  next:
    delete: true
EOF
}

stop_all() {
  local i c pid stopped=()
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    c=${components[i]}
    if pid=$(live_pid "$c"); then
      kill -TERM "$pid" 2>/dev/null || true
      # A component left paused (controlplane.sh pause) acts on SIGTERM only once continued.
      kill -CONT "$pid" 2>/dev/null || true
      stopped+=("$c:$pid")
    fi
  done
  for entry in "${stopped[@]}"; do
    c=${entry%%:*}; pid=${entry#*:}
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$c ($pid) ignored SIGTERM; killing"; kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$state/pids/$c.pid"
  done
  ((${#stopped[@]} == 0)) || log "stopped ${stopped[*]%%:*}"
}

stop() {
  if [[ ! -d $state/pids ]]; then log "nothing to stop in $state"; return 0; fi
  stop_all
  rm -f "$state/mode"
  if ((netns)) && [[ -e $ns_path ]]; then
    ip netns delete "$ns_name" && log "deleted netns $ns_name"
  fi
}

status() {
  local c pid rc=0
  if [[ ! -f $state/mode ]]; then echo "not started (state dir $state)"; return 1; fi
  echo "mode: $(mode); state: $state"
  for c in $(wanted); do
    if pid=$(live_pid "$c"); then echo "  $c: running (pid $pid)"; else echo "  $c: NOT running"; rc=1; fi
  done
  if ((rc == 0)) && readyz >/dev/null 2>&1; then
    echo "  apiserver: https://127.0.0.1:$(<"$state/apiserver.port") ready"
  else
    echo "  apiserver: not ready"; rc=1
  fi
  return $rc
}

print_env() {
  [[ -f $state/kubeconfig ]] || die "no control plane in $state; run: $here/scripts/controlplane.sh start"
  if ((netns)); then
    # Its apiserver is reachable only inside the namespace: no KUBECONFIG here.
    printf 'export SPINDLE_NETNS_STATE=%q\n' "$state"
    printf 'export SPINDLE_NETNS=%q\n' "$ns_path"
    return 0
  fi
  printf 'export SPINDLE_TEST_KUBECONFIG=%q\n' "$state/kubeconfig"
  printf 'export KUBECONFIG=%q\n' "$state/kubeconfig"
  # shellcheck disable=SC2016 # $PATH is expanded where the output is sourced
  printf 'export PATH=%q:"$PATH"\n' "$k8s_bin"
}

exec_in() { # [--netns] [--] CMD...
  [[ ${1:-} == --netns ]] && shift
  [[ ${1:-} == -- ]] && shift
  (($# > 0)) || die "usage: controlplane.sh exec -- CMD..."
  [[ -e $ns_path && -f $state/kubeconfig ]] || die "no netns tier in $state; run: $here/scripts/controlplane.sh start --netns"
  exec "${nsx[@]}" env KUBECONFIG="$state/kubeconfig" SPINDLE_TEST_KUBECONFIG="$state/kubeconfig" \
    SPINDLE_NETNS_STATE="$state" SPINDLE_NETNS="$ns_path" PATH="$k8s_bin:$PATH" "$@"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  exec) exec_in "$@" ;;
  restart-apiserver) restart_apiserver "$@" ;;
  pause) signal_component STOP "$@" ;;
  resume) signal_component CONT "$@" ;;
  *) echo "usage: $0 start [--minimal | --netns] | stop | status | env [--netns] | exec -- CMD... | restart-apiserver [--signal TERM|KILL] [--down SECONDS] | pause|resume COMPONENT" >&2; exit 2 ;;
esac
