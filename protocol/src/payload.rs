//! Bounded checks of Automerge payloads, before Automerge parses them.
//!
//! A sync message carries Automerge chunks: changes, deflate-compressed changes and saved
//! documents (whose columns may each be deflate-compressed). Automerge 0.12 trusts their
//! encoding: it inflates a compressed chunk or column to whatever size it claims, and walks
//! as many operations as a run-length encoded column declares. A chunk of a few dozen bytes
//! can therefore claim 2^60 operations (a worker spins forever), and a 1 MB frame can inflate
//! to gigabytes. [`Budget::check`] reads the chunks' structure in time linear in their bytes,
//! inflates each compressed part only up to what is left of the budget, and counts the values
//! every column declares without expanding them, so a payload that would cost more than its
//! [`PayloadLimits`] is refused before Automerge allocates or walks anything.
//!
//! The storage format is Automerge's (<https://alexjg.github.io/automerge-storage-docs/>):
//! a chunk is magic bytes, a checksum, a type and a LEB128 length; columns are run-length,
//! delta, boolean, grouped or raw encodings. Only what bounds the cost is checked here;
//! Automerge itself still decodes (and may refuse) what passes.

use std::io::Read;

/// What one frame's Automerge payloads may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Bytes that compressed chunks and columns may inflate to, in all.
    pub max_inflated_bytes: usize,
    /// Values the columns of all chunks may declare, in all: a bound on the operations (and
    /// their predecessors, dependencies and changes) that decoding walks.
    pub max_ops: u64,
}

impl PayloadLimits {
    /// 32 MiB inflated and 2,000,000 operations per frame: twice a default frame's bytes, and
    /// well over what a device batches (a change of a whole 1 MB pasted text is about a
    /// million operations); decoding that many costs Automerge well under a second.
    pub const DEFAULT: Self = Self {
        max_inflated_bytes: 32 << 20,
        max_ops: 2_000_000,
    };
}

impl Default for PayloadLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes are not well-formed Automerge chunks.
    #[error("not a well-formed Automerge chunk: {0}")]
    Malformed(&'static str),
    /// A chunk of a type peers do not exchange (bundles, or unknown types).
    #[error("Automerge chunk type {0} is not accepted (changes and documents are)")]
    UnsupportedChunk(u8),
    /// A compressed part does not inflate.
    #[error("a compressed chunk or column does not inflate")]
    Corrupt,
    /// Compressed parts would inflate past the budget.
    #[error("compressed data inflates past {max} bytes")]
    InflatesTooFar {
        /// The budget's bytes.
        max: usize,
    },
    /// Columns declare more values than the budget allows.
    #[error("the payload declares more than {max} operations")]
    TooManyOps {
        /// The budget's operations.
        max: u64,
    },
}

/// Why a sync message's own fields (not its changes) were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncMessageError {
    /// More Bloom filters than [`MAX_HAVES`].
    #[error("{0} Bloom filters (at most {MAX_HAVES})")]
    TooManyHaves(usize),
    /// More needed hashes than [`MAX_NEEDS`].
    #[error("{0} needed hashes (at most {MAX_NEEDS})")]
    TooManyNeeds(usize),
    /// Heads out of order (Automerge sends them sorted, and encodes states assuming so).
    #[error("heads are not sorted")]
    UnsortedHeads,
    /// More heads than [`MAX_HEADS`].
    #[error("{0} heads (at most {MAX_HEADS})")]
    TooManyHeads(usize),
    /// A Bloom filter Automerge cannot probe safely, or one over [`MAX_BLOOM_BYTES`].
    #[error("a malformed Bloom filter, or one over {MAX_BLOOM_BYTES} bytes")]
    MalformedBloom,
}

/// Most heads a sync message may name (one per concurrent writer at the tip of a document).
pub const MAX_HEADS: usize = 1024;

/// Largest Bloom filter a sync message may carry: about 800,000 changes since the last sync.
pub const MAX_BLOOM_BYTES: usize = 1 << 20;

/// Most `have` entries a sync message may carry (Automerge sends none or one).
pub const MAX_HAVES: usize = 4;

/// Most hashes a sync message may `need` (Automerge asks for the peer's heads it lacks, and
/// the dependencies of changes it holds waiting: a few).
pub const MAX_NEEDS: usize = 4096;

