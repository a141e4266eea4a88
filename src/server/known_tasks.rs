//! The task names the server accepts: its own registry's, those online workers offer, and those
//! workers offered to earlier control planes (the `task_names` table). Names are only learned,
//! never forgotten, and `learn` is the one way in; readers hold the read lock for a batch.

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock, RwLockReadGuard},
};

#[derive(Debug, Clone, Default)]
pub struct KnownTasks(Arc<RwLock<BTreeSet<String>>>);

impl KnownTasks {
    pub fn new(names: impl IntoIterator<Item = String>) -> KnownTasks {
        KnownTasks(Arc::new(RwLock::new(names.into_iter().collect())))
    }

    /// Adds `names`; returns those it did not know before.
    pub fn learn(&self, names: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut known = self.0.write().expect("task names lock");
        names
            .into_iter()
            .filter(|n| known.insert(n.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names().contains(name)
    }

    /// The names, read-locked while the guard lives.
    pub fn names(&self) -> RwLockReadGuard<'_, BTreeSet<String>> {
        self.0.read().expect("task names lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_learned_once() {
        let known = KnownTasks::new(["echo".to_owned()]);
        assert_eq!(
            known.learn(["echo", "resize", "resize"].map(String::from)),
            ["resize"]
        );
        assert!(known.contains("resize"));
        assert!(known.learn(["resize".to_owned()]).is_empty());
    }
}
