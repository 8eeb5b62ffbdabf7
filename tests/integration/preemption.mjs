// With a KV cache too small for the running requests, the newest are preempted and recomputed
// later; each request's greedy text still equals its solo output, and every page and slot comes
// back.
import assert from 'node:assert/strict';
import { postJson, metrics, waitFor } from './common.mjs';

const model = process.env.MODEL || 'tiny';
const n = Number(process.env.REQUESTS || 4);
const prompts = Array.from({ length: n }, (_, i) => `Preemption case ${i}: the ${['red', 'green', 'blue', 'gold', 'grey', 'pink'][i % 6]} one`);
const request = (p) => postJson('/v1/completions', { model, prompt: p, max_tokens: 40, temperature: 0, ignore_eos: true });

const alone = [];
for (const p of prompts) {
  const r = await request(p);
  assert.equal(r.status, 200, r.text);
  alone.push(r.json.choices[0].text);
}
const before = (await metrics()).deltaserve_preemptions_total;
const together = await Promise.all(prompts.map(request));
const after = await metrics();
assert.ok(after.deltaserve_preemptions_total > before, 'the test needs the cache to run out (no preemption happened)');
for (const [i, r] of together.entries()) {
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].text, alone[i], `request ${i} changed under preemption`);
  assert.equal(r.json.usage.completion_tokens, 40);
}
await waitFor('every page and slot back', async () => {
  const m = await metrics();
  return m.deltaserve_kv_pages_used === 0 && m.deltaserve_gdn_slots_used === 0;
});
console.log(`  ok: ${n} requests, ${after.deltaserve_preemptions_total - before} preemptions, outputs equal solo, no leak`);
console.log('preemption: all passed');
