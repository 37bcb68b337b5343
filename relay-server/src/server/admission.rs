//! Caps on open connections: in all (sockets, counted from `accept`, before any byte is read),
//! per device and per tenant (WebSockets, counted once the token is verified). A connection
//! holds a [`Slot`] for as long as it is open; dropping the slot frees it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use syncline_protocol::{DeviceId, TokenBucket};

use crate::tenant::Tenant;

/// How many connections may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Sockets in all (HTTP requests in progress and WebSockets).
    pub total: usize,
    /// WebSockets per device (one token's device).
    pub per_device: usize,
    /// WebSockets per tenant.
    pub per_tenant: usize,
}

impl ConnectionCaps {
    /// 10,000 sockets, 4 per device, 5,000 per tenant.
    pub const DEFAULT: Self = Self {
        total: 10_000,
        per_device: 4,
        per_tenant: 5_000,
    };
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The relay has [`ConnectionCaps::total`] sockets open.
    #[error("the relay has its maximum of connections open")]
    Total,
    /// The device has [`ConnectionCaps::per_device`] connections open.
    #[error("this device has its maximum of connections open")]
    Device,
    /// The tenant has [`ConnectionCaps::per_tenant`] connections open.
    #[error("this tenant has its maximum of connections open")]
    Tenant,
    /// The device opened connections faster than [`SESSIONS_PER_S`] (bursts of
    /// [`SESSIONS_BURST`]).
    #[error("this device connects too often; retry later")]
    Rate,
}

/// New WebSockets per second one device may open, on average: a device that reconnects with
/// backoff needs far fewer; a client reconnecting in a loop (each connection gets fresh
/// per-connection allowances) is held to it.
pub const SESSIONS_PER_S: u64 = 1;

/// New WebSockets one device may open at once, after a quiet period.
pub const SESSIONS_BURST: u64 = 10;

impl Refused {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Device => "device",
            Self::Tenant => "tenant",
            Self::Rate => "rate",
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    sockets: usize,
    devices: HashMap<(Tenant, DeviceId), usize>,
    tenants: HashMap<Tenant, usize>,
    /// Each recently connecting device's allowance of new connections.
    attempts: HashMap<(Tenant, DeviceId), TokenBucket>,
}

/// Devices whose connection allowance is remembered before full ones are forgotten.
const REMEMBERED: usize = 100_000;

/// The open connections, shared by the accept loop and the upgrade handler.
#[derive(Debug, Clone)]
pub struct Admission {
    caps: ConnectionCaps,
    open: Arc<Mutex<Open>>,
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<Open>>,
    kind: SlotKind,
}

#[derive(Debug)]
enum SlotKind {
    Socket,
    Session(Tenant, DeviceId),
}

impl Admission {
    /// Admission under `caps`.
    pub fn new(caps: ConnectionCaps) -> Self {
        Self {
            caps,
            open: Arc::default(),
        }
    }

    /// A place for a newly accepted socket.
    ///
    /// # Errors
    /// [`Refused::Total`] at the cap.
    pub fn socket(&self) -> Result<Slot, Refused> {
        let mut open = self.open.lock();
        if open.sockets >= self.caps.total {
            return Err(Refused::Total);
        }
        open.sockets += 1;
        Ok(Slot {
            open: Arc::clone(&self.open),
            kind: SlotKind::Socket,
        })
    }

    /// A place for an authenticated WebSocket of `device` in `tenant`.
    ///
    /// # Errors
    /// [`Refused::Device`] or [`Refused::Tenant`] at their caps.
    pub fn session(&self, tenant: &Tenant, device: DeviceId, now_ms: u64) -> Result<Slot, Refused> {
        let mut open = self.open.lock();
        let key = (tenant.clone(), device);
        if open.attempts.len() >= REMEMBERED {
            // Forget the devices that have their whole allowance back (taking it all succeeds
            // only for those; they are dropped, and start full again when they return).
            open.attempts
                .retain(|_, bucket| bucket.take(SESSIONS_BURST, now_ms).is_err());
        }
        let allowed = open
            .attempts
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::with_burst(SESSIONS_PER_S, SESSIONS_BURST, now_ms))
            .take(1, now_ms);
        if allowed.is_err() {
            return Err(Refused::Rate);
        }
        if open.devices.get(&key).copied().unwrap_or(0) >= self.caps.per_device {
            return Err(Refused::Device);
        }
        if open.tenants.get(tenant).copied().unwrap_or(0) >= self.caps.per_tenant {
            return Err(Refused::Tenant);
        }
        *open.devices.entry(key).or_default() += 1;
        *open.tenants.entry(tenant.clone()).or_default() += 1;
        Ok(Slot {
            open: Arc::clone(&self.open),
            kind: SlotKind::Session(tenant.clone(), device),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        match &self.kind {
            SlotKind::Socket => open.sockets -= 1,
            SlotKind::Session(tenant, device) => {
                let key = (tenant.clone(), *device);
                if let Some(n) = open.devices.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        open.devices.remove(&key);
                    }
                }
                if let Some(n) = open.tenants.get_mut(tenant) {
                    *n -= 1;
                    if *n == 0 {
                        open.tenants.remove(tenant);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_dropped_slots_free_their_place() {
        let admission = Admission::new(ConnectionCaps {
            total: 2,
            per_device: 1,
            per_tenant: 2,
        });
        let (a, b) = (
            admission.socket().expect("1"),
            admission.socket().expect("2"),
        );
        assert_eq!(admission.socket().err(), Some(Refused::Total));
        drop(a);
        let _c = admission.socket().expect("freed");
        drop(b);
        let acme = Tenant::new("acme").expect("valid");
        let one = admission
            .session(&acme, DeviceId::from_bytes([1; 16]), 0)
            .expect("first");
        assert_eq!(
            admission
                .session(&acme, DeviceId::from_bytes([1; 16]), 0)
                .err(),
            Some(Refused::Device)
        );
        let _two = admission
            .session(&acme, DeviceId::from_bytes([2; 16]), 0)
            .expect("another device");
        assert_eq!(
            admission
                .session(&acme, DeviceId::from_bytes([3; 16]), 0)
                .err(),
            Some(Refused::Tenant)
        );
        drop(one);
        assert!(
            admission
                .session(&acme, DeviceId::from_bytes([1; 16]), 0)
                .is_ok()
        );
    }

    #[test]
    fn a_device_reconnecting_in_a_loop_is_held_to_the_rate() {
        let admission = Admission::new(ConnectionCaps::DEFAULT);
        let acme = Tenant::new("acme").expect("valid");
        let device = DeviceId::from_bytes([1; 16]);
        let opened = (0..100)
            .filter(|_| admission.session(&acme, device, 0).is_ok())
            .count();
        assert_eq!(opened as u64, SESSIONS_BURST);
        assert_eq!(
            admission.session(&acme, device, 500).err(),
            Some(Refused::Rate)
        );
        assert!(
            admission.session(&acme, device, 1_000).is_ok(),
            "a second later"
        );
    }
}
