//! The fault hook of a node's transport: the peers whose Raft messages it drops.
//!
//! A partition is made by telling every node on each side to block the other side, so the
//! cut holds in both directions although each node only drops what it receives. Off unless
//! the node runs with `--enable-fault-injection`: it lets anyone who reaches the port cut the
//! node off.

use std::collections::BTreeSet;
use std::sync::RwLock;

use super::error::RequestError;
use crate::raft::NodeId;

#[derive(Debug, Default)]
pub struct FaultHook {
    enabled: bool,
    blocked: RwLock<BTreeSet<NodeId>>,
}

impl FaultHook {
    pub fn new(enabled: bool) -> FaultHook {
        FaultHook {
            enabled,
            blocked: Default::default(),
        }
    }

    pub fn is_blocked(&self, id: NodeId) -> bool {
        self.blocked.read().expect("lock").contains(&id)
    }

    /// Replaces the blocked set; refused when fault injection is off.
    pub fn set(&self, blocked: impl IntoIterator<Item = NodeId>) -> Result<(), RequestError> {
        if !self.enabled {
            return Err(RequestError::FaultInjectionDisabled);
        }
        *self.blocked.write().expect("lock") = blocked.into_iter().collect();
        Ok(())
    }
}
