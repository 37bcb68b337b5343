// A minimal Syncline client: a replica of Automerge documents and one connection to a relay.
// Written from docs/PROTOCOL.md alone; each rule names the section it follows.
import WebSocket from 'ws';
import * as A from '@automerge/automerge';
import { encodeFrame, decodeFrame, Feature } from './wire.mjs';

const sameHeads = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join();

/** A device's documents, what the relay acknowledged of them, and its cursors (outlives connections). */
export class Replica {
  constructor(device) {
    this.device = device;       // 32 lowercase hex digits, the token's `dev`
    this.docs = new Map();      // doc id -> { doc, acked: heads the relay durably holds (and we hold), or null }
    this.cursors = new Map();   // collection -> Cursor of the last plan that met "Plans": Cursors
  }
  // "Automerge": one actor per device, every change is written with actor id = device id.
  entry(id) {
    if (!this.docs.has(id)) this.docs.set(id, { doc: A.init({ actor: this.device }), acked: null });
    return this.docs.get(id);
  }
  change(id, fn) { const e = this.entry(id); e.doc = A.change(e.doc, fn); return e.doc; }
  get(id) { return this.docs.get(id)?.doc; }
  heads(id) { return A.getHeads(this.get(id)); }
  /** Documents with changes the relay has not acknowledged ("Session flow" 3). */
  unacked() { return [...this.docs].filter(([, e]) => !e.acked || !sameHeads(e.acked, A.getHeads(e.doc))).map(([id]) => id); }
}

