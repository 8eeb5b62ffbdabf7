// The official OpenAI npm client and a grpc-js client against a running server: completions and
// chat, streamed and not; greedy text equal across HTTP, native /generate and gRPC; logprobs,
// stop strings, usage, model and server info, gRPC Abort and errors.
import assert from 'node:assert/strict';
import { openai, grpcClient, grpcGenerate, unary, postJson, sse, completionText } from './common.mjs';

const model = process.env.MODEL || 'tiny';
const client = openai();
const grpcc = grpcClient();
const prompt = 'The quick brown fox jumps over the lazy dog. Once upon a time';
const greedy = { temperature: 0, max_tokens: 24, ignore_eos: true };
const step = (name) => console.log(`  ok: ${name}`);

// ---- /v1/models ----
const models = await client.models.list();
assert.equal(models.data[0].id, model);
step('models.list');

// ---- completions ----
const plain = await client.completions.create({ model, prompt, ...greedy });
assert.equal(plain.object, 'text_completion');
assert.equal(plain.choices.length, 1);
assert.equal(typeof plain.choices[0].text, 'string');
assert.equal(plain.choices[0].finish_reason, 'length');
assert.equal(plain.usage.completion_tokens, 24);
assert.ok(plain.usage.prompt_tokens > 5);
assert.equal(plain.usage.total_tokens, plain.usage.prompt_tokens + 24);
const reference = plain.choices[0].text;
assert.ok(reference.length > 0, 'greedy text is empty');
step(`completions (non-stream): ${JSON.stringify(reference.slice(0, 60))}`);

const again = await client.completions.create({ model, prompt, ...greedy });
assert.equal(again.choices[0].text, reference, 'greedy is not deterministic');

let streamed = '', finish = null, usage = null, chunks = 0;
for await (const chunk of await client.completions.create({ model, prompt, ...greedy, stream: true, stream_options: { include_usage: true } })) {
  if (chunk.usage) usage = chunk.usage;
  if (!chunk.choices.length) continue;
  chunks += 1;
  streamed += chunk.choices[0].text;
  if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
}
assert.equal(streamed, reference);
assert.equal(finish, 'length');
assert.ok(chunks >= 2, `only ${chunks} chunks`);
assert.deepEqual(usage, plain.usage);
step(`completions (stream, ${chunks} chunks, include_usage)`);

// ---- chat ----
const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name three colours.' }];
const chat = await client.chat.completions.create({ model, messages, ...greedy });
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices[0].message.role, 'assistant');
assert.equal(chat.choices[0].finish_reason, 'length');
assert.equal(chat.usage.completion_tokens, 24);
let chatStreamed = '', role = null, chatFinish = null, chatUsage = null;
for await (const chunk of await client.chat.completions.create({ model, messages, ...greedy, stream: true, stream_options: { include_usage: true } })) {
  if (chunk.usage) chatUsage = chunk.usage;
  if (!chunk.choices.length) continue;
  assert.equal(chunk.object, 'chat.completion.chunk');
  if (chunk.choices[0].delta.role) role = chunk.choices[0].delta.role;
  chatStreamed += chunk.choices[0].delta.content ?? '';
  if (chunk.choices[0].finish_reason) chatFinish = chunk.choices[0].finish_reason;
}
assert.equal(role, 'assistant');
assert.equal(chatStreamed, chat.choices[0].message.content);
assert.equal(chatFinish, 'length');
assert.deepEqual(chatUsage, chat.usage);
step('chat.completions (stream and not)');

// ---- logprobs ----
const withLogprobs = await client.completions.create({ model, prompt, ...greedy, logprobs: 1 });
assert.equal(withLogprobs.choices[0].text, reference);
const lp = withLogprobs.choices[0].logprobs;
assert.equal(lp.token_logprobs.length, 24);
assert.ok(lp.token_logprobs.every((x) => x <= 0 && Number.isFinite(x)), 'logprobs must be finite and <= 0');
const chatLp = await client.chat.completions.create({ model, messages, ...greedy, logprobs: true });
assert.equal(chatLp.choices[0].logprobs.content.length, 24);
step('logprobs');

