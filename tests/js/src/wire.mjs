// The Syncline wire format (docs/PROTOCOL.md "Frames", "Encoding", "Messages"),
// written from the spec alone. Messages are plain JS objects with named fields; on the wire they
// are CBOR maps with unsigned integer keys.
import { Encoder, Decoder } from 'cbor-x';

// "Encoding": integer keys (Maps, never records), untagged byte strings, shortest forms. 64-bit
// integers decode as BigInt (kept as BigInt past 2^53). A duplicated key keeps its last value.
const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false, variableMapSize: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export class FrameError extends Error {}
const fail = (msg) => { throw new FrameError(msg); };

// --- Field types ------------------------------------------------------------------------------
// Each type is { enc(jsValue) -> cborValue, dec(cborValue) -> jsValue }; dec validates.
const COLLECTION = /^[a-z][a-z0-9_-]{0,63}$/;         // "Encoding": identifiers
const DOC_ID = /^([a-z][a-z0-9_-]{0,63})\/[A-Za-z0-9_.:-]{1,128}$/;
const toHex = (b) => Buffer.from(b).toString('hex');
const fromHex = (h) => new Uint8Array(Buffer.from(h, 'hex'));
const check = (ok, what, v) => (ok ? v : fail(`invalid ${what}`));

// "Encoding": integers are major type 0 up to 2^64-1, never floats. cbor-x writes numbers above 2^32
// as float64 and every BigInt in 9 bytes: pass BigInt exactly above 2^32. Decoded: a Number when
// safe, else a BigInt.
const U64 = 2n ** 64n;
const uint = {
  enc: (v) => (typeof v === 'bigint' && v >= 0n && v < U64) || (Number.isSafeInteger(v) && v >= 0)
    ? (v > 0xffffffff ? BigInt(v) : Number(v)) : fail(`not a uint: ${v}`),
  dec: (v) => (typeof v === 'bigint' ? (v <= Number.MAX_SAFE_INTEGER ? Number(v) : v) : check(Number.isSafeInteger(v) && v >= 0, 'uint', v)),
};
// "Encoding": enumerations are closed (a value outside the table is malformed), except
// PlanEntry.reason, which a receiver reads as absent when it does not know it.
const enumOf = (n, what) => ({ enc: (v) => check(v >= 0 && v < n, what, uint.enc(v)), dec: (v) => check((v = uint.dec(v)) < n, what, v) });
const reason = { enc: enumOf(4, 'reason').enc, dec: (v) => ((v = uint.dec(v)) < 4 ? v : undefined) };
const priority = enumOf(4, 'priority');
const text = { enc: (v) => check(typeof v === 'string', 'text', v), dec: (v) => check(typeof v === 'string', 'text', v) };
const bool = { enc: (v) => check(typeof v === 'boolean', 'bool', v), dec: (v) => check(typeof v === 'boolean', 'bool', v) };
const bytes = {
  enc: (v) => check(v instanceof Uint8Array, 'bytes', v),
  dec: (v) => check(v instanceof Uint8Array, 'bytes', v),
};
const pattern = (re, what) => ({ enc: (v) => check(re.test(v), what, v), dec: (v) => check(typeof v === 'string' && re.test(v), what, v) });
const collection = pattern(COLLECTION, 'collection');
const docId = pattern(DOC_ID, 'document id');
// A fixed-length byte string shown as lowercase hex (device id: 16 bytes, hash: 32 bytes).
const hexBytes = (n, what) => ({
  enc: (v) => check(typeof v === 'string' && v.length === 2 * n, what, fromHex(v)),
  dec: (v) => toHex(check(v instanceof Uint8Array && v.length === n, what, v)),
});
const hash = hexBytes(32, 'hash');
const deviceId = hexBytes(16, 'device id');
const array = (t) => ({
  enc: (v) => check(Array.isArray(v), 'array', v).map(t.enc),
  dec: (v) => check(Array.isArray(v), 'array', v).map(t.dec),
});
// "Encoding": heads are sent sorted bytewise without duplicates; a receiver sorts them and drops
// duplicates (lowercase hex sorts like the bytes).
const heads = { enc: (v) => [...new Set(v)].sort().map(hash.enc), dec: (v) => [...new Set(array(hash).dec(v))].sort() };

// A struct: { name: [key, type, optional?] }. "Encoding": unknown (unsigned integer) keys are ignored,
// null counts as absent, a missing required field is malformed, a text key is refused.
const struct = (fields) => ({
  fields,
  enc(obj) {
    const m = new Map();
    for (const [name, [key, t, opt]] of Object.entries(fields)) {
      if (obj[name] === undefined || obj[name] === null) { if (!opt) fail(`missing field ${name}`); continue; }
      m.set(key, t.enc(obj[name]));
    }
    return m;
  },
  dec(m) {
    if (!(m instanceof Map)) fail('not a map');
    const isUint = (k) => (typeof k === 'bigint' ? k >= 0n : Number.isInteger(k) && k >= 0);
    for (const k of m.keys()) if (!isUint(k)) fail(`map key is not an unsigned integer: ${String(k)}`);
    m = new Map([...m].map(([k, v]) => [Number(k), v]));          // a key in a longer form than needed
    const obj = {};
    for (const [name, [key, t, opt]] of Object.entries(fields)) {
      const v = m.get(key);
      if (v === undefined || v === null) { if (!opt) fail(`missing field ${name}`); continue; }
      const d = t.dec(v);
      if (d !== undefined) obj[name] = d;
    }
    return obj;
  },
});
const OPT = true;

