// Replays the conformance transcripts (PROTOCOL.md "Conformance transcripts") against a real relay:
// each `>` frame is sent byte for byte, and each `<` line is compared with the summary of the next
// binary frame the relay sends that device. One test per file in protocol/test_data/transcripts/,
// each with a fresh relay. The summary format is inferred from the files and that section.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import WebSocket from 'ws';
import * as A from '@automerge/automerge';
import { startRelay } from '../support/harness.mjs';
import { decodeFrame, fromHex } from '../src/wire.mjs';

const DIR = new URL('../../../protocol/test_data/transcripts/', import.meta.url);
const WAIT_MS = 10000;

// --- Summaries -----------------------------------------------------------------------------------
// Left out, as varying from run to run or between relays: Welcome.session, server_time_ms and limits
// (and the epoch's value: only `set`/`none`), Cursor.epoch and receipt, Error.message, PlanEntry
// priority/bytes/reason/changed_ms, SyncItem.priority, and of an Automerge sync message its
// need/have/bloom filters and the changes' bytes. Heads are the first 4 bytes of each hash, sorted.
// An absent optional field is `none`, or `[]` for a list, or `false` for Plan's flags; Sync.positions
// alone is shown only when present (the transcripts show it on pushes and nowhere else).
const list = (xs) => `[${xs.join(' ')}]`;
const heads = (hs) => list([...hs].sort().map((h) => h.slice(0, 8)));
const opt = (v) => (v === undefined ? 'none' : v);
const cursors = (cs = []) => list(cs.map((c) => `${c.collection}:${c.seq}`));
const automerge = (bytes) => {
  const m = A.decodeSyncMessage(new Uint8Array(bytes));
  return `heads=${heads(m.heads)} changes=${m.changes.length}`;
};
const line = (...parts) => parts.filter((p) => p !== '').join(' ');
const RENDER = {
  Welcome: (m) => `welcome version=${m.version} compression=${m.compression} features=${list(m.features ?? [])} epoch=${m.epoch === undefined ? 'none' : 'set'}`,
  Plan: (m) => `plan id=${opt(m.id)} send=${list(m.send.map((e) => e.doc))} deferred=${list(m.deferred.map((e) => e.doc))} cursors=${cursors(m.cursors)} update=${!!m.update} fetch=${!!m.fetch} reset=${list(m.reset ?? [])}`,
  PlanDone: (m) => `plan_done plan=${m.plan}`,
  Sync: (m) => line('sync', ...m.items.map((i) => `{${i.doc} ${automerge(i.message)}}`), m.positions ? `positions=${cursors(m.positions)}` : ''),
  Ack: (m) => line('ack', ...m.items.map((i) => `{${i.doc} heads=${heads(i.heads)} seq=${opt(i.seq)}}`), `positions=${cursors(m.positions)}`),
  Error: (m) => `error code=${m.code} doc=${opt(m.doc)} collection=${opt(m.collection)} retry_after_ms=${opt(m.retry_after_ms)}`,
};
const summary = (m) => (RENDER[m.type] ? RENDER[m.type](m) : `unsummarised ${m.unknown ? `type ${m.type}` : m.type}`);