// ---- stop strings ----
const cut = [...reference].slice(4, 7).join('');
if (cut.trim().length > 0) {
  const stopped = await client.completions.create({ model, prompt, ...greedy, stop: [cut] });
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  assert.equal(stopped.choices[0].text, reference.slice(0, reference.indexOf(cut)));
  let s = '';
  for await (const chunk of await client.completions.create({ model, prompt, ...greedy, stop: [cut], stream: true })) s += chunk.choices[0]?.text ?? '';
  assert.equal(s, stopped.choices[0].text);
  step(`stop string ${JSON.stringify(cut)}`);
}

// ---- native /generate (plain and streamed) ----
const native = await postJson('/generate', { text: prompt, sampling_params: { temperature: 0, max_new_tokens: 24, ignore_eos: true } });
assert.equal(native.status, 200, native.text);
assert.equal(native.json.text, reference);
assert.equal(native.json.output_ids.length, 24);
const nativeStream = await sse('/generate', { text: prompt, stream: true, sampling_params: { temperature: 0, max_new_tokens: 24, ignore_eos: true } });
assert.equal(nativeStream.events.map((e) => e.text).join(''), reference);
assert.ok(nativeStream.done);
step('native /generate');

// ---- gRPC ----
const health = await unary(grpcc, 'Health', {});
assert.equal(health.healthy, true);
const info = await unary(grpcc, 'GetModelInfo', {});
assert.equal(info.model_id, model);
assert.ok(info.max_context_length > 0 && info.vocab_size > 0 && info.eos_token_ids.length > 0);
const server = await unary(grpcc, 'GetServerInfo', {});
assert.ok(server.tensor_parallel_size >= 1 && server.kv_pages_total > 0 && server.gdn_slots_total > 0);
const g = await grpcGenerate(grpcc, { text: prompt, sampling: { temperature: 0, max_tokens: 24, ignore_eos: true, logprobs: true } });
assert.equal(g.text, reference, 'gRPC greedy text differs from HTTP');
assert.deepEqual(g.ids, native.json.output_ids);
assert.equal(g.logprobs.length, 24);
assert.equal(g.finished.reason, 'FINISH_REASON_LENGTH');
assert.equal(g.finished.usage.completion_tokens, 24);
const byIds = await grpcGenerate(grpcc, { token_ids: { ids: [] }, sampling: {} }).catch((e) => e);
assert.equal(byIds.code, 3, 'an empty token_ids prompt must be INVALID_ARGUMENT');
step(`gRPC Generate (${g.messages} messages), Health, GetModelInfo, GetServerInfo`);

const unknown = await grpcGenerate(grpcc, { text: 'x', model: 'no-such-model' }).catch((e) => e);
assert.equal(unknown.code, 5, 'unknown model must be NOT_FOUND');
const tooLong = await grpcGenerate(grpcc, { text: 'x', sampling: { max_tokens: 100_000_000 } }).catch((e) => e);
assert.equal(tooLong.code, 3);
assert.match(tooLong.details, /maximum context length/);
step('gRPC errors (NOT_FOUND, INVALID_ARGUMENT)');

// gRPC Abort of a long request by its id.
let aborted = false;
const long = await grpcGenerate(grpcc, { request_id: 'abort-me', text: prompt, sampling: { temperature: 0, max_tokens: 2000, ignore_eos: true } },
  undefined, (m) => {
    if (!aborted && m.token_ids.length) {
      aborted = true;
      unary(grpcc, 'Abort', { request_id: 'abort-me' }).then((r) => assert.equal(r.found, true));
    }
  });
assert.equal(long.finished.reason, 'FINISH_REASON_ABORT');
assert.ok(long.ids.length < 2000);
const notFound = await unary(grpcc, 'Abort', { request_id: 'abort-me' });
assert.equal(notFound.found, false);
step(`gRPC Abort after ${long.ids.length} tokens`);

// ---- completions text equals chat for the same token prompt (prompt as token ids) ----
const ids = native.json.output_ids.slice(0, 8);
const fromIds = await client.completions.create({ model, prompt: ids, ...greedy });
const gFromIds = await grpcGenerate(grpcc, { token_ids: { ids }, sampling: { temperature: 0, max_tokens: 24, ignore_eos: true } });
assert.equal(fromIds.choices[0].text, gFromIds.text);
step('token-id prompts agree across HTTP and gRPC');

grpcc.close();
console.log('api clients: all passed');