/// Most probes per hash a Bloom filter may ask for (Automerge uses 7).
#[cfg(feature = "automerge")]
const MAX_BLOOM_PROBES: u64 = 64;

/// Checks what Automerge itself trusts in a peer's sync message, before it is received (the
/// relay checks each device's; a device checks the relay's): at most [`MAX_HAVES`] Bloom
/// filters, each well formed (with bits to probe and a sane number of probes: Automerge would
/// divide by zero on a filter with no bits, or allocate without bound for a huge probe
/// count), and at most [`MAX_NEEDS`] needed hashes. Its changes are checked by
/// [`Budget::check`].
///
/// # Errors
/// [`SyncMessageError`] naming what is wrong.
#[cfg(feature = "automerge")]
pub fn check_sync_message(message: &automerge::sync::Message) -> Result<(), SyncMessageError> {
    if message.have.len() > MAX_HAVES {
        return Err(SyncMessageError::TooManyHaves(message.have.len()));
    }
    if message.need.len() > MAX_NEEDS {
        return Err(SyncMessageError::TooManyNeeds(message.need.len()));
    }
    if message.heads.len() > MAX_HEADS {
        return Err(SyncMessageError::TooManyHeads(message.heads.len()));
    }
    if !message.heads.is_sorted() {
        return Err(SyncMessageError::UnsortedHeads);
    }
    for have in &message.have {
        let bloom = have.bloom.to_bytes();
        if bloom.len() > MAX_BLOOM_BYTES
            || have.last_sync.len() > MAX_HEADS
            || !bloom_is_sane(&bloom)
        {
            return Err(SyncMessageError::MalformedBloom);
        }
    }
    Ok(())
}

/// A Bloom filter's encoding (`BloomFilter::to_bytes`: empty, or entries, bits per entry,
/// probes as LEB128, then the bits) describes one that can be probed safely.
#[cfg(feature = "automerge")]
fn bloom_is_sane(bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    let mut r = Reader::new(bytes);
    let (Ok(entries), Ok(_bits_per_entry), Ok(probes)) = (r.uleb(), r.uleb(), r.uleb()) else {
        return false;
    };
    entries > 0 && !r.is_empty() && (1..=MAX_BLOOM_PROBES).contains(&probes)
}

impl PayloadError {
    /// Whether the payload is well formed but over a limit (as opposed to malformed).
    pub fn is_limit(&self) -> bool {
        matches!(self, Self::InflatesTooFar { .. } | Self::TooManyOps { .. })
    }
}

/// What is left of one frame's [`PayloadLimits`]; each checked chunk spends from it.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: PayloadLimits,
    inflated: usize,
    ops: u64,
}

/// What the checked chunks hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Change chunks (compressed or not).
    pub changes: usize,
    /// Saved-document chunks.
    pub documents: usize,
    /// Bytes the chunks inflated to (plain bytes counted as they are).
    pub bytes: usize,
    /// Values their columns declare (a bound on the operations).
    pub ops: u64,
}

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;

impl Budget {
    /// A fresh budget for one frame.
    pub fn new(limits: PayloadLimits) -> Self {
        Self {
            limits,
            inflated: 0,
            ops: 0,
        }
    }

    /// Checks `bytes` (one or more concatenated chunks), spending from the budget.
    ///
    /// # Errors
    /// [`PayloadError`] when a chunk is malformed, of a type peers do not exchange, or would
    /// cost past what is left of the budget.
    pub fn check(&mut self, bytes: &[u8]) -> Result<Checked, PayloadError> {
        let mut checked = Checked::default();
        let mut input = Reader::new(bytes);
        while !input.is_empty() {
            if input.take(4)? != MAGIC {
                return Err(PayloadError::Malformed("bad magic bytes"));
            }
            input.take(4)?;
            let kind = input.byte()?;
            let len = input.uleb()?;
            let body = input.take(len)?;
            let ops_before = self.ops;
            match kind {
                CHUNK_CHANGE => {
                    self.change(body)?;
                    checked.changes += 1;
                    checked.bytes += body.len();
                }
                CHUNK_COMPRESSED => {
                    let inflated = self.inflate(body)?;
                    self.change(&inflated)?;
                    checked.changes += 1;
                    checked.bytes += inflated.len();
                }
                CHUNK_DOCUMENT => {
                    checked.bytes += self.document(body)?;
                    checked.documents += 1;
                }
                other => return Err(PayloadError::UnsupportedChunk(other)),
            }
            checked.ops += self.ops - ops_before;
        }
        Ok(checked)
    }