// --- One device's WebSocket, with an inbox of what the relay sent ---------------------------------
async function connect(url, token) {
  const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` }, maxPayload: 64 * 2 ** 20 });
  const peer = { ws, inbox: [], closed: null, wake: () => {} };
  ws.on('message', (data, isBinary) => { peer.inbox.push({ data, isBinary }); peer.wake(); });
  ws.on('close', (code) => { peer.closed = code; peer.wake(); });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => { ws.terminate(); reject(new Error('connect timeout')); }, WAIT_MS);
    ws.once('open', () => { clearTimeout(t); resolve(); });
    ws.once('error', (e) => { clearTimeout(t); reject(e); });
    ws.once('unexpected-response', (_, res) => { clearTimeout(t); reject(new Error(`HTTP ${res.statusCode}`)); });
  });
  return peer;
}

/** The next message received, or a rejection after `ms` or once the socket closed with nothing left. */
function next(peer, ms) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { peer.wake = () => {}; reject(new Error(`nothing received in ${ms} ms`)); }, ms);
    (peer.wake = () => {
      if (peer.inbox.length) { clearTimeout(t); peer.wake = () => {}; resolve(peer.inbox.shift()); }
      else if (peer.closed !== null) { clearTimeout(t); peer.wake = () => {}; reject(new Error(`socket closed (${peer.closed})`)); }
    })();
  });
}

async function close(peer) {
  if (peer.closed !== null) return;
  const closed = new Promise((r) => peer.ws.once('close', r));
  peer.ws.close(1000);                                             // "Close codes": NORMAL
  const t = setTimeout(() => peer.ws.terminate(), WAIT_MS);
  await closed;
  clearTimeout(t);
}

// --- Replay --------------------------------------------------------------------------------------
async function replay(name, relay) {
  const devices = new Map();   // name -> { id, read, write }
  const peers = new Map();     // name -> open peer
  const lines = readFileSync(new URL(name, DIR), 'utf8').split('\n');
  try {
    for (const [i, raw] of lines.entries()) {
      const at = `${name}:${i + 1}`;
      const text = raw.trimEnd();
      if (text === '' || text.startsWith('#')) continue;
      let m;
      if ((m = text.match(/^device (\S+) ([0-9a-f]{32}) read=(\S*) write=(\S*)$/))) {
        devices.set(m[1], { id: m[2], read: m[3], write: m[4] });
        continue;
      }
      if (!(m = text.match(/^(\S+) (.*)$/)) || !devices.has(m[1])) assert.fail(`${at}: unknown line: ${text}`);
      const [, dev, rest] = m;
      const peer = peers.get(dev);
      if (rest !== 'connect' && !rest.startsWith('(') && !peer) assert.fail(`${at}: ${dev} is not connected`);
      if (rest === 'connect') {
        const { id, read, write } = devices.get(dev);
        peers.set(dev, await connect(relay.url, await relay.token(id, { read, write, user: 'alice' })));
      } else if (rest === 'close') {
        await close(peer);
        peers.delete(dev);
      } else if ((m = rest.match(/^> ([0-9a-f]+)(?:\s+#\s*(.*))?$/))) {
        assert.equal(m[1].length % 2, 0, `${at}: odd number of hex digits`);
        const frame = fromHex(m[1]);
        // A comment `what (SUMMARY)` summarises the frame sent: a check of this renderer.
        const said = m[2]?.match(/^\S+ \((.*)\)$/);
        if (said) assert.equal(summary(decodeFrame(frame)), said[1], `${at}: summary of the frame sent`);
        peer.ws.send(frame);
      } else if ((m = rest.match(/^text (".*")$/))) {
        peer.ws.send(JSON.parse(m[1]));                             // a string goes as a text message
      } else if ((m = rest.match(/^< (.*)$/))) {
        let got;
        try { got = await next(peer, WAIT_MS); } catch (e) { assert.fail(`${at}: expected "${m[1]}": ${e.message}`); }
        if (!got.isBinary) assert.fail(`${at}: the relay sent a text message: ${String(got.data)}`);
        let msg;
        try { msg = decodeFrame(new Uint8Array(got.data)); } catch (e) { assert.fail(`${at}: frame does not decode (${e.message}): ${got.data.toString('hex')}`); }
        assert.equal(summary(msg), m[1], `${at}: frame received`);
      } else if (rest.startsWith('(') && rest.endsWith(')')) {
        // `(nothing to answer: heads equal)`: the device sends nothing.
      } else {
        assert.fail(`${at}: unknown line: ${text}`);
      }
    }
  } finally {
    await Promise.all([...peers.values()].map(close));
  }
}

const files = readdirSync(DIR).filter((f) => f.endsWith('.txt')).sort();
test('there are conformance transcripts', () => assert.ok(files.length > 0, `no transcripts in ${DIR.pathname}`));
for (const name of files) {
  test(`transcript ${name}`, async () => {
    const relay = await startRelay();
    try { await replay(name, relay); } finally { await relay.stop(); }
  });
}
