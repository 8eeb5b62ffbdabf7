// The whole server (front end + CPU workers, gRPC with token ids) reproduces Hugging Face
// transformers' greedy continuations recorded in tests/data/<fixture>/reference.safetensors.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { grpcClient, grpcGenerate } from './common.mjs';

// Minimal safetensors reader: 8-byte little-endian header length, JSON header, raw data.
function readSafetensors(file) {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const data = bytes.subarray(8 + headerLength);
  return (name) => {
    const t = header[name];
    assert.ok(t, `${file}: no tensor ${name}`);
    assert.equal(t.dtype, 'I32', `${name} must be I32`);
    const [begin, end] = t.data_offsets;
    return Array.from(new Int32Array(data.buffer.slice(data.byteOffset + begin, data.byteOffset + end)));
  };
}

const fixture = process.env.FIXTURE;
const tensor = readSafetensors(path.join(process.env.DELTASERVE_SOURCE_DIR, 'tests', 'data', fixture, 'reference.safetensors'));
const client = grpcClient();
for (let p = 0; p < 3; ++p) {
  const prompt = tensor(`prompt${p}.input_ids`);
  const expected = tensor(`prompt${p}.greedy_tokens`);
  const out = await grpcGenerate(client, {
    token_ids: { ids: prompt },
    sampling: { temperature: 0, max_tokens: expected.length, ignore_eos: true },
  });
  assert.equal(out.finished?.reason, 'FINISH_REASON_LENGTH', `prompt ${p}: finished ${JSON.stringify(out.finished)}`);
  assert.deepEqual(out.ids, expected, `${fixture} prompt ${p}: served greedy tokens differ from transformers'`);
  console.log(`  ok: ${fixture} prompt ${p}: ${expected.length} greedy tokens equal transformers'`);
}
client.close();
