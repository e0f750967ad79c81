//! One async task at a time per inode, for work that must not run twice at once: listing a
//! directory (the second lookup waits and then finds the fresh listing instead of sending its
//! own LIST) and persisting a node's metadata (a rename must not copy the object while its
//! metadata is being copied onto it). Entries leave the map when nobody holds or awaits them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::lock;
use super::namespace::Ino;

#[derive(Default)]
pub(super) struct Gates {
    gates: Arc<Mutex<HashMap<Ino, Arc<AsyncMutex<()>>>>>,
}

pub(super) struct GateGuard {
    ino: Ino,
    guard: Option<OwnedMutexGuard<()>>,
    gates: Arc<Mutex<HashMap<Ino, Arc<AsyncMutex<()>>>>>,
}

impl Gates {
    pub async fn enter(&self, ino: Ino) -> GateGuard {
        let gate = lock(&self.gates).entry(ino).or_default().clone();
        GateGuard {
            ino,
            guard: Some(gate.lock_owned().await),
            gates: self.gates.clone(),
        }
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut gates = lock(&self.gates);
        if let Some(guard) = self.guard.take() {
            // Two references: the map's and this guard's. More means someone is waiting.
            let idle = Arc::strong_count(OwnedMutexGuard::mutex(&guard)) <= 2;
            drop(guard);
            if idle {
                gates.remove(&self.ino);
            }
        }
    }
}
