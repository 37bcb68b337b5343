//! The capability policy: whether one document goes to one device now or is announced and held
//! back, from the device's profile and subscription (DESIGN §3). Pure decisions; the planner
//! and the fan-out apply them.
//!
//! A document is held back when:
//! - its collection is subscribed `on_demand` and the device does not hold its content
//!   ([`DeferReason::OnDemand`]);
//! - the device is on a metered network and the collection's priority is `low`
//!   ([`DeferReason::LowPriority`]);
//! - the device is on a metered network and the message that would carry it is larger than
//!   the threshold: the device's own, else the relay's ([`DeferReason::Metered`]).
//!
//! A document the device asked for (`Fetch`) is never held back.

use syncline_protocol::messages::{CollectionSubscription, DeferReason, Profile, SyncMode};

/// What the policy needs to know of a device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Device<'a> {
    /// Its profile (none before `Hello`: nothing is held back).
    pub profile: Option<&'a Profile>,
    /// The relay's metered-network threshold, used when the profile sets none.
    pub relay_threshold: u64,
}

impl Device<'_> {
    fn metered(&self) -> bool {
        self.profile.is_some_and(|p| p.metered)
    }

    /// The size above which a message waits for an unmetered network, if the network is
    /// metered.
    pub fn metered_threshold(&self) -> Option<u64> {
        self.metered().then(|| {
            self.profile
                .and_then(|p| p.metered_max_doc_bytes)
                .unwrap_or(self.relay_threshold)
        })
    }

    /// True if the device wants changes pushed as they happen (not a periodic device).
    pub fn realtime(&self) -> bool {
        self.profile.is_none_or(|p| p.realtime)
    }

    /// Why a document of collection `sub` (none: outside the subscription, a document the
    /// device fetched or wrote) is held back before its message is even made; `held` says
    /// whether the device holds its content.
    pub fn hold_back(
        &self,
        sub: Option<&CollectionSubscription>,
        held: bool,
    ) -> Option<DeferReason> {
        let sub = sub?;
        if sub.mode == SyncMode::OnDemand && !held {
            return Some(DeferReason::OnDemand);
        }
        if self.metered() && sub.priority == syncline_protocol::Priority::Low {
            return Some(DeferReason::LowPriority);
        }
        None
    }

    /// Why a message of `bytes` is held back (too large for a metered network).
    pub fn hold_back_bytes(&self, bytes: u64) -> Option<DeferReason> {
        self.metered_threshold()
            .filter(|threshold| bytes > *threshold)
            .map(|_| DeferReason::Metered)
    }

    /// True if a document held back for `reason` may go now.
    pub fn releases(&self, reason: Option<DeferReason>) -> bool {
        match reason {
            Some(DeferReason::Metered | DeferReason::LowPriority) => !self.metered(),
            Some(DeferReason::OnDemand | DeferReason::StorageBudget) | None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncline_protocol::messages::DeviceClass;
    use syncline_protocol::{Collection, Priority};

    fn profile(metered: bool, threshold: Option<u64>) -> Profile {
        Profile {
            class: DeviceClass::Phone,
            storage_budget_bytes: None,
            download_bytes_per_s: None,
            upload_bytes_per_s: None,
            metered,
            realtime: true,
            metered_max_doc_bytes: threshold,
        }
    }

    fn sub(priority: Priority, mode: SyncMode) -> CollectionSubscription {
        CollectionSubscription {
            collection: Collection::new("c").expect("valid"),
            priority,
            mode,
        }
    }

    #[test]
    fn on_demand_low_priority_and_size_rules() {
        let unmetered = profile(false, None);
        let metered = profile(true, None);
        let own = profile(true, Some(10));
        let at = |p| Device {
            profile: Some(p),
            relay_threshold: 1000,
        };
        let eager_low = sub(Priority::Low, SyncMode::Eager);
        let on_demand = sub(Priority::High, SyncMode::OnDemand);
        assert_eq!(at(&unmetered).hold_back(Some(&eager_low), false), None);
        assert_eq!(
            at(&metered).hold_back(Some(&eager_low), true),
            Some(DeferReason::LowPriority)
        );
        assert_eq!(
            at(&unmetered).hold_back(Some(&on_demand), false),
            Some(DeferReason::OnDemand)
        );
        assert_eq!(at(&unmetered).hold_back(Some(&on_demand), true), None);
        assert_eq!(at(&metered).hold_back(None, false), None);
        assert_eq!(at(&unmetered).hold_back_bytes(u64::MAX), None);
        assert_eq!(at(&metered).hold_back_bytes(1000), None);
        assert_eq!(
            at(&metered).hold_back_bytes(1001),
            Some(DeferReason::Metered)
        );
        assert_eq!(at(&own).hold_back_bytes(11), Some(DeferReason::Metered));
        assert!(at(&unmetered).releases(Some(DeferReason::Metered)));
        assert!(!at(&metered).releases(Some(DeferReason::Metered)));
        assert!(!at(&unmetered).releases(Some(DeferReason::OnDemand)));
    }
}
