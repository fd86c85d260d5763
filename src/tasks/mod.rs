//! The work a node does for the cluster beyond answering one call: the GLOBAL sync, the
//! owner-failure reconciler, the handoff passes, and the handoff receiver.
//!
//! Each holds the [`Router`](crate::router::Router): it asks it who owns a key, sends through its
//! peer clients, and reads the store through its evaluator. The state each works on (`global`,
//! `owner_failure`, `handoff`) is consulted by the router and the evaluator while a call is
//! answered, so it lives below them; the tasks that drive that state live here, above the router,
//! so the dependencies between modules point one way. `server::start` spawns every task and
//! `RunningServer::shutdown` joins it.

pub mod global_sync;
pub mod handoff;
pub mod handoff_service;
pub mod owner_failure;
