#!/usr/bin/env bash
# `deltaserve bench` against a real `deltaserve serve` (the embedded default model, CPU workers),
# over both backends: with --ignore-eos every request returns exactly its max_tokens; the JSON
# summary agrees with the per-request records under the DESIGN.md §7 definitions; refused
# requests (prompt beyond the context, max_tokens beyond it) and requests cut by a killed server
# are counted as failures with reasons and kept out of the latencies.
# Env: DELTASERVE_BIN (the binary), DELTASERVE_SOURCE_DIR (the repository).
set -euo pipefail

BIN=${DELTASERVE_BIN:?set DELTASERVE_BIN to the deltaserve binary}
CONTEXT=256   # a small context, so refusals are cheap to provoke
SERVER_PID=
WORK=$(mktemp -d)

log() { printf '[bench_serving] %s\n' "$*"; }
die() {
  printf '[bench_serving] FAIL: %s\n' "$*" >&2
  [[ -f $WORK/server.log ]] && { echo "--- server log (tail)" >&2; tail -n 40 "$WORK/server.log" >&2; }
  exit 1
}
# serve runs in a process group of its own (setsid), so its workers go with it.
kill_server() {  # kill_server <signal>
  [[ -n $SERVER_PID ]] || return 0
  kill "-$1" "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}
stop_server() { kill_server TERM; }
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT

# CLI11 answers `--help` after an unknown subcommand with the top-level help and status 0, so
# `serve --help` only proves `serve` exists when it prints serve's own options.
if ! "$BIN" serve --help 2>/dev/null | grep -q -- '--grpc-port'; then
  echo "[bench_serving] SKIPPED: '$BIN serve --help' does not show serve's options: this build has no 'serve' subcommand yet" >&2
  exit 77
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_server() {
  HTTP_PORT=$(free_port)
  GRPC_PORT=$(free_port)
  setsid "$BIN" serve --host 127.0.0.1 --port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --context-length "$CONTEXT" \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "serve exited before becoming healthy"
    sleep 0.5
  done
  die "serve not healthy on port $HTTP_PORT after 300 s"
}

port_of() { if [[ $1 == grpc ]]; then echo "$GRPC_PORT"; else echo "$HTTP_PORT"; fi; }

bench() {  # bench <backend> <json> [flags...]
  local backend=$1 out=$2
  shift 2
  timeout 600 "$BIN" bench --backend "$backend" --host 127.0.0.1 --port "$(port_of "$backend")" --seed 7 \
    --output-file "$out" "$@" >"$out.log" 2>&1 || { cat "$out.log" >&2; die "bench --backend $backend $* failed"; }
}

# check.py <result.json> <mode>: mode "exact" (all succeed with exactly max_tokens), "refused"
# (successes exact, failures name the context limit), "cut" (some failed, no success short).
check() {
  CONTEXT=$CONTEXT python3 - "$@" <<'PY'
import json, math, os, sys

path, mode = sys.argv[1], sys.argv[2]
r = json.load(open(path))
s, reqs, cfg = r["summary"], r["requests"], r["config"]
errors = []
def expect(cond, what):
    if not cond: errors.append(what)
def close(a, b, what, rel=1e-6, abs_=1e-9):
    expect(math.isclose(a, b, rel_tol=rel, abs_tol=abs_), f"{what}: {a} != {b}")

def pct(values, q):  # numpy.percentile, linear
    v = sorted(values)
    if not v: return 0.0
    k = q / 100 * (len(v) - 1)
    lo = math.floor(k); hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)

def check_dist(name, values, with_max=False):
    close(s[f"mean_{name}_ms"], 1e3 * sum(values) / len(values) if values else 0.0, f"mean {name}")
    for q, key in ((50, "median"), (90, "p90"), (99, "p99")):
        close(s[f"{key}_{name}_ms"], 1e3 * pct(values, q), f"{key} {name}")
    if with_max: close(s[f"max_{name}_ms"], 1e3 * max(values) if values else 0.0, f"max {name}")

expect(len(reqs) == cfg["num_prompts"], f"{len(reqs)} records for {cfg['num_prompts']} prompts")
ok = [q for q in reqs if q["success"]]
bad = [q for q in reqs if not q["success"]]
expect(s["completed"] == len(ok) and s["failed"] == len(bad), "completed/failed counts disagree with the records")
expect(sum(f["count"] for f in s["failures"]) == len(bad), "failure reasons do not add up to the failures")
for q in bad:
    expect(q["error"] != "", f"request {q['index']} failed without a reason")
    expect("ttft_s" not in q, f"failed request {q['index']} has latencies")

ttft, e2e, tpot, itl = [], [], [], []
for q in ok:
    i = q["index"]
    expect(q["output_tokens"] == q["requested_output_len"],
           f"request {i}: {q['output_tokens']} tokens for max_tokens {q['requested_output_len']} with ignore_eos")
    times, toks = q["chunk_times_s"], q["chunk_tokens"]
    if cfg["backend"] == "grpc":
        expect(sum(toks) == q["output_tokens"], f"request {i}: streamed {sum(toks)} token ids, usage says {q['output_tokens']}")
    close(q["ttft_s"], times[0] - q["send_time_s"], f"request {i} ttft")
    close(q["e2e_s"], times[-1] - q["send_time_s"], f"request {i} e2e")
    expect(all(b >= a for a, b in zip(times, times[1:])), f"request {i}: chunk times go backwards")
    expect(0 < q["ttft_s"] <= q["e2e_s"], f"request {i}: ttft {q['ttft_s']} outside (0, e2e]")
    n = q["output_tokens"]
    if n > 1:
        close(q["tpot_s"], (q["e2e_s"] - q["ttft_s"]) / (n - 1), f"request {i} tpot")
        tpot.append(q["tpot_s"])
    else:
        expect(q["tpot_s"] is None, f"request {i}: one token but a TPOT")
    expect(len(q["itl_s"]) == sum(toks[1:]), f"request {i}: {len(q['itl_s'])} ITLs for {sum(toks[1:])} later tokens")
    close(sum(q["itl_s"]), q["e2e_s"] - q["ttft_s"], f"request {i}: ITLs sum", abs_=1e-6)
    ttft.append(q["ttft_s"]); e2e.append(q["e2e_s"]); itl += q["itl_s"]

if ok:
    check_dist("ttft", ttft); check_dist("e2e_latency", e2e); check_dist("tpot", tpot); check_dist("itl", itl, True)
    expect(s["tpot_count"] == len(tpot) and s["itl_count"] == len(itl), "TPOT/ITL sample counts")
    d = s["duration_s"]
    expect(d >= max(q["send_time_s"] + q["e2e_s"] for q in ok) - 1e-9, "duration shorter than the last request")
    out_tokens = sum(q["output_tokens"] for q in ok)
    in_tokens = sum(q["input_tokens"] for q in ok)
    expect(s["total_output_tokens"] == out_tokens and s["total_input_tokens"] == in_tokens, "token totals")
    close(s["request_throughput"], len(ok) / d, "request throughput")
    close(s["output_throughput"], out_tokens / d, "output throughput")
    close(s["input_throughput"], in_tokens / d, "input throughput")
    close(s["total_throughput"], (in_tokens + out_tokens) / d, "total throughput")
    close(s["concurrency"], sum(e2e) / d, "concurrency")

if mode == "exact":
    expect(not bad, f"{len(bad)} requests failed: {s['failures']}")
    expect(s["total_output_tokens"] == sum(q["requested_output_len"] for q in reqs), "output tokens != sum of max_tokens")
elif mode == "refused":
    expect(ok and bad, f"expected both successes and refusals, got {len(ok)} and {len(bad)}")
    for q in bad:
        expect(os.environ["CONTEXT"] in q["error"], f"request {q['index']}: reason does not name the context limit: {q['error']}")
elif mode == "cut":
    expect(bad, "no request failed although the server was killed")

if errors:
    print(f"{path} ({mode}):\n  " + "\n  ".join(errors[:20]), file=sys.stderr)
    sys.exit(1)
print(f"{path}: {mode} ok ({len(ok)} succeeded, {len(bad)} failed)")
PY
}

