//! Admission control: a bound on the calls executing at once on a node, with a separate pool for
//! calls from other nodes (see [`super::classify`]).
//!
//! Beyond the bound a call is refused at once (load shedding) rather than queued: a queue in front
//! of a saturated node only adds latency until every caller times out, while an immediate
//! `RESOURCE_EXHAUSTED` lets clients back off or try another node.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::CallError;

/// The concurrency bound shared by every surface of a node. Cloning shares the bound.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
}

/// One admitted call; its slot is free again when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `max` calls at once (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Admits one call, or refuses it at once with [`CallError::Overloaded`] when `max` calls are
    /// already executing. Never waits.
    pub fn try_admit(&self) -> Result<Admitted, CallError> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map(|slot| Admitted { _slot: slot })
            .map_err(|_| CallError::Overloaded { max: self.max })
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The calls executing now.
    pub fn in_use(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

/// The two pools of a node: clients' calls and other nodes' calls. Cloning shares both.
#[derive(Debug, Clone)]
pub struct AdmissionPools {
    /// Calls from clients (`GUBER_MAX_CONCURRENT_REQUESTS`).
    pub clients: Admission,
    /// Calls from other nodes (`GUBER_MAX_CONCURRENT_PEER_REQUESTS`).
    pub peers: Admission,
}

impl AdmissionPools {
    /// At most `clients` client calls and `peers` peer calls at once.
    pub fn new(clients: usize, peers: usize) -> Self {
        Self {
            clients: Admission::new(clients),
            peers: Admission::new(peers),
        }
    }

    /// Admits a call of `class`: exempt calls take no slot (`Ok(None)`).
    pub fn try_admit(
        &self,
        class: super::classify::CallClass,
    ) -> Result<Option<Admitted>, CallError> {
        use super::classify::CallClass;
        match class {
            CallClass::Exempt => Ok(None),
            CallClass::Peer => self.peers.try_admit().map(Some),
            CallClass::Client => self.clients.try_admit().map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::classify::CallClass;

    #[test]
    fn a_full_client_pool_leaves_peers_and_probes_their_own_room() {
        let pools = AdmissionPools::new(1, 1);
        let _client = pools
            .try_admit(CallClass::Client)
            .expect("room")
            .expect("a slot");
        assert!(pools.try_admit(CallClass::Client).is_err());
        let _peer = pools
            .try_admit(CallClass::Peer)
            .expect("the peer pool is separate");
        assert!(pools.try_admit(CallClass::Peer).is_err());
        assert!(matches!(pools.try_admit(CallClass::Exempt), Ok(None)));
    }

    #[test]
    fn refuses_beyond_the_bound_and_frees_slots_on_drop() {
        let admission = Admission::new(2);
        let first = admission.try_admit().expect("first call fits");
        let second = admission.try_admit().expect("second call fits");
        assert_eq!(admission.in_use(), 2);
        assert_eq!(
            admission.try_admit().map(|_| ()),
            Err(CallError::Overloaded { max: 2 })
        );
        drop(first);
        assert_eq!(admission.in_use(), 1);
        let _third = admission.try_admit().expect("a freed slot is reused");
        drop(second);
        assert_eq!(admission.in_use(), 1);
    }

    #[test]
    fn a_zero_bound_still_admits_one_call() {
        let admission = Admission::new(0);
        assert_eq!(admission.max(), 1);
        assert!(admission.try_admit().is_ok());
    }
}
