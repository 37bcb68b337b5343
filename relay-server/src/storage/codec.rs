//! What the SQL backends share: how values are stored (heads, priorities, device classes,
//! integers), and the epochs' ids and the receipts' key.

use syncline_protocol::messages::DeviceClass;
use syncline_protocol::{Collection, Hash, Heads, Priority};

use super::StorageError;
use crate::tenant::Tenant;

/// A fresh epoch id: 128 random bits, in hex.
pub(super) fn new_epoch_id() -> String {
    let mut bytes = [0u8; 16];
    // Without OS entropy, the clock still tells two openings apart.
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&now_ms().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh secret key from OS entropy.
///
/// # Panics
/// Without OS entropy: a relay cannot keep secrets then.
pub(super) fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("OS entropy for the relay's position key");
    key
}

/// Milliseconds since the Unix epoch (when an epoch started, for operators).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stored priority code of a row of `table` (none: never set).
pub(super) fn priority_from(
    table: &'static str,
    code: Option<i64>,
) -> Result<Option<Priority>, StorageError> {
    code.map(|c| {
        u8::try_from(c)
            .ok()
            .and_then(Priority::from_code)
            .ok_or_else(|| corrupt(table, format!("priority {c}")))
    })
    .transpose()
}

/// Heads as stored: their hashes, concatenated.
pub(super) fn heads_to_bytes(heads: &Heads) -> Vec<u8> {
    heads.as_slice().iter().flat_map(|h| h.0).collect()
}

/// Stored heads back.
pub(super) fn heads_from_bytes(bytes: &[u8]) -> Result<Heads, StorageError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(corrupt(
            "documents",
            format!("heads of {} bytes", bytes.len()),
        ));
    }
    Ok(Heads::new(
        bytes
            .chunks_exact(32)
            .map(|c| Hash(c.try_into().expect("chunks_exact yields 32 bytes")))
            .collect(),
    ))
}

/// [`StorageError::Corrupt`] for a row of `table`.
pub(super) fn corrupt(table: &'static str, reason: String) -> StorageError {
    StorageError::Corrupt { table, reason }
}

/// A count or time as SQL stores it (saturating).
pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count or time back (a negative one is 0).
pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A device class as stored.
pub(super) fn class_code(class: DeviceClass) -> i16 {
    match class {
        DeviceClass::Phone => 0,
        DeviceClass::Tablet => 1,
        DeviceClass::Desktop => 2,
        DeviceClass::Server => 3,
    }
}

/// A stored device class back.
pub(super) fn class_from(code: i64) -> Result<DeviceClass, StorageError> {
    Ok(match code {
        0 => DeviceClass::Phone,
        1 => DeviceClass::Tablet,
        2 => DeviceClass::Desktop,
        3 => DeviceClass::Server,
        _ => return Err(corrupt("devices", format!("device class {code}"))),
    })
}

/// A row of the `collections` table: its tenant and collection names checked.
pub(super) fn collection_row(
    tenant: &str,
    collection: String,
    seq: i64,
) -> Result<(Tenant, Collection, u64), StorageError> {
    let tenant = Tenant::new(tenant).map_err(|e| corrupt("collections", e.to_string()))?;
    let collection =
        Collection::new(collection).map_err(|e| corrupt("collections", e.to_string()))?;
    Ok((tenant, collection, to_u64(seq)))
}