log "starting serve (embedded default model, CPU)"
start_server

for backend in grpc openai; do
  log "$backend: ignore_eos, every request returns max_tokens"
  bench "$backend" "$WORK/$backend.json" --num-prompts 8 --random-input-len 24 --random-output-len 12 \
    --random-range-ratio 0.25 --max-concurrency 4 --ignore-eos --warmup-requests 1
  check "$WORK/$backend.json" exact || die "$backend run"
done

log "openai: text prompts, Poisson arrivals"
bench openai "$WORK/text.json" --num-prompts 6 --prompt-format text --random-input-len 16 --random-output-len 6 \
  --request-rate 20 --ignore-eos --warmup-requests 0
python3 - "$WORK/text.json" <<'PY' || die "text prompts"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["summary"]["completed"] == 6, r["summary"]
assert all(q["output_tokens"] == q["requested_output_len"] for q in r["requests"]), "short outputs"
PY

log "grpc: --sweep over concurrencies (with a gnuplot PNG when gnuplot is installed)"
plot_args=()
command -v gnuplot >/dev/null && plot_args=(--plot "$WORK/sweep.png")
bench grpc "$WORK/sweep.json" --num-prompts 3 --random-input-len 8 --random-output-len 3 --random-range-ratio 1 \
  --ignore-eos --warmup-requests 0 --sweep 1,3 "${plot_args[@]}"
