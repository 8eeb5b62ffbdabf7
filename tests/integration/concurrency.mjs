// Load: N concurrent streaming clients all complete, and under C concurrent greedy requests each
// request's text equals what it gets alone.
import assert from 'node:assert/strict';
import { sse, postJson, metrics, waitFor, grpcClient, grpcGenerate } from './common.mjs';

const model = process.env.MODEL || 'tiny';
const streams = Number(process.env.STREAMS || 1000);
const greedyConcurrency = Number(process.env.GREEDY || 256);
const grpcStreams = Number(process.env.GRPC_STREAMS || 256);
// Solo runs are slow on a CPU host, so the 256 concurrent requests are copies of GREEDY_DISTINCT
// prompts, each compared with its prompt's solo output: copies land in different batch slots.
const distinct = Math.min(greedyConcurrency, Number(process.env.GREEDY_DISTINCT || 32));

// ---- N concurrent streams ----
let t0 = Date.now();
const results = await Promise.all(Array.from({ length: streams }, (_, i) =>
  sse('/v1/completions', { model, prompt: `Request ${i}: tell me about ${i % 17} things`, max_tokens: 4, temperature: 0.8, seed: i, ignore_eos: true, stream: true })));
for (const [i, r] of results.entries()) {
  assert.equal(r.status, 200, `stream ${i}: HTTP ${r.status} ${r.raw.slice(0, 200)}`);
  assert.ok(r.done, `stream ${i}: no [DONE]`);
  const last = r.events.at(-1);
  assert.equal(last.choices[0].finish_reason, 'length', `stream ${i}: ${JSON.stringify(last)}`);
}
console.log(`  ok: ${streams} concurrent streams completed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

// ---- gRPC: concurrent Generate streams on the callback API ----
t0 = Date.now();
const g = grpcClient();
const grpcResults = await Promise.all(Array.from({ length: grpcStreams }, (_, i) =>
  grpcGenerate(g, { text: `gRPC request ${i}`, sampling: { temperature: 0.7, seed: i, max_tokens: 4, ignore_eos: true } })));
for (const [i, r] of grpcResults.entries()) {
  assert.equal(r.finished?.reason, 'FINISH_REASON_LENGTH', `gRPC stream ${i}: ${JSON.stringify(r.finished)}`);
  assert.equal(r.ids.length, 4);
}
g.close();
console.log(`  ok: ${grpcStreams} concurrent gRPC streams completed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

// ---- greedy: concurrent == alone ----
const prompts = Array.from({ length: distinct }, (_, i) => `Prompt ${i}. ${'abcdefghij'.slice(0, 1 + (i % 10))} The story of number ${i * 7919} begins`);
const request = (p) => postJson('/v1/completions', { model, prompt: p, max_tokens: 12, temperature: 0, ignore_eos: true });
t0 = Date.now();
const alone = [];
for (const p of prompts) {
  const r = await request(p);
  assert.equal(r.status, 200, r.text);
  alone.push(r.json.choices[0].text);
}
console.log(`  ok: ${prompts.length} distinct greedy prompts run one at a time in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
t0 = Date.now();
const together = await Promise.all(Array.from({ length: greedyConcurrency }, (_, i) => request(prompts[i % distinct])));
let mismatches = 0;
for (const [i, r] of together.entries()) {
  assert.equal(r.status, 200, r.text);
  if (r.json.choices[0].text !== alone[i % distinct]) {
    mismatches += 1;
    if (mismatches <= 5) console.log(`  MISMATCH ${i}: alone ${JSON.stringify(alone[i % distinct])} vs concurrent ${JSON.stringify(r.json.choices[0].text)}`);
  }
}
assert.equal(mismatches, 0, `${mismatches} of ${greedyConcurrency} concurrent greedy outputs differ from their solo output`);
console.log(`  ok: ${greedyConcurrency} concurrent greedy requests equal their solo outputs (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

await waitFor('an idle server', async () => {
  const m = await metrics();
  return m.deltaserve_gdn_slots_used === 0 && m.deltaserve_kv_pages_used === 0;
});
console.log('concurrency: all passed');
