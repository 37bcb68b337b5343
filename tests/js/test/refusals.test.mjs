// Refusals leave the connection usable ("Session states and refusals"): each is followed by a normal
// operation on the same connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '@automerge/automerge';
import { startRelay, newDevice } from '../support/harness.mjs';
import { Replica, Connection } from '../src/client.mjs';
import { encodeRaw, encodeFrame, ErrorCode } from '../src/wire.mjs';

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
  assert.equal(typeof err.retry_after_ms, 'number');           // "Automerge": one actor per device, retry after 10 s
  const ack = await c.waitFor((m) => m.type === 'Ack' && m.items.some((i) => i.doc === good));
  assert.ok(c.received.indexOf(err) < c.received.indexOf(ack), '"Acknowledgements": the refusal comes before the Ack');
  await stillUsable(c, replica);
  const about = (m) => m.items?.some((i) => i.doc === forged) || m.doc === forged;
  assert.deepEqual(c.received.filter(about).map((m) => `${m.type}${m.code ?? ''}`), ['Error5']);
});

const malformed = {
  'bad flags byte': new Uint8Array([0x07, 0x82, 0x03, 0xa0]),
  'truncated CBOR': new Uint8Array([0x00, 0x82, 0x04]),
  'trailing bytes after the CBOR item': new Uint8Array([0x00, 0x82, 0x03, 0xa1, 0x00, 0x80, 0x00]),
  // A Subscribe that would be valid but for one extra text key ("Encoding": refused, not ignored).
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

// "Transport": a text message is not a frame: BAD_FRAME, and the connection goes on. "Encoding": Free
// text, so the error's wording is not checked.
test('a text WebSocket message gets BAD_FRAME', async () => {
  const [c, replica] = await open();
  c.sendRaw('{"type":"hello"}');
  await errorOf(c, ErrorCode.BAD_FRAME);
  await stillUsable(c, replica);
});

// "Messages": the relay answers an unknown type with UNKNOWN_MESSAGE and the connection goes on.
test('an unknown message type gets UNKNOWN_MESSAGE', async () => {
  const [c, replica] = await open();
  c.sendRaw(encodeRaw([99, new Map([[0, 'from the future']])]));
  await errorOf(c, ErrorCode.UNKNOWN_MESSAGE);
  await stillUsable(c, replica);
});

// "Session states and refusals": awaiting Hello, a frame that does not decode leaves it awaiting Hello.
test('a malformed frame before Hello gets BAD_FRAME, then a correct Hello gets Welcome', async () => {
  const [c, replica] = await open({ start: false });
  c.sendRaw(new Uint8Array([0x00, 0xff]));
  await errorOf(c, ErrorCode.BAD_FRAME);
  const welcome = await c.start();
  assert.equal(welcome.version, 1);
  await c.synced();
  await stillUsable(c, replica);
});

// "Encoding": Required fields, even an empty list.
test('a Reconcile without its required `changed` gets BAD_FRAME', async () => {
  const [c, replica] = await open();
  c.sendRaw(encodeRaw([4, new Map([[0, []]])]));
  await errorOf(c, ErrorCode.BAD_FRAME);
  await stillUsable(c, replica);
});

// "Session states and refusals": once open, a second Hello or a relay's message is OUT_OF_ORDER, an Error
// from the client is only logged (each a strike, 6 < 8), and the connection goes on.
test('out of order messages get OUT_OF_ORDER, an Error from the client gets no answer', async () => {
  const [c, replica] = await open();
  const limits = { max_frame_bytes: 1, max_frames_per_s: 1, max_bytes_per_s: 1, max_docs_per_subscription: 1, idle_timeout_ms: 1 };
  for (const m of [{ type: 'Hello', versions: [1], compression: [0], client: 'x', profile: { class: 2, metered: false, realtime: true } },
    { type: 'Welcome', version: 1, compression: 0, session: 's', server_time_ms: 0, limits },
    { type: 'Plan', send: [], deferred: [], cursors: [] }, { type: 'Ack', items: [] }, { type: 'PlanDone', plan: 1 },
    { type: 'Error', code: ErrorCode.INTERNAL, message: 'from the client' }]) c.sendRaw(encodeFrame(m));
  for (let i = 0; i < 5; i++) await errorOf(c, ErrorCode.OUT_OF_ORDER);
  await stillUsable(c, replica);
  assert.equal(c.received.filter((m) => m.type === 'Error').length, 5);
});

// "Encoding": receivers accept any valid form, keep a duplicated key's last value, sort heads.
const h = (b) => new Uint8Array(32).fill(b);
const accepted = {
  'a longer integer head and an indefinite-length map (Fetch)': () => new Uint8Array([0x00, 0x82, 0x18, 0x0a, 0xbf, 0x1b, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]),
  // {0: [], 0: [seed]}: the last value is kept, so the seed is fetched.
  'a key twice (Fetch)': () => new Uint8Array([0x00, 0x82, 0x0a, 0xa2, 0x00, 0x80, ...encodeRaw([10, new Map([[0, [seed]]])]).subarray(4)]),
  'unsorted, duplicated heads (Reconcile.changed)': () => encodeRaw([4, new Map([[0, []], [1, [new Map([[0, `todos/h-${newDevice()}`], [1, [h(2), h(1), h(2)]]])]]])]),
};
for (const [what, frame] of Object.entries(accepted)) {
  test(`accepted: ${what}`, async () => {
    const [c, replica] = await open();
    const fetch = what.endsWith('(Fetch)');
    if (fetch) c.pendingFetches++; else c.pendingReconciles++;
    c.sendRaw(frame());
    const plan = await c.waitFor((m) => m.type === 'Plan' && fetch === !!m.fetch);
    if (what.startsWith('a key twice')) assert.deepEqual(plan.send.map((e) => e.doc), [seed]);
    await stillUsable(c, replica);
    assert.equal(c.received.filter((m) => m.type === 'Error').length, 0);
  });
}
