#!/usr/bin/env bash
# deploy/slurm/deltaserve.sbatch on a real, private, one-node Slurm: its own munged (key, socket,
# logs in a temp dir), slurmctld and slurmd on free ports with a slurm.conf of their own, so the
# host's Slurm/munge setup (if any) is neither used nor touched. The job serves TP 2 on CPU workers;
# the test sends a completion, then cancels the job under an in-flight streaming request: scancel
# sends SIGTERM to every process of the job at once (front end and workers), and the stream must
# keep going during the drain and end naming the shutdown, and nothing of the job may be left.
# deploy/setup.sh installs slurm-wlm, slurmctld, slurmd and munge; without them this exits 77.
source "$(dirname "$0")/lib.sh"

for bin in munged slurmctld slurmd sbatch srun squeue scancel scontrol; do
  command -v "$bin" >/dev/null || { log "SKIP: $bin is not installed (deploy/setup.sh installs Slurm and munge)"; exit 77; }
done

SLURM_DIR=$WORK_DIR/slurm
mkdir -p "$SLURM_DIR"/{state,spool}
chmod 700 "$SLURM_DIR"
DAEMON_PIDS=()
JOB_ID=

# slurm_cleanup RC: cancel the job, stop the daemons (logs shown when RC says the test failed).
slurm_cleanup() {
  local rc=$1 pid
  [[ -n $JOB_ID ]] && scancel "$JOB_ID" 2>/dev/null
  for pid in "${DAEMON_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${DAEMON_PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  if ((rc != 0 && rc != 77)); then
    for f in slurmctld.log slurmd.log job.log; do
      [[ -f $SLURM_DIR/$f ]] && { echo "---- $f (tail) ----" >&2; tail -n 25 "$SLURM_DIR/$f" >&2; }
    done
  fi
}
# errexit off in the trap (a failed kill must not skip the rest); lib.sh's cleanup reads $? as the
# script's exit status, so it is restored just before.
trap 'rc=$?; set +e; slurm_cleanup $rc; (exit $rc); cleanup' EXIT

# munge: a fresh key and a socket of our own (Slurm is pointed at it with AuthInfo).
MUNGE_SOCKET=$SLURM_DIR/munge.socket
dd if=/dev/urandom of="$SLURM_DIR/munge.key" bs=1 count=1024 status=none
chmod 400 "$SLURM_DIR/munge.key"
munged --force --foreground --key-file="$SLURM_DIR/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$SLURM_DIR/munged.pid" --log-file="$SLURM_DIR/munged.log" --seed-file="$SLURM_DIR/munged.seed" \
  >"$SLURM_DIR/munged.out" 2>&1 &
DAEMON_PIDS+=($!)

NODE=$(hostname -s)
export SLURM_CONF=$SLURM_DIR/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=deltaserve-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
ReturnToService=2
KillWait=10
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

for _ in $(seq 50); do [[ -S $MUNGE_SOCKET ]] && break; sleep 0.1; done
[[ -S $MUNGE_SOCKET ]] || { cat "$SLURM_DIR/munged.out" >&2; fail "munged did not open $MUNGE_SOCKET"; }
slurmctld -D -i -f "$SLURM_CONF" >"$SLURM_DIR/slurmctld.out" 2>&1 &
DAEMON_PIDS+=($!)
slurmd -D -f "$SLURM_CONF" >"$SLURM_DIR/slurmd.out" 2>&1 &
DAEMON_PIDS+=($!)
deadline=$((SECONDS + 60))
until sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; do
  ((SECONDS < deadline)) || { sinfo -N 2>&1 >&2; fail "the Slurm node did not become idle within 60 s"; }
  sleep 0.5
done
log "local Slurm up: node $NODE idle"

HTTP_PORT=$(free_port)
GRPC_PORT=$(free_port)
BASE_URL=http://127.0.0.1:$HTTP_PORT
JOB_ID=$(DELTASERVE=$DELTASERVE_BIN CONTROL_PORT=$(free_port) sbatch --parsable --nodes=1 --output="$SLURM_DIR/job.log" \
  "$DELTASERVE_SOURCE_DIR/deploy/slurm/deltaserve.sbatch" \
  --tp 2 --device cpu --port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --shutdown-timeout 5) || fail "sbatch refused the job"
log "submitted job $JOB_ID"

deadline=$((SECONDS + ${STARTUP_TIMEOUT:-300}))
until curl -sf "$BASE_URL/health" >/dev/null 2>&1; do
  state=$(squeue -h -j "$JOB_ID" -o '%T' 2>/dev/null || true)
  [[ -n $state ]] || fail "job $JOB_ID ended before the server was healthy"
  ((SECONDS < deadline)) || fail "the server of job $JOB_ID was not healthy within ${STARTUP_TIMEOUT:-300} s (job $state)"
  sleep 0.5
done
log "job $JOB_ID serving on port $HTTP_PORT"

response=$(curl -sf "$BASE_URL/v1/completions" -H 'content-type: application/json' \
  -d '{"prompt":"Slurm says hello:","max_tokens":6,"temperature":0,"ignore_eos":true}') || fail "the completion request failed"
python3 - "$response" <<'EOF' || fail "bad completion: $response"
import json, sys
r = json.loads(sys.argv[1])
c = r["choices"][0]
assert c["finish_reason"] == "length", c
assert r["usage"]["completion_tokens"] == 6, r["usage"]
assert isinstance(c["text"], str) and c["text"], c
EOF
log "completion: $(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])["choices"][0]["text"]))' "$response")"
mapfile -t job_pids < <(pgrep -f -- "--port $HTTP_PORT --grpc-port $GRPC_PORT" || true)
((${#job_pids[@]} >= 1)) || fail "cannot find the job's front end process"
mapfile -t job_pids < <(printf '%s\n' "${job_pids[@]}"; pgrep -P "$(IFS=,; echo "${job_pids[*]}")" || true)

# A stream that cannot finish within --shutdown-timeout 5: it must still get tokens after scancel
# (the workers ignore SIGTERM and serve the drain) and then end with the shutdown named.
STREAM=$WORK_DIR/stream.out
start_long_stream "$BASE_URL" "$STREAM"
scancel "$JOB_ID"
log "scancel under a streaming request"
expect_drained_stream "$STREAM" scancel

deadline=$((SECONDS + 30))
while [[ -n $(squeue -h -j "$JOB_ID" 2>/dev/null) ]]; do
  ((SECONDS < deadline)) || fail "job $JOB_ID still listed 30 s after scancel"
  sleep 0.5
done
JOB_ID=
for pid in "${job_pids[@]}"; do
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && fail "process $pid of the job outlived scancel: $(ps -o args= -p "$pid")"
done
grep -q "front end on $NODE" "$SLURM_DIR/job.log" || fail "the job log lacks the sbatch script's banner"
log "ok: job cancelled, its ${#job_pids[@]} processes are gone"
log "PASS"
