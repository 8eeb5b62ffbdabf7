// SIGTERM under load (driven by deploy_sigterm_test.sh): N streaming completions are in flight
// when this script sends SIGTERM to the server. Half are short (they can finish within
// --shutdown-timeout), half are long (they cannot). Every stream must end either completed
// (finish_reason + [DONE]) or with an error event that says the server is shutting down; a
// request sent after SIGTERM must not be admitted: not on a new connection (refused, or 503), not
// on a kept-alive HTTP connection (503), not over gRPC (UNAVAILABLE).
// Usage: BASE_URL=... GRPC_PORT=... node deploy_sigterm.mjs SERVER_PID [N]
// Prints "sigterm_at_ms <epoch ms>" when the signal is sent and a JSON summary at the end.
import http from "node:http";
import grpc from "@grpc/grpc-js";
import { baseURL as baseUrl, grpcClient, grpcGenerate } from "./common.mjs";

const [serverPidText, countText = "32"] = process.argv.slice(2);
const serverPid = Number(serverPidText);
const count = Number(countText);
// Short streams get SIGTERM a few steps before their end (a step of 32 sequences on 2 busy cores
// can take seconds, so "a few steps" is what --shutdown-timeout must cover); long ones cannot end.
const SHORT_TOKENS = 8;
const LONG_TOKENS = 4000;
const SIGNAL_AT_SHORT_CHUNKS = 5;  // text chunks seen (a token can produce none: partial UTF-8)

function die(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

// One streaming completion; resolves with how it ended, never rejects.
function stream(index, maxTokens, state) {
  const body = JSON.stringify({
    prompt: `Request ${index}: tell a long story about the sea.`,
    max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true,
  });
  return new Promise((resolve) => {
    const req = http.request(`${baseUrl}/v1/completions`, {
      method: "POST", agent: false, headers: { "content-type": "application/json" },
    }, (res) => {
      state.status = res.statusCode;
      let buffer = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 2);
          if (!event.startsWith("data: ")) continue;
          const data = event.slice(6);
          if (data === "[DONE]") { state.done = true; continue; }
          const message = JSON.parse(data);
          if (message.error) { state.error = message.error.message; continue; }
          const choice = message.choices?.[0];
          if (choice?.text) state.chunks += 1;
          if (choice?.finish_reason) { state.finish = choice.finish_reason; state.finishedAt = Date.now(); }
        }
      });
      res.on("end", () => resolve(state));
      res.on("error", (e) => { state.transport = e.message; resolve(state); });
    });
    req.on("error", (e) => { state.transport = e.message; resolve(state); });
    req.end(body);
  });
}

// A one-token completion through `agent` (false: a fresh connection): {status} or {error}.
function smallRequest(agent) {
  return new Promise((resolve) => {
    const req = http.request(`${baseUrl}/v1/completions`, {
      method: "POST", agent, headers: { "content-type": "application/json" },
    }, (res) => { res.resume(); res.on("end", () => resolve({ status: res.statusCode })); });
    req.on("error", (e) => resolve({ error: e.code ?? e.message }));
    req.end(JSON.stringify({ prompt: "late", max_tokens: 1 }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A client that already holds a kept-alive connection, and a gRPC client with its channel open.
const keptAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
const warm = await smallRequest(keptAlive);
if (warm.status !== 200) die(`a request before SIGTERM failed: ${JSON.stringify(warm)}`);
const grpcLate = grpcClient();
await new Promise((resolve, reject) => grpcLate.waitForReady(Date.now() + 10_000, (e) => (e ? reject(e) : resolve())));

const states = Array.from({ length: count }, (_, i) => ({ index: i, short: i % 2 === 0, chunks: 0 }));
const finished = states.map((s) => stream(s.index, s.short ? SHORT_TOKENS : LONG_TOKENS, s));

const deadline = Date.now() + 120_000;
while (!(states.every((s) => s.chunks > 0) &&
         states.some((s) => s.short && (s.chunks >= SIGNAL_AT_SHORT_CHUNKS || s.finish)))) {
  if (Date.now() > deadline) die(`streams not under way after 120 s: ${JSON.stringify(states.map((s) => s.chunks))}`);
  const ended = states.find((s) => s.error || s.transport || (!s.short && s.finish));
  if (ended) die(`a stream ended before SIGTERM: ${JSON.stringify(ended)}`);
  await sleep(20);
}
const sigtermAt = Date.now();
process.kill(serverPid, "SIGTERM");
console.log(`sigterm_at_ms ${sigtermAt}`);

await sleep(300);
const late = {
  new_connection: await smallRequest(false),
  kept_alive_connection: await smallRequest(keptAlive),
  grpc: await grpcGenerate(grpcLate, { text: "late", sampling: { max_tokens: 1 } }).then(
    (out) => ({ finished: out.finished?.reason }), (e) => ({ code: grpc.status[e.code], details: e.details })),
};

const results = await Promise.all(finished);
const completed = results.filter((s) => s.done && s.finish && !s.error && !s.transport);
const told = results.filter((s) => s.done && !s.finish && /shutting down/i.test(s.error ?? ""));
const bad = results.filter((s) => !completed.includes(s) && !told.includes(s));
if (bad.length) die(`${bad.length} stream(s) ended without completing or being told why: ${JSON.stringify(bad.slice(0, 3))}`);
const completedAfterSignal = completed.filter((s) => s.finishedAt > sigtermAt);
if (!completedAfterSignal.some((s) => s.short)) die("no short request completed during the drain (in-flight work was not let finish)");
if (!told.length) die("no long request was aborted at the shutdown timeout");
if (told.some((s) => s.short)) die("a short request was aborted though it could finish within --shutdown-timeout");
console.log(JSON.stringify({
  streams: results.length, completed: completed.length, completed_after_sigterm: completedAfterSignal.length,
  aborted_with_reason: told.length, reason: told[0].error, after_sigterm: late,
}));

const notAdmitted = [
  late.new_connection.error === "ECONNREFUSED" || late.new_connection.status === 503,
  late.kept_alive_connection.status === 503 || late.kept_alive_connection.error !== undefined,
  late.grpc.code === "UNAVAILABLE",
];
if (!notAdmitted.every(Boolean)) die(`new requests were admitted after SIGTERM: ${JSON.stringify(late)}`);