    /// Inflates a deflate stream, up to what is left of the budget. A first pass only counts
    /// (into a sink): a stream that inflates too far is refused without allocating for it.
    fn inflate(&mut self, compressed: &[u8]) -> Result<Vec<u8>, PayloadError> {
        let left = self.limits.max_inflated_bytes - self.inflated;
        let len = std::io::copy(
            &mut flate2::bufread::DeflateDecoder::new(compressed).take(left as u64 + 1),
            &mut std::io::sink(),
        )
        .map_err(|_| PayloadError::Corrupt)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > left {
            // The work was done: the budget is spent.
            self.inflated = self.limits.max_inflated_bytes;
            return Err(PayloadError::InflatesTooFar {
                max: self.limits.max_inflated_bytes,
            });
        }
        let mut out = Vec::with_capacity(len);
        flate2::bufread::DeflateDecoder::new(compressed)
            .take(len as u64)
            .read_to_end(&mut out)
            .map_err(|_| PayloadError::Corrupt)?;
        self.inflated += out.len();
        Ok(out)
    }

    /// Values declared by the chunks checked so far (the operations decoding them walks).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Bytes inflated so far (all of the budget once a part inflated past it).
    pub fn inflated(&self) -> usize {
        self.inflated
    }

    fn spend_ops(&mut self, ops: u64) -> Result<(), PayloadError> {
        let total = self.ops.saturating_add(ops);
        if total > self.limits.max_ops {
            return Err(PayloadError::TooManyOps {
                max: self.limits.max_ops,
            });
        }
        self.ops = total;
        Ok(())
    }

    /// What the ops budget still allows, for scans that stop as soon as they pass it.
    fn ops_left(&self) -> u64 {
        self.limits.max_ops - self.ops
    }

    /// A change chunk's body (after its header): fields, then columns none of which may be
    /// compressed (Automerge compresses whole changes instead).
    fn change(&mut self, body: &[u8]) -> Result<(), PayloadError> {
        let mut i = Reader::new(body);
        let deps = i.uleb()?;
        i.take(
            deps.checked_mul(32)
                .ok_or(PayloadError::Malformed("dependencies"))?,
        )?;
        i.length_prefixed()?; // actor
        i.uleb()?; // seq
        i.uleb()?; // start op
        i.sleb()?; // time
        i.length_prefixed()?; // message
        let others = i.uleb()?;
        for _ in 0..others {
            i.length_prefixed()?; // each step consumes at least a byte: bounded by the body
        }
        let columns = i.columns()?;
        let mut cost = 0;
        for (spec, data) in columns.iter().map(|&(spec, len)| (spec, i.take(len))) {
            let data = data?;
            if spec & DEFLATE != 0 {
                return Err(PayloadError::Malformed("compressed column in a change"));
            }
            cost = cost.max(scan(spec, data, body.len(), self.ops_left())?);
        }
        self.spend_ops(cost)
    }

    /// A document chunk's body: actors, heads, change and operation columns (each possibly
    /// compressed), head indices. Returns the bytes its columns take once inflated.
    fn document(&mut self, body: &[u8]) -> Result<usize, PayloadError> {
        let mut i = Reader::new(body);
        let actors = i.uleb()?;
        for _ in 0..actors {
            i.length_prefixed()?;
        }
        let heads = i.uleb()?;
        i.take(
            heads
                .checked_mul(32)
                .ok_or(PayloadError::Malformed("heads"))?,
        )?;
        let change_columns = i.columns()?;
        let op_columns = i.columns()?;
        let mut bytes = body.len();
        for columns in [change_columns, op_columns] {
            let mut cost = 0;
            let data: Vec<(u32, &[u8])> = columns
                .iter()
                .map(|&(spec, len)| i.take(len).map(|d| (spec, d)))
                .collect::<Result<_, _>>()?;
            for (spec, data) in data {
                let inflated;
                let data = if spec & DEFLATE != 0 {
                    inflated = self.inflate(data)?;
                    bytes += inflated.len();
                    &inflated[..]
                } else {
                    data
                };
                cost = cost.max(scan(spec, data, usize::MAX, self.ops_left())?);
            }
            self.spend_ops(cost)?;
        }
        Ok(bytes)
    }
}

