// Refusals leave the connection usable: each is followed by a normal operation on the same connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '@automerge/automerge';
import { startRelay, newDevice } from '../support/harness.mjs';
import { Replica, Connection } from '../src/client.mjs';
import { encodeRaw, ErrorCode } from '../src/wire.mjs';

let relay;
let seed;   // a todo written by another device, so plans have something to send
before(async () => {
  relay = await startRelay();
  const other = new Replica(newDevice());
  seed = `todos/seed-${newDevice()}`;
  other.change(seed, (d) => { d.title = new A.ImmutableString('seed'); d.done = false; });
  const c = await Connection.open(relay.url, await relay.token(other.device), other);
  await c.start();
  await c.synced();
  c.close();
});
after(async () => { await relay?.stop(); });

async function open({ start = true, collections } = {}) {
  const replica = new Replica(newDevice());
  const c = await Connection.open(relay.url, await relay.token(replica.device), replica);
  if (start) { await c.start({ collections }); await c.synced(); }
  return [c, replica];
}
const errorOf = (c, code) => c.waitFor((m) => m.type === 'Error' && m.code === code);

// A normal operation: a new todo is pushed and acknowledged, and a Reconcile is planned and completed.
async function stillUsable(c, replica) {
  const id = `todos/ok-${newDevice()}`;
  replica.change(id, (d) => { d.title = new A.ImmutableString('fine'); d.done = false; });
  c.push([id]);
  const ack = await c.waitFor((m) => m.type === 'Ack' && m.items.some((i) => i.doc === id));
  assert.deepEqual(ack.items.find((i) => i.doc === id).heads, replica.heads(id));
  c.reconcile();
  await c.synced();
  assert.equal(c.closed, null);
  assert.deepEqual(c.violations, []);
  c.close();
}

test('Subscribe naming an unreadable collection: FORBIDDEN for it alone, the readable one still planned', async () => {
  const [c, replica] = await open({ start: false });
  c.start({ collections: ['todos', 'secrets'] });
  const err = await errorOf(c, ErrorCode.FORBIDDEN);
  assert.equal(err.collection, 'secrets');
  const plan = await c.waitFor((m) => m.type === 'Plan' && !m.update);
  assert.ok(plan.send.some((e) => e.doc === seed), 'todos is planned');
  await c.synced();
  assert.equal(String(replica.get(seed).title), 'seed');
  await stillUsable(c, replica);
});

test('a Sync item written by another actor: exactly one FORBIDDEN with doc, no Ack, no Sync for it', async () => {
  const [c, replica] = await open();
  const forged = `todos/forged-${newDevice()}`;
  replica.docs.set(forged, { doc: A.change(A.init({ actor: newDevice() }), (d) => { d.title = new A.ImmutableString('x'); }), acked: null });
  const good = `todos/good-${newDevice()}`;
  replica.change(good, (d) => { d.title = new A.ImmutableString('good'); d.done = false; });
  const [item] = c.push([forged, good]);                       // one frame: the rest of it is handled
  assert.ok(A.decodeSyncMessage(item.message).changes.length > 0, 'primed: the first message carries the change');
  const err = await errorOf(c, ErrorCode.FORBIDDEN);
  assert.equal(err.doc, forged);
  assert.equal(typeof err.retry_after_ms, 'number');           // "Authorship": retry after 10 s
  await c.waitFor((m) => m.type === 'Ack' && m.items.some((i) => i.doc === good));
  await stillUsable(c, replica);
  const about = (m) => m.items?.some((i) => i.doc === forged) || m.doc === forged;
  assert.deepEqual(c.received.filter(about).map((m) => `${m.type}${m.code ?? ''}`), ['Error5']);
});

const malformed = {
  'bad flags byte': new Uint8Array([0x07, 0x82, 0x03, 0xa0]),
  'truncated CBOR': new Uint8Array([0x00, 0x82, 0x04]),
  'trailing bytes after the CBOR item': new Uint8Array([0x00, 0x82, 0x03, 0xa1, 0x00, 0x80, 0x00]),
  // A Subscribe that would be valid but for one extra text key (refused, not ignored: addendum).
  'a text map key': encodeRaw([3, new Map([[0, [new Map([[0, 'todos'], [1, 1], [2, 0]])]], ['x', 1]])]),
  'a tagged (tag 64) byte string': new Uint8Array([0x00, 0x82, 0x06, 0xa1, 0x00, 0x81, 0xa2, 0x00, 0x67,
    ...Buffer.from('todos/a'), 0x01, 0xd8, 0x40, 0x41, 0x00]),
};
for (const [what, frame] of Object.entries(malformed)) {
  test(`a malformed binary frame (${what}) gets BAD_FRAME`, async () => {
    const [c, replica] = await open();
    c.sendRaw(frame);
    await errorOf(c, ErrorCode.BAD_FRAME);
    await stillUsable(c, replica);
  });
}

test('a text WebSocket message gets BAD_FRAME saying text is not a frame', async () => {
  const [c, replica] = await open();
  c.sendRaw('{"type":"hello"}');
  const err = await errorOf(c, ErrorCode.BAD_FRAME);
  assert.match(err.message, /text/i);
  await stillUsable(c, replica);
});

test('an unknown message type gets UNKNOWN_MESSAGE', async () => {
  const [c, replica] = await open();
  c.sendRaw(encodeRaw([99, new Map([[0, 'from the future']])]));
  await errorOf(c, ErrorCode.UNKNOWN_MESSAGE);
  await stillUsable(c, replica);
});

test('a malformed frame before Hello gets BAD_FRAME, then a correct Hello gets Welcome', async () => {
  const [c, replica] = await open({ start: false });
  c.sendRaw(new Uint8Array([0x00, 0xff]));
  await errorOf(c, ErrorCode.BAD_FRAME);
  const welcome = await c.start();
  assert.equal(welcome.version, 1);
  await c.synced();
  await stillUsable(c, replica);
});

test('a Reconcile without its required `changed` gets BAD_FRAME', async () => {
  const [c, replica] = await open();
  c.sendRaw(encodeRaw([4, new Map([[0, []]])]));
  await errorOf(c, ErrorCode.BAD_FRAME);
  await stillUsable(c, replica);
});
