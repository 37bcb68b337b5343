// The JS client and the Rust SDK (through the syncline-todo CLI) sync through a real relay.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as A from '@automerge/automerge';
import { startRelay, newDevice, todoCli } from '../support/harness.mjs';
import { Replica, Connection } from '../src/client.mjs';
import { Feature } from '../src/wire.mjs';

let relay;
before(async () => { relay = await startRelay(); });
after(async () => { await relay?.stop(); });

// The todo app's document (outside the protocol, see README): root map with `title` (a scalar string,
// not Automerge Text) and `done`.
const str = (s) => new A.ImmutableString(s);
const todo = (doc) => ({ title: String(doc.title), done: doc.done });

async function connect(replica) {
  const c = await Connection.open(relay.url, await relay.token(replica.device), replica);
  await c.start();
  return c;
}
async function syncOnce(replica) {
  const c = await connect(replica);
  try { await c.synced(); assert.deepEqual(c.violations, []); return c; } finally { c.close(); }
}

// "Acknowledgements": the Ack names the heads now durable (here exactly ours).
test('JS -> Rust: a todo written in JS is acknowledged, then listed by the Rust CLI', async () => {
  const js = new Replica(newDevice());
  const id = `todos/js-${newDevice()}`;
  js.change(id, (d) => { d.title = str('Buy milk'); d.done = false; });
  const c = await connect(js);
  try {
    const ack = await c.waitFor((m) => m.type === 'Ack' && m.items.some((i) => i.doc === id));
    assert.deepEqual(ack.items.find((i) => i.doc === id).heads, js.heads(id));   // the heads it holds
    await c.synced();
    assert.deepEqual(c.violations, []);
  } finally { c.close(); }
  const rust = todoCli(relay, 'rust-a');
  await rust.sync();
  assert.deepEqual((await rust.list()).find((t) => `todos/${t.id}` === id), { id: id.slice(6), title: 'Buy milk', done: false });
});

test('Rust -> JS: Plan names the doc, its Sync follows, then PlanDone; JS ends with the title', async () => {
  const rust = todoCli(relay, 'rust-b');
  const id = `todos/${await rust.add('Walk the dog')}`;
  await rust.sync();
  const js = new Replica(newDevice());
  const c = await connect(js);
  try {
    const plan = await c.waitFor((m) => m.type === 'Plan' && !m.update);
    assert.ok(plan.send.some((e) => e.doc === id), 'the plan sends the doc');
    await c.synced();
    assert.deepEqual(todo(js.get(id)), { title: 'Walk the dog', done: false });
    // "Optional features": plan_done in use, Plan ids 1, 2, ...; "Plans": PlanDone after the doc's Sync.
    assert.deepEqual(c.welcome.features, [Feature.PLAN_DONE], 'Welcome.features agrees plan_done');
    assert.equal(plan.id, 1);
    const at = (pred) => c.received.findIndex(pred);
    const iPlan = at((m) => m === plan);
    const iSync = at((m) => m.type === 'Sync' && m.items.some((i) => i.doc === id));
    const iDone = at((m) => m.type === 'PlanDone' && m.plan === plan.id);
    assert.ok(iPlan < iSync && iSync < iDone, `order Plan ${iPlan} < Sync ${iSync} < PlanDone ${iDone}`);
    assert.deepEqual(c.violations, []);
  } finally { c.close(); }
});

test('concurrent offline edits converge on both sides', async () => {
  const rust = todoCli(relay, 'rust-c');
  const short = await rust.add('Pay rent');
  const id = `todos/${short}`;
  await rust.sync();
  const js = new Replica(newDevice());
  await syncOnce(js);
  assert.equal(String(js.get(id).title), 'Pay rent');

  // Offline: JS renames, Rust marks it done.
  js.change(id, (d) => { d.title = str('Pay rent today'); });
  await rust.done(short);
  await syncOnce(js);                 // pushes the rename
  await rust.sync();                  // gets the rename, pushes done
  const c = await syncOnce(js);       // gets done

  assert.deepEqual(todo(js.get(id)), { title: 'Pay rent today', done: true });
  assert.deepEqual((await rust.list()).find((t) => t.id === short), { id: short, title: 'Pay rent today', done: true });
  // Same heads: the relay's last message shows the heads it holds (which Rust synced to) and JS holds exactly them.
  assert.deepEqual(js.heads(id), c.relayHeads.get(id));
  // The CLI shows no hashes; its history must list the same changes (author, message) as the JS doc.
  const history = (await rust.cli('history', short)).split('\n').map((l) => l.match(/device (\w+)\s+(.*)$/).slice(1));
  const changes = A.getAllChanges(js.get(id)).map(A.decodeChange);
  assert.equal(history.length, changes.length);
  for (const [dev] of history) assert.ok(changes.some((ch) => ch.actor.startsWith(dev)), `change by ${dev}`);
});
