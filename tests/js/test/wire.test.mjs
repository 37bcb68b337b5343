// The frame codec against hand-written CBOR (PROTOCOL.md "Frames", "Encoding").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '@automerge/automerge';
import { encodeFrame, decodeFrame, encodeRaw, FrameError } from '../src/wire.mjs';

const hex = (b) => Buffer.from(b).toString('hex');
const bytes = (h) => new Uint8Array(Buffer.from(h.replace(/\s/g, ''), 'hex'));

test('Hello encodes as flags 0x00, [1, {integer keys}] with minimal CBOR', () => {
  const f = encodeFrame({ type: 'Hello', versions: [1], compression: [0], profile: { class: 2, metered: false, realtime: true }, client: 'js', features: [1] });
  //       flags array(2) type map(5) 0:[1]  1:[0]  2:{0:2,   4:false 5:true} 3:"js"    4:[1]
  assert.equal(hex(f), '00' + '82' + '01' + 'a5' + '008101' + '018100' + '02a3' + '0002' + '04f4' + '05f5' + '03626a73' + '048101');
});

test('byte strings are untagged (major type 2) and large integers stay integers (major type 0)', () => {
  const f = encodeFrame({ type: 'Sync', items: [{ doc: 'todos/a', message: new Uint8Array([1, 2, 3]) }] });
  assert.equal(hex(f), '00' + '8206' + 'a1' + '00' + '81' + 'a2' + '00' + '67' + hex(Buffer.from('todos/a')) + '01' + '43010203');
  const p = encodeFrame({ type: 'UpdateProfile', profile: { class: 0, storage_budget_bytes: 2 ** 40, metered: true, realtime: false } });
  assert.equal(hex(p), '00' + '8208' + 'a1' + '00' + 'a4' + '0000' + '011b0000010000000000' + '04f5' + '05f4');
});

test('heads travel as sorted 32-byte strings and come back as hex', () => {
  const doc = A.change(A.init({ actor: '00112233445566778899aabbccddeeff' }), (d) => { d.x = 1; });
  assert.equal(A.getActorId(doc), '00112233445566778899aabbccddeeff');   // actor id = device id
  const h = A.getHeads(doc);
  const back = decodeFrame(encodeFrame({ type: 'Ack', items: [{ doc: 'todos/a', heads: h }] }));
  assert.deepEqual(back, { type: 'Ack', items: [{ doc: 'todos/a', heads: h }] });
  // "Encoding": a receiver sorts heads and drops duplicates.
  const [a, b] = ['11'.repeat(32), '22'.repeat(32)];
  const ack = decodeFrame(encodeRaw([7, new Map([[0, [new Map([[0, 'todos/a'], [1, [b, a, b].map(bytes)]])]]])]));
  assert.deepEqual(ack.items[0].heads, [a, b]);
});

test('64-bit integers, closed enumerations, unknown reasons, any valid form', () => {
  // Error{code 1, message "", retry_after_ms 2^64-1}: kept exactly, as a BigInt.
  const big = decodeFrame(bytes('00 820c a3 0001 0160 02 1bffffffffffffffff'));
  assert.equal(big.retry_after_ms, 2n ** 64n - 1n);
  assert.equal(hex(encodeFrame({ type: 'Fetch', docs: [] })), '00820aa10080');
  // A longer form than needed (1 as 0x1b..., keys too) and an indefinite-length map are accepted.
  assert.deepEqual(decodeFrame(bytes('00 82 0d bf 1b0000000000000000 1b0000000000000001 ff')), { type: 'PlanDone', plan: 1 });
  // A duplicated key keeps its last value.
  assert.deepEqual(decodeFrame(bytes('00 820d a2 0001 0002')), { type: 'PlanDone', plan: 2 });
  const entry = (reason, priority = 1) => new Map([[0, 'todos/a'], [1, priority], [2, 7], [3, reason]]);
  const plan = (e) => encodeRaw([5, new Map([[0, []], [1, [e]], [2, []]])]);
  assert.equal(decodeFrame(plan(entry(9))).deferred[0].reason, undefined);   // unknown reason: absent
  assert.equal(decodeFrame(plan(entry(2))).deferred[0].reason, 2);
  assert.throws(() => decodeFrame(plan(entry(0, 4))), /priority/);            // priority 4: malformed
  assert.throws(() => encodeFrame({ type: 'Subscribe', collections: [{ collection: 'todos', priority: 1, mode: 5 }] }), /mode/);
});

test('decoding: unknown keys ignored, null is absent, required fields and integer keys enforced', () => {
  // "Encoding": unknown keys are skipped whatever their value; null counts as absent.
  const err = (m) => encodeRaw([12, m]);
  assert.deepEqual(decodeFrame(err(new Map([[0, 5], [1, 'no'], [3, null], [99, 'future']]))), { type: 'Error', code: 5, message: 'no' });
  assert.throws(() => decodeFrame(err(new Map([[0, 5]]))), /missing field message/);
  assert.throws(() => decodeFrame(err(new Map([['code', 5], [0, 5], [1, 'x']]))), /not an unsigned integer/);
  assert.throws(() => decodeFrame(bytes('01 8201a0')), /flags/);                       // we offered no zstd
  assert.throws(() => decodeFrame(bytes('00 8201a0 00')), FrameError);                  // trailing bytes
  assert.deepEqual(decodeFrame(bytes('00 8218 63 a0')), { type: 99, unknown: true });   // unknown type 99
  assert.deepEqual(decodeFrame(bytes('00 8218 63 f6')), { type: 99, unknown: true });   // ... ignored whatever it holds
  assert.throws(() => encodeFrame({ type: 'Fetch', docs: ['Todos/x'] }), /document id/); // identifiers
});
