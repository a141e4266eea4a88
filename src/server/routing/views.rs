//! What the dashboard shows of the Router: each open lane with its load and reservations, and
//! one resource with its holders and the waiting line in front of it.

use super::Router;
use uuid::Uuid;

/// An open lane as the Router holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneView {
    pub lane: u32,
    /// Unfinished tasks routed to it.
    pub load: u32,
    /// The resources it holds, each with whether only shared claims hold it.
    pub resources: Vec<(String, bool)>,
}

/// One lane's hold on a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderView {
    pub lane: u32,
    pub exclusive: u32,
    pub shared: u32,
    pub slot: u32,
}

/// A resource as the Router holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceView {
    pub holders: Vec<HolderView>,
    /// Tasks in the waiting line that claim it, in submit order.
    pub waiting: Vec<Uuid>,
}

impl<T> Router<T> {
    /// Every open lane, in order (one pass over the reservations).
    pub fn lane_views(&self) -> Vec<LaneView> {
        let mut held: std::collections::HashMap<u32, Vec<(String, bool)>> = Default::default();
        for (name, r) in &self.resources {
            for h in &r.holders {
                held.entry(h.lane)
                    .or_default()
                    .push((name.clone(), h.exclusive == 0));
            }
        }
        self.pool
            .open_lanes()
            .map(|lane| {
                let mut resources = held.remove(&lane).unwrap_or_default();
                resources.sort();
                LaneView {
                    lane,
                    load: self.pool.load(lane),
                    resources,
                }
            })
            .collect()
    }

    /// `name` (a plain resource name, without `shared:`).
    pub fn resource_view(&self, name: &str) -> ResourceView {
        let holders = self.resources.get(name).map_or_else(Vec::new, |r| {
            r.holders
                .iter()
                .map(|h| HolderView {
                    lane: h.lane,
                    exclusive: h.exclusive,
                    shared: h.shared,
                    slot: h.slot,
                })
                .collect()
        });
        let waiting = self.line.waiters_of(name).collect();
        ResourceView { holders, waiting }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_and_resources_show_what_is_held_and_who_waits() {
        let mut r: Router<()> = Router::new(2, 2);
        let (a, b, ab) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        r.submit(a, &["x".into()], ());
        r.submit(b, &["shared:y".into()], ());
        r.submit(ab, &["x".into(), "y".into()], ());
        let lanes = r.lane_views();
        assert_eq!(lanes.len(), 2);
        assert_eq!(lanes[0].resources, vec![("x".to_owned(), false)]);
        assert_eq!(lanes[0].load, 1);
        assert_eq!(lanes[1].resources, vec![("y".to_owned(), true)]);
        let x = r.resource_view("x");
        assert_eq!(
            x.holders,
            vec![HolderView {
                lane: 0,
                exclusive: 1,
                shared: 0,
                slot: 0
            }]
        );
        assert_eq!(x.waiting, vec![ab]);
        assert_eq!(r.resource_view("y").holders[0].shared, 1);
        assert_eq!(r.resource_view("nothing"), ResourceView::default());
    }
}
