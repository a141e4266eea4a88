//! Whether the job-state writer is stalled. Worker heartbeats travel on the events queue
//! behind job events, and the Callback takes no more events while it waits for a write. So a
//! database stall (a lock, a slow statement) silences every worker at once, though none has
//! failed. The Callback marks each write with a guard; the Supervisor judges liveness only
//! while writes flow (`supervisor::registry::judge`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// When the Callback's write in progress began, if one is.
#[derive(Clone, Default)]
pub struct WriteClock(Arc<Mutex<Option<Instant>>>);

/// A write in progress; dropping it ends it.
pub struct Writing(WriteClock);

impl WriteClock {
    /// Marks a write as begun until the guard is dropped.
    pub fn begin(&self) -> Writing {
        *self.0.lock().expect("write clock lock") = Some(Instant::now());
        Writing(self.clone())
    }

    /// How long the write in progress has taken so far.
    pub fn stalled_for(&self) -> Option<Duration> {
        self.0
            .lock()
            .expect("write clock lock")
            .map(|since| since.elapsed())
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        *self.0 .0.lock().expect("write clock lock") = None;
    }
}
