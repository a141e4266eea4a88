//! [`Active`]: the running control plane's actors. The server owns it and sets them while this
//! process holds the leader lock; the HTTP API reads it to ask them about workers and lanes.

use super::{dispatcher::Dispatcher, supervisor::Supervisor};
use actix::Addr;
use std::sync::{Arc, RwLock};

type ActiveActors = (Addr<Dispatcher>, Addr<Supervisor>);

/// The running control plane's actors, for the HTTP API. `None` while not active.
#[derive(Clone, Default)]
pub struct Active {
    inner: Arc<RwLock<Option<ActiveActors>>>,
}

impl Active {
    pub fn get(&self) -> Option<(Addr<Dispatcher>, Addr<Supervisor>)> {
        self.inner.read().expect("active lock").clone()
    }

    /// Called by the server: `Some` once its control plane runs, `None` when it stops.
    pub fn set(&self, v: Option<(Addr<Dispatcher>, Addr<Supervisor>)>) {
        *self.inner.write().expect("active lock") = v;
    }
}
