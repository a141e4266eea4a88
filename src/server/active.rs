//! [`Active`]: the running control plane's actors. The server owns it and sets them while this
//! process holds the leader lock; the HTTP API reads it to ask them about workers and lanes,
//! and `/healthz` reads from it where this server stands ([`Standing`]).

use super::{dispatcher::Dispatcher, supervisor::Supervisor};
use actix::Addr;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, RwLock,
};

type ActiveActors = (Addr<Dispatcher>, Addr<Supervisor>);

/// Where a server stands, for `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not yet known to be the active server or a standby, or building its control plane: a
    /// submit published now may find no exchange, or nobody consuming it.
    Starting,
    /// Another server holds the lease and runs the control plane; this one waits.
    Standby,
    /// Its control plane runs: the topology is declared and the Dispatcher consumes submits.
    Active,
}

/// The running control plane's actors, for the HTTP API. `None` while not active.
#[derive(Clone, Default)]
pub struct Active {
    inner: Arc<RwLock<Option<ActiveActors>>>,
    /// Another server held the lease at this server's latest attempt to take it.
    standby: Arc<AtomicBool>,
}

impl Active {
    pub fn get(&self) -> Option<(Addr<Dispatcher>, Addr<Supervisor>)> {
        self.inner.read().expect("active lock").clone()
    }

    /// Called by the server: `Some` once its control plane runs, `None` when it stops.
    pub fn set(&self, v: Option<(Addr<Dispatcher>, Addr<Supervisor>)>) {
        *self.inner.write().expect("active lock") = v;
    }

    /// Called while the server waits for the lease: whether another server holds it.
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    /// Where this server stands now.
    pub fn standing(&self) -> Standing {
        if self.get().is_some() {
            Standing::Active
        } else if self.standby.load(Ordering::Relaxed) {
            Standing::Standby
        } else {
            Standing::Starting
        }
    }
}
