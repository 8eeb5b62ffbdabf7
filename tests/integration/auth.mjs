// --api-key: HTTP needs "Authorization: Bearer KEY" (401 otherwise), gRPC the same metadata
// (UNAUTHENTICATED otherwise); /health stays open for probes.
import assert from 'node:assert/strict';
import { baseURL, apiKey, openai, grpcClient, grpcGenerate, unary, metadata } from './common.mjs';

assert.ok(apiKey, 'set API_KEY');
const model = process.env.MODEL || 'tiny';
for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: apiKey }]) {
  const res = await fetch(`${baseURL}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ model, prompt: 'x' }) });
  assert.equal(res.status, 401, JSON.stringify(headers));
  const body = await res.json();
  assert.equal(body.error.code, 'invalid_api_key');
}
for (const route of ['/v1/models', '/metrics']) assert.equal((await fetch(`${baseURL}${route}`)).status, 401, route);
assert.equal((await fetch(`${baseURL}/health`)).status, 200);
const wrongClient = await openai('wrong').completions.create({ model, prompt: 'x', max_tokens: 2 }).catch((e) => e);
assert.equal(wrongClient.status, 401);
const ok = await openai(apiKey).completions.create({ model, prompt: 'x', max_tokens: 2 });
assert.equal(ok.choices.length, 1);
console.log('  ok: HTTP 401 without the key, 200 with it');

const g = grpcClient();
const refused = await grpcGenerate(g, { text: 'x' }, metadata('')).catch((e) => e);
assert.equal(refused.code, 16, 'UNAUTHENTICATED expected');
const refusedWrong = await unary(g, 'GetModelInfo', {}, metadata('wrong')).catch((e) => e);
assert.equal(refusedWrong.code, 16);
const fine = await grpcGenerate(g, { text: 'x', sampling: { max_tokens: 2 } }, metadata(apiKey));
assert.equal(fine.finished.usage.completion_tokens <= 2, true);
g.close();
console.log('  ok: gRPC UNAUTHENTICATED without the key, OK with it');
console.log('auth: all passed');