/// The deflate bit of a column specification.
const DEFLATE: u32 = 0x08;

/// Column types (the low three bits of a specification).
const GROUP: u32 = 0;
#[cfg(test)]
const ULEB: u32 = 2;
const DELTA: u32 = 3;
const BOOLEAN: u32 = 4;
const STRING: u32 = 5;
const VALUE_META: u32 = 6;
const VALUE_RAW: u32 = 7;

/// How an RLE column's values are encoded.
#[derive(Clone, Copy)]
enum Value {
    Unsigned,
    Signed,
    Str,
}

/// Values a column declares: for grouped and value-metadata columns, also what those values
/// declare in turn (the grouped entries, the value bytes). Stops as soon as the count passes
/// `limit`, so its time is linear in `data` whatever it claims. `value_bytes` bounds the bytes
/// that value metadata may declare (the body that holds the raw values).
fn scan(spec: u32, data: &[u8], value_bytes: usize, limit: u64) -> Result<u64, PayloadError> {
    let over = || PayloadError::TooManyOps { max: limit };
    let mut i = Reader::new(data);
    let mut count: u64 = 0;
    let mut declared: u64 = 0;
    let kind = spec & 0x07;
    if kind == VALUE_RAW {
        return Ok(0);
    }
    if kind == BOOLEAN {
        while !i.is_empty() {
            count = count.saturating_add(i.uleb()?);
            if count > limit {
                return Err(over());
            }
        }
        return Ok(count);
    }
    // Group, actor, unsigned and value-metadata columns hold unsigned LEB128 values.
    let value = match kind {
        DELTA => Value::Signed,
        STRING => Value::Str,
        _ => Value::Unsigned,
    };
    while !i.is_empty() {
        let run = i.sleb()?;
        if run > 0 {
            let run = run.unsigned_abs();
            let v = i.value(value)?;
            count = count.saturating_add(run);
            declared = declared.saturating_add(run.saturating_mul(weight(kind, v)));
        } else if run < 0 {
            for _ in 0..run.unsigned_abs() {
                // Each literal consumes at least a byte: bounded by the column.
                let v = i.value(value)?;
                count = count.saturating_add(1);
                declared = declared.saturating_add(weight(kind, v));
            }
        } else {
            count = count.saturating_add(i.uleb()?);
        }
        if count > limit || (kind == GROUP && declared > limit) {
            return Err(over());
        }
        if kind == VALUE_META && declared > value_bytes as u64 {
            return Err(PayloadError::Malformed("values longer than their chunk"));
        }
    }
    Ok(if kind == GROUP {
        count.max(declared)
    } else {
        count
    })
}

/// What one value of a column declares: a group's entry count, a value's byte length.
fn weight(kind: u32, value: u64) -> u64 {
    match kind {
        GROUP => value,
        VALUE_META => value >> 4,
        _ => 0,
    }
}