python3 - "$WORK/sweep.json" <<'PY' || die "sweep"
import json, sys
runs = json.load(open(sys.argv[1]))["sweep"]
assert [r["max_concurrency"] for r in runs] == [1, 3], runs
for r in runs:
    assert r["summary"]["completed"] == 3 and r["summary"]["total_output_tokens"] == 9, r["summary"]
# At concurrency 1 requests never overlap: each is sent after the previous one's last token.
reqs = sorted(runs[0]["requests"], key=lambda q: q["send_time_s"])
for a, b in zip(reqs, reqs[1:]):
    assert b["send_time_s"] >= a["send_time_s"] + a["e2e_s"], (a, b)
PY
if ((${#plot_args[@]})); then
  [[ $(head -c 4 "$WORK/sweep.png" | od -An -c | tr -d ' ') == '211PNG' ]] || die "--plot wrote no PNG"
fi

# Refusals: a JSONL workload mixing good requests, prompts beyond the context and max_tokens
# beyond it; the server must refuse the last two kinds (400 / INVALID_ARGUMENT naming the limit).
python3 - "$WORK/mixed.jsonl" "$CONTEXT" <<'PY'
import json, sys
path, ctx = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(3):
        f.write(json.dumps({"prompt": list(range(1000 + i, 1016 + i)), "output_len": 8}) + "\n")            # fits
        f.write(json.dumps({"prompt": list(range(2000, 2000 + ctx + 40)), "output_len": 4}) + "\n")         # prompt too long
        f.write(json.dumps({"prompt": list(range(3000 + i, 3010 + i)), "output_len": ctx + 100}) + "\n")    # max_tokens too many
PY
for backend in grpc openai; do
  log "$backend: refused requests are failures with reasons"
  bench "$backend" "$WORK/refused-$backend.json" --dataset jsonl --dataset-path "$WORK/mixed.jsonl" --num-prompts 9 \
    --ignore-eos --warmup-requests 0
  check "$WORK/refused-$backend.json" refused || die "$backend refusals"
  python3 - "$WORK/refused-$backend.json" <<'PY' || die "$backend refusal counts"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["summary"]["completed"] == 3 and r["summary"]["failed"] == 6, r["summary"]
PY
done

# A server killed mid-run: short requests finish first, then the server is killed while the long
# ones stream; those are counted as failures (cut mid-stream), the short ones stay exact.
python3 - "$WORK/killed.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(8):
        f.write(json.dumps({"prompt": list(range(1000 + 7 * i, 1016 + 7 * i)), "output_len": 2 if i < 4 else 200}) + "\n")
PY
finished_by_length() {
  curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" | sed -n 's/^deltaserve_requests_total{outcome="length"} \([0-9]*\).*/\1/p'
}
for backend in openai grpc; do
  log "$backend: server killed mid-run"
  out=$WORK/killed-$backend.json
  before=$(finished_by_length)
  [[ -n $before ]] || die "GET /metrics has no deltaserve_requests_total{outcome=\"length\"}"
  timeout 600 "$BIN" bench --backend "$backend" --host 127.0.0.1 --port "$(port_of "$backend")" --seed 7 \
    --dataset jsonl --dataset-path "$WORK/killed.jsonl" --num-prompts 8 --ignore-eos --warmup-requests 0 \
    --output-file "$out" >"$out.log" 2>&1 &
  bench_pid=$!
  for _ in $(seq 1 1200); do
    (($(finished_by_length) >= before + 4)) && break
    sleep 0.25
  done
  kill_server KILL
  rc=0
  wait "$bench_pid" || rc=$?
  ((rc == 0)) || { cat "$out.log" >&2; die "bench exited $rc after the server was killed"; }
  check "$out" cut || die "$backend killed server"
  python3 - "$out" <<'PY' || die "$backend killed server: outcomes"
import json, sys
reqs = json.load(open(sys.argv[1]))["requests"]
short, long_ = reqs[:4], reqs[4:]
assert all(q["success"] for q in short), [q["error"] for q in short]
assert not any(q["success"] for q in long_), "a 200-token request finished before the kill"
assert any(q["chunk_tokens"] for q in long_), "no long request was cut mid-stream"
print("killed:", sorted({q["error"] for q in long_}))
PY
  if [[ $backend == openai ]]; then
    dead_port=$HTTP_PORT
    start_server
  fi
done

log "bench against a dead server fails at once, naming the address"
if "$BIN" bench --backend openai --host 127.0.0.1 --port "$dead_port" --num-prompts 1 >"$WORK/dead.log" 2>&1; then
  die "bench against a dead port succeeded"
fi
grep -q "127.0.0.1:$dead_port" "$WORK/dead.log" || { cat "$WORK/dead.log" >&2; die "the error does not name the address"; }

log "PASS"
