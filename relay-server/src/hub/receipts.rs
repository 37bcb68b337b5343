//! Receipts for the positions the relay shows a device: an HMAC-SHA256 (truncated to 128
//! bits, in hex) over the tenant, the device, the collection, the data epoch and the sequence
//! number, keyed by [`crate::storage::Storage::position_key`].
//!
//! A device keeps each receipt with its position and returns it in `Reconcile`. A relay
//! restored from an older backup holds the same key (it lives with the data), so it can tell a
//! position its lost original really showed this device from one a device made up: only then
//! does it let the device send back changes written by other devices that it lost (otherwise
//! refused, so that "who wrote what" cannot be forged).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use syncline_protocol::{Collection, DeviceId};

use crate::tenant::Tenant;

/// Bytes of the MAC kept in a receipt.
const RECEIPT_BYTES: usize = 16;

/// What a receipt vouches for.
pub(super) struct Position<'a> {
    pub tenant: &'a Tenant,
    pub device: &'a DeviceId,
    pub collection: &'a Collection,
    pub epoch: &'a str,
    pub seq: u64,
}

fn mac(key: &[u8; 32], p: &Position<'_>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    // Length-prefixed, so no two positions share an input.
    for field in [
        p.tenant.as_str().as_bytes(),
        p.device.as_bytes().as_slice(),
        p.collection.as_str().as_bytes(),
        p.epoch.as_bytes(),
    ] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    mac.update(&p.seq.to_be_bytes());
    mac
}

/// The receipt for `position`.
pub(super) fn receipt(key: &[u8; 32], position: &Position<'_>) -> String {
    let tag = mac(key, position).finalize().into_bytes();
    tag[..RECEIPT_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True if `receipt` is the receipt for `position` (compared in constant time).
pub(super) fn valid(key: &[u8; 32], position: &Position<'_>, receipt: &str) -> bool {
    let Some(tag) = from_hex(receipt) else {
        return false;
    };
    tag.len() == RECEIPT_BYTES && mac(key, position).verify_truncated_left(&tag).is_ok()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_holds_for_its_position_only() {
        let (key, other_key) = ([7u8; 32], [8u8; 32]);
        let tenant = Tenant::new("t").expect("tenant");
        let (device, other_device) = (DeviceId::from_bytes([1; 16]), DeviceId::from_bytes([2; 16]));
        let collection = Collection::new("todos").expect("collection");
        let at = |device, seq, epoch| Position {
            tenant: &tenant,
            device,
            collection: &collection,
            epoch,
            seq,
        };
        let r = receipt(&key, &at(&device, 5, "e1"));
        assert_eq!(r.len(), 2 * RECEIPT_BYTES);
        assert!(valid(&key, &at(&device, 5, "e1"), &r));
        assert!(!valid(&other_key, &at(&device, 5, "e1"), &r));
        assert!(!valid(&key, &at(&device, 6, "e1"), &r));
        assert!(!valid(&key, &at(&device, 5, "e2"), &r));
        assert!(!valid(&key, &at(&other_device, 5, "e1"), &r));
        assert!(!valid(&key, &at(&device, 5, "e1"), &r[..30]));
        assert!(!valid(&key, &at(&device, 5, "e1"), "zz"));
        assert!(!valid(&key, &at(&device, 5, "e1"), "é1"));
    }
}