/// A cursor over bytes that never reads past them.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> Result<u8, PayloadError> {
        let (&b, rest) = self
            .bytes
            .split_first()
            .ok_or(PayloadError::Malformed("truncated"))?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], PayloadError> {
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or(PayloadError::Malformed("truncated"))?;
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn uleb(&mut self) -> Result<u64, PayloadError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(PayloadError::Malformed("LEB128 overflows"));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(PayloadError::Malformed("LEB128 overflows"))
    }

    fn sleb(&mut self) -> Result<i64, PayloadError> {
        let mut value: i64 = 0;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift >= 64 {
                return Err(PayloadError::Malformed("LEB128 overflows"));
            }
            value |= i64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    value |= -1 << shift;
                }
                return Ok(value);
            }
        }
    }

    fn length_prefixed(&mut self) -> Result<&'a [u8], PayloadError> {
        let len = self.uleb()?;
        self.take(len)
    }

    /// A column metadata block: a count, then (specification, length) pairs.
    fn columns(&mut self) -> Result<Vec<(u32, u64)>, PayloadError> {
        let n = self.uleb()?;
        let mut columns = Vec::new();
        for _ in 0..n {
            // Each pair consumes at least two bytes: bounded by the chunk.
            let spec = u32::try_from(self.uleb()?)
                .map_err(|_| PayloadError::Malformed("column specification"))?;
            columns.push((spec, self.uleb()?));
        }
        Ok(columns)
    }

    /// Skips one RLE value, returning it when it is an integer (0 for strings).
    fn value(&mut self, value: Value) -> Result<u64, PayloadError> {
        match value {
            Value::Unsigned => self.uleb(),
            Value::Signed => self.sleb().map(|_| 0),
            Value::Str => self.length_prefixed().map(|_| 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn sleb(v: i64, out: &mut Vec<u8>) {
        let mut v = v;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            let done = (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0);
            out.push(if done { b } else { b | 0x80 });
            if done {
                return;
            }
        }
    }

    /// A change chunk whose action column claims `ops` operations in a handful of bytes.
    fn claiming(ops: i64) -> Vec<u8> {
        let mut body = vec![0]; // no deps
        body.extend([1, 0xaa]); // actor
        body.extend([1, 1]); // seq, start op
        body.push(0); // time
        body.push(0); // message
        body.push(0); // other actors
        let mut action = Vec::new();
        sleb(ops, &mut action);
        uleb(1, &mut action);
        body.push(1); // one column
        uleb(4 << 4 | ULEB as u64, &mut body);
        uleb(action.len() as u64, &mut body);
        body.extend(action);
        chunk(CHUNK_CHANGE, &body)
    }

    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0; 4]);
        out.push(kind);
        uleb(body.len() as u64, &mut out);
        out.extend(body);
        out
    }

    #[test]
    fn an_operation_count_run_is_refused_without_walking_it() {
        let mut budget = Budget::new(PayloadLimits::DEFAULT);
        assert_eq!(
            budget.check(&claiming(1 << 60)),
            Err(PayloadError::TooManyOps { max: 2_000_000 })
        );
        let mut budget = Budget::new(PayloadLimits::DEFAULT);
        assert_eq!(budget.check(&claiming(1_000)).map(|c| c.ops), Ok(1_000));
    }

    #[test]
    fn the_budget_is_shared_by_a_frames_chunks() {
        let mut budget = Budget::new(PayloadLimits {
            max_inflated_bytes: 1 << 20,
            max_ops: 2_500,
        });
        assert!(budget.check(&claiming(1_000)).is_ok());
        assert!(budget.check(&claiming(1_000)).is_ok());
        assert!(
            budget
                .check(&claiming(1_000))
                .expect_err("over the budget")
                .is_limit()
        );
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_budget() {
        let zeros = vec![0u8; 8 << 20];
        let mut compressed = Vec::new();
        let mut encoder =
            flate2::write::DeflateEncoder::new(&mut compressed, flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, &zeros).expect("deflate");
        encoder.finish().expect("deflate");
        assert!(compressed.len() < 64 << 10);
        let mut budget = Budget::new(PayloadLimits {
            max_inflated_bytes: 1 << 20,
            max_ops: 1_000,
        });
        assert_eq!(
            budget.check(&chunk(CHUNK_COMPRESSED, &compressed)),
            Err(PayloadError::InflatesTooFar { max: 1 << 20 })
        );
    }

    #[test]
    fn malformed_and_foreign_chunks_are_typed() {
        let mut budget = Budget::new(PayloadLimits::DEFAULT);
        assert!(matches!(
            budget.check(b"not automerge"),
            Err(PayloadError::Malformed(_))
        ));
        assert_eq!(
            budget.check(&chunk(3, &[])),
            Err(PayloadError::UnsupportedChunk(3))
        );
        let mut truncated = claiming(10);
        truncated.pop();
        assert!(matches!(
            budget.check(&truncated),
            Err(PayloadError::Malformed(_))
        ));
    }

    #[test]
    fn leb128_reads_the_extremes() {
        let mut out = Vec::new();
        uleb(u64::MAX, &mut out);
        assert_eq!(Reader::new(&out).uleb(), Ok(u64::MAX));
        for v in [i64::MIN, -1, 0, 63, 64, i64::MAX] {
            let mut out = Vec::new();
            sleb(v, &mut out);
            assert_eq!(Reader::new(&out).sleb(), Ok(v), "{v}");
        }
        assert!(Reader::new(&[0xff; 11]).uleb().is_err());
    }
}
