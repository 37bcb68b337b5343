// The frame codec against hand-written CBOR (PROTOCOL.md "Frames", addendum "Encoding rules").
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
  // Unsorted heads from a peer are malformed.
  const [a, b] = ['11'.repeat(32), '22'.repeat(32)].map((x) => bytes(x));
  assert.throws(() => decodeFrame(encodeRaw([7, new Map([[0, [new Map([[0, 'todos/a'], [1, [b, a]]])]]])])), FrameError);
});

test('decoding: unknown keys ignored, null is absent, required fields and integer keys enforced', () => {
  const err = (m) => encodeRaw([12, m]);
  assert.deepEqual(decodeFrame(err(new Map([[0, 5], [1, 'no'], [3, null], [99, 'future']]))), { type: 'Error', code: 5, message: 'no' });
  assert.throws(() => decodeFrame(err(new Map([[0, 5]]))), /missing field message/);
  assert.throws(() => decodeFrame(err(new Map([['code', 5], [0, 5], [1, 'x']]))), /not an unsigned integer/);
  assert.throws(() => decodeFrame(bytes('01 8201a0')), /flags/);                       // we offered no zstd
  assert.throws(() => decodeFrame(bytes('00 8201a0 00')), FrameError);                  // trailing bytes
  assert.deepEqual(decodeFrame(bytes('00 8218 63 a0')), { type: 99, unknown: true });   // unknown type 99
  assert.throws(() => encodeFrame({ type: 'Fetch', docs: ['Todos/x'] }), /document id/); // identifiers
});
