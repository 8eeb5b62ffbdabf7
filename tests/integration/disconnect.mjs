// A client that disconnects mid-stream aborts its request: its GDN slot and KV pages come back
// (seen in /metrics), and the abort is counted.
import assert from 'node:assert/strict';
import { sse, metrics, waitFor } from './common.mjs';

const model = process.env.MODEL || 'tiny';
const before = await metrics();
assert.equal(before.deltaserve_gdn_slots_used, 0, 'slots in use before the test');
assert.equal(before.deltaserve_kv_pages_used, 0, 'pages in use before the test');

for (const route of ['/v1/completions', '/v1/chat/completions']) {
  const controller = new AbortController();
  let tokens = 0;
  let sawUsage = false;
  const body = route === '/v1/completions'
    ? { model, prompt: 'Count forever:', max_tokens: 4000, temperature: 0, ignore_eos: true, stream: true }
    : { model, messages: [{ role: 'user', content: 'Count forever' }], max_tokens: 4000, temperature: 0, ignore_eos: true, stream: true };
  const done = sse(route, body, {
    signal: controller.signal,
    onEvent: async () => {
      tokens += 1;
      if (tokens === 3) {
        const during = await metrics();
        sawUsage = during.deltaserve_gdn_slots_used >= 1 && during.deltaserve_kv_pages_used >= 1;
        controller.abort();
      }
    },
  }).catch((e) => e);
  const result = await done;
  assert.equal(result.name, 'AbortError', `the stream ended without the client aborting: ${JSON.stringify(result).slice(0, 200)}`);
  assert.ok(sawUsage, 'no slot or page was in use while streaming');
  const after = await waitFor('slots and pages to come back', async () => {
    const m = await metrics();
    return m.deltaserve_gdn_slots_used === 0 && m.deltaserve_kv_pages_used === 0 && m.deltaserve_running_requests === 0 ? m : null;
  });
  console.log(`  ok: ${route}: disconnect after ${tokens} events freed everything (aborts counted: ${after['deltaserve_requests_total{outcome="abort"}']})`);
}
const end = await metrics();
assert.ok(end['deltaserve_requests_total{outcome="abort"}'] >= before['deltaserve_requests_total{outcome="abort"}'] + 2, 'aborts not counted');
console.log('disconnect: all passed');