/** One WebSocket session. Received messages are kept in `received` for tests to inspect. */
export class Connection {
  static async open(url, token, replica, { timeoutMs = 10000 } = {}) {
    // "Transport": `Authorization: Bearer <token>` on the upgrade; the relay answers 401 if bad.
    // "Frames": the WebSocket layer has the client's frame limit (64 MiB, as the reference SDK).
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, maxPayload: 64 * 2 ** 20 });
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => { ws.terminate(); reject(new Error('connect timeout')); }, timeoutMs);
      ws.once('open', () => { clearTimeout(t); resolve(); });
      ws.once('error', (e) => { clearTimeout(t); reject(e); });
      ws.once('unexpected-response', (_, res) => { clearTimeout(t); reject(new Error(`HTTP ${res.statusCode}`)); });
    });
    return new Connection(ws, replica);
  }

  constructor(ws, replica) {
    Object.assign(this, { ws, replica, welcome: null, closed: null });
    this.received = [];             // every decoded message, in order
    this.violations = [];          // what the relay sent against the spec (undecodable frames, stray Acks, ...)
    this.states = new Map();        // doc id -> Automerge sync state, per connection
    this.relayHeads = new Map();    // doc id -> heads of the relay's last message for it
    this.outstanding = new Map();   // doc id -> [heads pushed] of items with changes awaiting Ack or Error
    this.refused = new Map();       // doc id -> Error that refused an item
    this.failed = new Set();        // doc ids whose relay message did not apply here
    this.plans = [];                // { plan, done, got: Set(doc), deferredLater: Set(doc), stored }
    this.pendingReconciles = 0;     // Reconciles not yet answered by a Plan
    this.pendingFetches = 0;
    this.waiters = new Set();
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', (code, reason) => { this.closed = { code, reason: String(reason) }; this.wake(); });
  }

  get planDone() { return this.welcome?.features?.includes(Feature.PLAN_DONE) ?? false; }

  send(msg) { this.ws.send(encodeFrame(msg)); }
  sendRaw(data) { this.ws.send(data); }   // bytes go as a binary message, a string as a text message
  close() { this.ws.close(1000); }        // "Close codes": NORMAL

  // "Session flow" 2-3: Hello, Subscribe, Sync of every unacknowledged change, Reconcile, in one
  // flight without waiting for Welcome. Returns the Welcome.
  async start({ collections = ['todos'], features = [Feature.PLAN_DONE], timeoutMs = 10000 } = {}) {
    this.hello(features);
    this.subscribe(collections);
    this.push(this.replica.unacked());
    this.reconcile();
    return this.waitFor((m) => m.type === 'Welcome', timeoutMs);
  }
  hello(features = [Feature.PLAN_DONE]) {
    // "Frames": offer only the codecs we implement, [0] = none. "Optional features": offer plan_done.
    this.offered = features;
    this.send({ type: 'Hello', versions: [1], compression: [0], client: 'syncline-js-spec-test',
      profile: { class: 2, metered: false, realtime: true }, features });
  }
  subscribe(collections) {
    this.send({ type: 'Subscribe', collections: collections.map((collection) => ({ collection, priority: 1, mode: 0 })) });
  }
  // "Plans": collections without a cursor are left out (the first Reconcile plans them from the start).
  // `changed` stays empty: pushed documents are applied before the relay plans ("Session flow" 3).
  reconcile() {
    this.pendingReconciles++;
    this.send({ type: 'Reconcile', cursors: [...this.replica.cursors.values()], changed: [] });
  }
  fetch(docs) { this.pendingFetches++; this.send({ type: 'Fetch', docs }); }

  // "Automerge": Priming, from the heads the relay acknowledged (and we hold), or from none for a
  // document it never acknowledged, so the first message carries every change after them.
  stateFor(id) {
    if (!this.states.has(id)) {
      const e = this.replica.entry(id);
      const H = e.acked ?? [];
      const msg = A.encodeSyncMessage({ heads: H, need: [], have: [{ lastSync: H, bloom: new Uint8Array() }], changes: [] });
      const [doc, state] = A.receiveSyncMessage(e.doc, A.initSyncState(), msg);
      e.doc = doc;                                                // receiveSyncMessage returns a new doc
      this.states.set(id, state);
    }
    return this.states.get(id);
  }

  // Generates the next message of each document; returns the Sync items (those with changes are tracked).
  items(ids, { answering = new Map() } = {}) {
    const items = [];
    for (const id of ids) {
      // "Acknowledgements": an item refused without retry_after_ms waits for the next connection.
      if (this.refused.has(id) && this.refused.get(id).retry_after_ms === undefined) continue;
      const e = this.replica.entry(id);
      const prior = this.stateFor(id);   // may re-prime e.doc: take the state first
      const [state, message] = A.generateSyncMessage(e.doc, prior);
      if (!message) continue;
      const heard = answering.get(id);   // "Automerge": Settled, no answer to a change-less message at equal heads
      if (heard && heard.changes.length === 0 && sameHeads(heard.heads, A.getHeads(e.doc))) continue;
      this.states.set(id, state);
      if (A.decodeSyncMessage(message).changes.length > 0) {
        this.outstanding.set(id, [...(this.outstanding.get(id) ?? []), A.getHeads(e.doc)]);
      }
      items.push({ doc: id, message });
    }
    return items;
  }
  push(ids) {
    const items = this.items(ids);
    if (items.length) this.send({ type: 'Sync', items });
    return items;
  }

  onFrame(data, isBinary) {
    let msg;
    try {
      if (!isBinary) throw new Error('text message from the relay');   // "Transport": a relay never sends one
      msg = decodeFrame(data);
    } catch (e) { this.violations.push(e.message); this.wake(); return; }
    this.received.push(msg);
    // "Messages": a client ignores a message type it does not know (only the relay answers one).
    if (msg.unknown) return;
    const handler = this[`on${msg.type}`];
    if (handler) handler.call(this, msg);
    this.wake();
  }

  onWelcome(m) {
    this.welcome = m;
    // "Frames": the relay chooses one of the offered codecs; "Optional features": a subset of ours.
    if (m.compression !== 0 || m.features?.some((f) => !this.offered.includes(f))) this.violations.push('Welcome chose what we did not offer');
  }

  onPlan(m) {
    // "Plans": Answers. Each Reconcile gets exactly one Plan with update and fetch false, each Fetch one
    // marked fetch (its earlier parts come as update plans).
    if (m.fetch) this.pendingFetches--;
    else if (!m.update) this.pendingReconciles--;
    // "Optional features": with plan_done in use, ids increase in sending order (from 1).
    const last = this.plans.at(-1)?.plan.id ?? 0;
    if (this.planDone && !(m.id > last)) this.violations.push(`Plan id ${m.id} after ${last}: ids increase`);
    // "Plans add up": a deferred entry takes a document out of the earlier plans.
    for (const p of this.plans) for (const x of m.deferred) p.deferredLater.add(x.doc);
    this.plans.push({ plan: m, done: false, got: new Set(), deferredLater: new Set() });
    // "Epochs": on Plan.reset, forget what the relay acknowledged there and send every document again.
    for (const col of m.reset ?? []) {
      this.replica.cursors.delete(col);
      const ids = [...this.replica.docs.keys()].filter((id) => id.startsWith(`${col}/`));
      for (const id of ids) { this.replica.docs.get(id).acked = null; this.states.delete(id); }
      this.push(ids);
    }
  }

  onPlanDone(m) {
    // "Plans": PlanDone. Its send documents that got no message by now were dropped by the relay.
    const p = this.plans.find((x) => x.plan.id === m.plan);
    if (p) p.done = true;
    else this.violations.push(`PlanDone for unknown plan ${m.plan}`);
  }

  onSync(m) {
    // "Session flow" 5: apply the whole frame, then answer once with one Sync frame.
    const answering = new Map();
    for (const { doc: id, message } of m.items) {
      const e = this.replica.entry(id);
      try {
        const decoded = A.decodeSyncMessage(message);
        const prior = this.stateFor(id);   // may re-prime e.doc: take the state first
        const [doc, state] = A.receiveSyncMessage(e.doc, prior, message);
        e.doc = doc;
        this.states.set(id, state);
        answering.set(id, decoded);
        this.relayHeads.set(id, decoded.heads);
      } catch (err) { this.failed.add(id); this.violations.push(`${id}: ${err.message}`); continue; }
      for (const p of this.plans) if (!p.done && p.plan.send.some((x) => x.doc === id)) p.got.add(id);
      // "Acknowledgements": heads in any relay Sync message are durable; record them once we hold them.
      const H = this.relayHeads.get(id);
      if (H.length && A.hasHeads(e.doc, H)) e.acked = H;
    }
    const items = this.items([...answering.keys()], { answering });
    if (items.length) this.send({ type: 'Sync', items });
  }

  onAck(m) {
    // "Acknowledgements": frames are answered in order, so a document's AckItems match its items first in,
    // first out. AckItem.heads are durable: recorded if we hold them all, else the heads we sent.
    for (const { doc: id, heads } of m.items) {
      const e = this.replica.entry(id);
      const pushed = this.outstanding.get(id) ?? [];
      const P = pushed.shift();
      if (!pushed.length) this.outstanding.delete(id);
      if (!P) { this.violations.push(`Ack for ${id} with no item outstanding`); continue; }
      e.acked = A.hasHeads(e.doc, heads) ? heads : P;
      // "Automerge": Acknowledged, an Ack naming exactly our heads restarts the state primed there.
      if (sameHeads(heads, A.getHeads(e.doc))) { this.states.delete(id); this.stateFor(id); }
    }
  }

  onError(m) {
    if (!m.doc) return;
    // "Acknowledgements": a refused item gets one Error with `doc` and nothing else. With retry_after_ms
    // it stays pending and goes again after the delay (capped at 5 min) from a fresh state primed with
    // what the relay acknowledged; without, it waits for the next connection.
    const pushed = this.outstanding.get(m.doc);
    pushed?.shift();
    if (pushed && !pushed.length) this.outstanding.delete(m.doc);
    this.refused.set(m.doc, m);
    this.states.delete(m.doc);
    if (m.retry_after_ms !== undefined) {
      setTimeout(() => this.ws.readyState === WebSocket.OPEN && this.push([m.doc]), Math.min(Number(m.retry_after_ms), 300000)).unref();
    }
  }

  // A document is complete once we hold every head of the relay's last message for it ("Plans").
  complete(id) { return !this.relayHeads.has(id) || A.hasHeads(this.replica.get(id), this.relayHeads.get(id)); }

  /** "Plans": The client is synced. Returns the reasons it is not (empty: synced). */
  notSynced() {
    const why = [];
    if (!this.welcome) why.push('no Welcome');
    if (this.pendingReconciles) why.push(`${this.pendingReconciles} Reconcile(s) without Plan`);
    if (this.pendingFetches) why.push(`${this.pendingFetches} Fetch(es) without Plan`);
    for (const p of this.plans) {
      // With plan_done, a plan is over at its PlanDone. Without it (an older relay) we can only count the
      // planned documents that arrived (or were deferred since); synced()'s time limit stands for the rest.
      const over = this.planDone ? p.done : p.plan.send.every((x) => p.got.has(x.doc) || p.deferredLater.has(x.doc));
      if (!over) why.push(`plan ${p.plan.id ?? '?'} not done`);
    }
    // Every planned document that got a message is complete, and no exchange waits for data the relay showed.
    for (const id of this.relayHeads.keys()) if (!this.complete(id)) why.push(`${id} lacks relay heads`);
    for (const [id, pushed] of this.outstanding) why.push(`${id}: ${pushed.length} item(s) unacknowledged`);
    return why;
  }

  /** Resolves once synced; rejects after timeoutMs (a bound, not a "quiet period") or on close. */
  synced(timeoutMs = 10000) {
    return this.until(() => this.notSynced().length === 0 || undefined, timeoutMs, () => `not synced: ${this.notSynced().join('; ')}`)
      .then(() => this.storeCursors());
  }
  // "Plans": Cursors. A plan's cursors are stored once each send document is complete (or deferred since),
  // none was refused, failed or dropped, and nothing in those collections waits for the relay's data.
  storeCursors() {
    for (const p of this.plans) {
      const cols = new Set(p.plan.cursors.map((c) => c.collection));
      const ok = (!this.planDone || p.done) && !p.stored
        && p.plan.send.every(({ doc }) => p.deferredLater.has(doc) || (p.got.has(doc) && !this.refused.has(doc) && !this.failed.has(doc) && this.complete(doc)))
        && [...this.relayHeads.keys()].every((id) => !cols.has(id.split('/')[0]) || this.complete(id));
      if (ok) { p.stored = true; for (const c of p.plan.cursors) this.replica.cursors.set(c.collection, c); }
    }
  }

  /** Waits for (and takes) the first not yet taken received message matching pred. */
  waitFor(pred, timeoutMs = 10000) {
    this.taken ??= new Set();
    return this.until(() => this.received.find((m) => !this.taken.has(m) && pred(m) && this.taken.add(m)), timeoutMs,
      () => `no matching message in ${timeoutMs} ms; received ${this.received.map((m) => m.type).join(', ')}`);
  }

  until(check, timeoutMs, describe) {
    return new Promise((resolve, reject) => {
      const w = () => {
        const v = check();
        if (v !== undefined && v !== false) { done(); resolve(v); } else if (this.closed) { done(); reject(new Error(`closed ${this.closed.code} ${this.closed.reason}; ${describe()}`)); }
      };
      const t = setTimeout(() => { done(); reject(new Error(describe())); }, timeoutMs);
      const done = () => { clearTimeout(t); this.waiters.delete(w); };
      this.waiters.add(w);
      w();
    });
  }
  wake() { for (const w of [...this.waiters]) w(); }
}