// --- Nested maps ("Messages": Nested maps) ------------------------------------------------------
const Profile = struct({
  class: [0, enumOf(4, 'class')], storage_budget_bytes: [1, uint, OPT], download_bytes_per_s: [2, uint, OPT],
  upload_bytes_per_s: [3, uint, OPT], metered: [4, bool], realtime: [5, bool], metered_max_doc_bytes: [6, uint, OPT],
});
const CollectionSubscription = struct({ collection: [0, collection], priority: [1, priority], mode: [2, enumOf(2, 'mode')] });
const Limits = struct({
  max_frame_bytes: [0, uint], max_frames_per_s: [1, uint], max_bytes_per_s: [2, uint],
  max_docs_per_subscription: [3, uint], idle_timeout_ms: [4, uint],
});
const Cursor = struct({ collection: [0, collection], seq: [1, uint], epoch: [2, text, OPT], receipt: [3, text, OPT] });
const DocHeads = struct({ doc: [0, docId], heads: [1, heads] });
const PlanEntry = struct({ doc: [0, docId], priority: [1, priority], bytes: [2, uint], reason: [3, reason, OPT], changed_ms: [4, uint, OPT] });
const SyncItem = struct({ doc: [0, docId], message: [1, bytes], priority: [2, priority, OPT] });   // "Messages": 0-3
const AckItem = struct({ doc: [0, docId], heads: [1, heads], seq: [2, uint, OPT] });

// --- Messages: type number -> name and fields ---------------------------------------------------
export const MESSAGES = {
  1: ['Hello', struct({ versions: [0, array(uint)], compression: [1, array(uint)], profile: [2, Profile], client: [3, text], features: [4, array(uint), OPT] })],
  2: ['Welcome', struct({ version: [0, uint], compression: [1, uint], session: [2, text], server_time_ms: [3, uint], limits: [4, Limits], epoch: [5, text, OPT], features: [6, array(uint), OPT] })],
  3: ['Subscribe', struct({ collections: [0, array(CollectionSubscription)] })],
  4: ['Reconcile', struct({ cursors: [0, array(Cursor)], changed: [1, array(DocHeads)], fetched: [2, array(docId), OPT], acked: [3, array(Cursor), OPT] })],
  5: ['Plan', struct({ send: [0, array(PlanEntry)], deferred: [1, array(PlanEntry)], cursors: [2, array(Cursor)], update: [3, bool, OPT], fetch: [4, bool, OPT], reset: [5, array(collection), OPT], id: [6, uint, OPT] })],
  6: ['Sync', struct({ items: [0, array(SyncItem)], positions: [1, array(Cursor), OPT] })],
  7: ['Ack', struct({ items: [0, array(AckItem)], positions: [1, array(Cursor), OPT] })],
  8: ['UpdateProfile', struct({ profile: [0, Profile] })],
  9: ['RefreshToken', struct({ token: [0, text] })],
  10: ['Fetch', struct({ docs: [0, array(docId)] })],
  11: ['Ephemeral', struct({ doc: [0, docId], payload: [1, bytes], from: [2, deviceId, OPT] })],
  12: ['Error', struct({ code: [0, uint], message: [1, text], retry_after_ms: [2, uint, OPT], doc: [3, docId, OPT], collection: [4, collection, OPT] })],
  13: ['PlanDone', struct({ plan: [0, uint] })],                   // "Optional features": plan_done
};
const TYPES = Object.fromEntries(Object.entries(MESSAGES).map(([n, [name]]) => [name, Number(n)]));

export const ErrorCode = { BAD_FRAME: 1, UNKNOWN_MESSAGE: 2, UNSUPPORTED_VERSION: 3, UNAUTHORIZED: 4, FORBIDDEN: 5, FRAME_TOO_LARGE: 6, RATE_LIMITED: 7, LIMIT_EXCEEDED: 8, BAD_DOCUMENT: 9, OUT_OF_ORDER: 10, INTERNAL: 11, STORAGE_FULL: 12 };
export const Feature = { PLAN_DONE: 1 };                           // "Optional features"
export const Priority = { LOW: 0, NORMAL: 1, HIGH: 2, CRITICAL: 3 };

// --- Frames ("Frames": flags byte, then CBOR [type, map]) ----------------------------------------
/** Encodes a raw body ([type, Map]) as an uncompressed frame; tests use it for malformed input. */
export function encodeRaw(body) {
  const cbor = encoder.encode(body);
  const frame = new Uint8Array(1 + cbor.length);
  frame[0] = 0x00;                                                 // flags 0x00: body as is
  frame.set(cbor, 1);
  return frame;
}

/** { type: 'Hello', ...fields } -> frame bytes. We offer compression [0], so never compress. */
export function encodeFrame(msg) {
  const n = TYPES[msg.type] ?? fail(`unknown message type ${msg.type}`);
  return encodeRaw([n, MESSAGES[n][1].enc(msg)]);
}

/** frame bytes -> { type: 'Name', ...fields }, or { type: n, unknown: true } for an unknown type
 * (its message is not looked at: "Messages", a client ignores a type it does not know). */
export function decodeFrame(frame) {
  if (frame.length < 2) fail('short frame');
  if (frame[0] !== 0x00) fail(`flags ${frame[0]} (we offered no compression)`);   // "Frames"
  let body;
  try { body = decoder.decode(frame.subarray(1)); }                // one item, no trailing bytes
  catch (e) { fail(`CBOR: ${e.message}`); }
  if (!Array.isArray(body) || body.length !== 2) fail('body is not an array(2)');
  const [t, m] = body;
  const n = typeof t === 'bigint' ? Number(t) : t;
  if (!Number.isInteger(n) || n < 0) fail('type is not an unsigned integer');
  if (!MESSAGES[n]) return { type: n, unknown: true };
  return { type: MESSAGES[n][0], ...MESSAGES[n][1].dec(m) };
}

export { toHex, fromHex };
