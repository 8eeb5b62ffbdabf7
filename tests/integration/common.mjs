// Helpers shared by the integration clients: the official OpenAI client, a grpc-js client of
// proto/deltaserve.proto, and a minimal SSE reader over fetch.
import http from 'node:http';
import path from 'node:path';
import OpenAI from 'openai';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

export const baseURL = process.env.BASE_URL;
export const grpcPort = process.env.GRPC_PORT;
export const apiKey = process.env.API_KEY || '';
if (!baseURL || !grpcPort) throw new Error('set BASE_URL and GRPC_PORT');

export function openai(key = apiKey || 'unused') {
  return new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: key, maxRetries: 0, timeout: 600_000 });
}

export function grpcClient() {
  const def = protoLoader.loadSync(path.join(process.env.DELTASERVE_SOURCE_DIR, 'proto', 'deltaserve.proto'), {
    keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def).deltaserve.v1;
  return new pkg.Generation(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 64 << 20,
  });
}

export function metadata(key = apiKey) {
  const md = new grpc.Metadata();
  if (key) md.set('authorization', `Bearer ${key}`);
  return md;
}

export function unary(client, method, request, md = metadata()) {
  return new Promise((resolve, reject) => client[method](request, md, (err, res) => (err ? reject(err) : resolve(res))));
}

// Collects a Generate stream: {text, ids, logprobs, finished, messages}.
export function grpcGenerate(client, request, md = metadata(), onMessage = () => {}) {
  return new Promise((resolve, reject) => {
    const out = { text: '', ids: [], logprobs: [], finished: null, messages: 0 };
    const call = client.Generate(request, md);
    call.on('data', (m) => {
      out.messages += 1;
      out.text += m.text;
      out.ids.push(...m.token_ids);
      out.logprobs.push(...m.logprobs);
      if (m.finished) out.finished = m.finished;
      onMessage(m, call);
    });
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

// Requests go through node:http, which has no body or header timeouts: on a loaded CPU host a
// queued request can wait minutes for its first token (fetch would give up after 300 s).
function authHeaders(headers) {
  return { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}), ...headers };
}

function request(method, route, payload, { signal, headers = {}, onData } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(route, baseURL), { method, signal, headers: authHeaders(headers) }, (res) => {
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (chunk) => {
        if (onData && res.statusCode === 200) onData(chunk);
        else text += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

// POSTs JSON and reads the SSE stream; returns {status, events (parsed JSON), done, raw}.
export async function sse(route, body, { signal, onEvent = () => {}, headers = {} } = {}) {
  const out = { status: 0, events: [], done: false, raw: '' };
  let buffer = '';
  const res = await request('POST', route, JSON.stringify(body), {
    signal, headers,
    onData: (chunk) => {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!event.startsWith('data: ')) throw new Error(`not an SSE data event: ${event}`);
        const data = event.slice(6);
        if (data === '[DONE]') { out.done = true; continue; }
        const parsed = JSON.parse(data);
        out.events.push(parsed);
        onEvent(parsed);
      }
    },
  });
  out.status = res.status;
  out.raw = res.text;
  return out;
}

export async function postJson(route, body, headers = {}) {
  const res = await request('POST', route, typeof body === 'string' ? body : JSON.stringify(body), { headers });
  let json = null;
  try { json = JSON.parse(res.text); } catch { /* not JSON */ }
  return { status: res.status, json, text: res.text };
}

export async function metrics() {
  const res = await fetch(`${baseURL}/metrics`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
  const values = {};
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return values;
}

export async function waitFor(what, predicate, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function completionText(events) {
  return events.filter((e) => e.choices && e.choices.length).map((e) => e.choices[0].text ?? e.choices[0].delta?.content ?? '').join('');
}
