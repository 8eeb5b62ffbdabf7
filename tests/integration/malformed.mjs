// Malformed and refused requests get their status and OpenAI error body, and the server carries on.
import assert from 'node:assert/strict';
import { baseURL, openai, postJson } from './common.mjs';

const model = process.env.MODEL || 'tiny';
const step = (name) => console.log(`  ok: ${name}`);

async function expectError(route, body, status, { param, match, code } = {}) {
  const res = await postJson(route, body);
  assert.equal(res.status, status, `${route} ${typeof body === 'string' ? body.slice(0, 80) : JSON.stringify(body).slice(0, 80)} -> ${res.status} ${res.text.slice(0, 200)}`);
  assert.ok(res.json && res.json.error, `no OpenAI error body: ${res.text.slice(0, 200)}`);
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in res.json.error, `error.${k} missing`);
  if (param !== undefined) assert.equal(res.json.error.param, param);
  if (code !== undefined) assert.equal(res.json.error.code, code);
  if (match) assert.match(res.json.error.message, match);
  return res.json.error;
}

await expectError('/v1/completions', '{"model": "tiny", "prompt": ', 400, { match: /JSON/ });
step('bad JSON -> 400');
await expectError('/v1/completions', { model, prompt: 'hi', max_tokens: 'ten' }, 400, { param: 'max_tokens', match: /integer/ });
await expectError('/v1/completions', { model, prompt: 42 }, 400, { param: 'prompt' });
await expectError('/v1/chat/completions', { model, messages: 'hello' }, 400, { param: 'messages' });
await expectError('/v1/completions', { model, prompt: 'hi', temperature: -1 }, 400, { param: 'temperature' });
await expectError('/v1/completions', { model, prompt: 'hi', stream: 'yes' }, 400, { param: 'stream' });
step('wrong types and ranges -> 400 naming the field');
const ctx = (await (await fetch(`${baseURL}/v1/models`)).json()).data[0].max_model_len;
await expectError('/v1/completions', { model, prompt: new Array(ctx + 10).fill(100) }, 400, { code: 'context_length_exceeded', match: new RegExp(`maximum context length is ${ctx} tokens`) });
await expectError('/v1/completions', { model, prompt: 'hi', max_tokens: ctx }, 400, { code: 'context_length_exceeded' });
step(`oversize prompt -> 400 naming the limit (${ctx})`);
await expectError('/v1/completions', { model: 'gpt-4o', prompt: 'hi' }, 404, { code: 'model_not_found', param: 'model' });
await expectError('/v1/chat/completions', { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }, 404, { code: 'model_not_found' });
step('unknown model -> 404');
await expectError('/v1/completions', { model, prompt: 'hi', n: 2 }, 400, { param: 'n', match: /n must be 1/ });
await expectError('/v1/chat/completions', { model, messages: [{ role: 'user', content: 'x' }], n: 3 }, 400, { param: 'n' });
step('n > 1 -> 400');
await expectError('/v1/chat/completions', { model, messages: [{ role: 'wizard', content: 'x' }] }, 400, {});
await expectError('/v1/completions', { model, prompt: ['a', 'b'] }, 400, { match: /batched prompts/ });
await expectError('/v1/completions', { model }, 400, { param: 'prompt' });
await expectError('/v1/nothing-here', {}, 404, {});
step('other refusals');

// No request can make the server read a file: paths are just text to the tokenizer.
const sneaky = await postJson('/v1/completions', { model: '/etc/passwd', prompt: 'x' });
assert.equal(sneaky.status, 404);
const sneakyTok = await postJson('/generate', { text: 'x', sampling_params: { max_new_tokens: 1 }, tokenizer: '/etc/passwd', model_dir: '/' });
assert.equal(sneakyTok.status, 200);
assert.ok(!sneakyTok.text.includes('root:'));
step('paths are never opened');

// The server carries on: a normal request still works.
const ok = await openai().completions.create({ model, prompt: 'still alive?', max_tokens: 4, temperature: 0 });
assert.ok(ok.choices[0].finish_reason);
const health = await fetch(`${baseURL}/health`);
assert.equal(health.status, 200);
step('server still healthy and serving');
console.log('malformed requests: all passed');
