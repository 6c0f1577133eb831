//! The immutable slot table: which master serves each of the 16384 slots.
//!
//! A table is built whole from one `CLUSTER NODES` view (merged with the previous table so
//! that an older view never overwrites a newer one) and published by swapping an `Arc`;
//! requests read it without locks.

use std::sync::Arc;

use crate::slot::SLOT_COUNT;
use crate::topology::nodes::NodeEntry;

/// Marks a slot no master serves.
const UNASSIGNED: u16 = u16::MAX;

/// A master node of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// `host:port` to dial.
    pub addr: Arc<str>,
    /// Node id, empty when learned from a MOVED redirect only.
    pub id: String,
    /// The master's config epoch when the view was taken; decides between conflicting views.
    pub config_epoch: u64,
    /// Replicas' `host:port`, for later read routing and for refresh candidates.
    pub replicas: Vec<Arc<str>>,
    /// Flagged `fail` or `fail?` by the node that gave the view.
    pub failing: bool,
}

/// Slot ownership at one moment.
#[derive(Debug, Clone)]
pub struct SlotTable {
    /// Increases with every published table; shown in INFO.
    pub generation: u64,
    pub masters: Vec<Master>,
    /// Index into `masters` per slot, or `UNASSIGNED`.
    slots: Box<[u16]>,
    /// Config epoch of the owner when each slot was assigned, to refuse older views.
    epochs: Box<[u64]>,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            generation: 0,
            masters: Vec::new(),
            slots: vec![UNASSIGNED; SLOT_COUNT].into_boxed_slice(),
            epochs: vec![0; SLOT_COUNT].into_boxed_slice(),
        }
    }
}

impl SlotTable {
    /// A table in which one standalone server serves every slot.
    pub fn single(addr: &str) -> SlotTable {
        let mut t = SlotTable {
            generation: 1,
            ..SlotTable::default()
        };
        t.master_index(addr, "", 0);
        t.slots.fill(0);
        t
    }

    /// The master serving `slot`, if any.
    pub fn master_for(&self, slot: u16) -> Option<&Master> {
        let i = *self.slots.get(slot as usize)?;
        self.masters.get(i as usize)
    }

    /// A master picked by `hint` (e.g. a client id), for commands without keys: the owner
    /// of slot `hint % 16384` when it has one, so the choice follows the slot distribution.
    /// A master for a keyless request: `hint` (a rotating counter) scattered over the
    /// slots, so each master takes keyless load in proportion to the slots it serves.
    pub fn any_master(&self, hint: u64) -> Option<&Master> {
        let scattered = hint.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        self.master_for((scattered % SLOT_COUNT as u64) as u16)
            .or_else(|| self.masters.iter().find(|m| !m.failing))
            .or_else(|| self.masters.first())
    }

    /// The one master classic pub/sub uses (`PUBLISH` and every `SUBSCRIBE` connection):
    /// the owner of slot 0, which moves with slot 0 when that master fails over.
    pub fn pubsub_home(&self) -> Option<&Master> {
        self.master_for(0)
            .or_else(|| self.masters.iter().find(|m| !m.failing))
            .or_else(|| self.masters.first())
    }

    /// How many slots have a master.
    pub fn assigned_slots(&self) -> usize {
        self.slots.iter().filter(|&&s| s != UNASSIGNED).count()
    }

    /// Slots served by each master, in `masters` order.
    pub fn slots_per_master(&self) -> Vec<usize> {
        let mut counts = vec![0; self.masters.len()];
        for &s in self.slots.iter() {
            if let Some(c) = counts.get_mut(s as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Whether every slot has the same master address in both tables.
    pub fn same_owners(&self, other: &SlotTable) -> bool {
        (0..SLOT_COUNT).all(|s| {
            self.master_for(s as u16).map(|m| &m.addr)
                == other.master_for(s as u16).map(|m| &m.addr)
        })
    }

    /// The masters that serve at least one slot (those that hold keys).
    pub fn serving_masters(&self) -> Vec<Arc<str>> {
        self.slots_per_master()
            .iter()
            .zip(&self.masters)
            .filter(|(n, _)| **n > 0)
            .map(|(_, m)| m.addr.clone())
            .collect()
    }

    /// Every address worth asking for the topology: masters first, then replicas.
    pub fn known_addrs(&self) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self.masters.iter().map(|m| m.addr.clone()).collect();
        v.extend(self.masters.iter().flat_map(|m| m.replicas.iter().cloned()));
        v
    }

    /// Builds the next table from a `CLUSTER NODES` view.
    ///
    /// Per slot, the view wins unless this table holds the slot with a higher config epoch
    /// (the view is older than what we know), or the view leaves the slot unassigned while
    /// we know an owner (a node that has not caught up yet). The result has `generation`
    /// one above this table's.
    pub fn merge_view(&self, view: &[NodeEntry]) -> SlotTable {
        let mut next = SlotTable {
            generation: self.generation + 1,
            ..SlotTable::default()
        };
        for n in view {
            let Some(addr) = &n.addr else { continue };
            if !n.flags.master || n.flags.handshake {
                continue;
            }
            let idx = next.master_index(addr, &n.id, n.config_epoch);
            next.masters[idx].failing = n.flags.fail || n.flags.pfail;
            for &(a, b) in &n.slots {
                for s in a..=b {
                    next.slots[s as usize] = idx as u16;
                    next.epochs[s as usize] = n.config_epoch;
                }
            }
        }
        for n in view {
            let (Some(addr), Some(master_id)) = (&n.addr, &n.master_id) else {
                continue;
            };
            if n.flags.fail || n.flags.handshake {
                continue;
            }
            if let Some(m) = next.masters.iter_mut().find(|m| &m.id == master_id) {
                m.replicas.push(Arc::from(addr.as_str()));
            }
        }
        for s in 0..SLOT_COUNT {
            let Some(old) = self.master_for(s as u16) else {
                continue;
            };
            let keep_old = next.slots[s] == UNASSIGNED || self.epochs[s] > next.epochs[s];
            if keep_old {
                let idx = next.master_index(&old.addr, &old.id, old.config_epoch);
                next.slots[s] = idx as u16;
                next.epochs[s] = self.epochs[s];
            }
        }
        next
    }

    /// A copy with `slot` moved to `addr`, as a MOVED redirect tells. The slot keeps its
    /// epoch, so the next full view decides.
    pub fn with_moved(&self, slot: u16, addr: &str) -> SlotTable {
        let mut next = self.clone();
        next.generation += 1;
        let epoch = next
            .masters
            .iter()
            .find(|m| &*m.addr == addr)
            .map_or(0, |m| m.config_epoch);
        let idx = next.master_index(addr, "", epoch);
        next.slots[slot as usize] = idx as u16;
        next
    }

    /// Whether two tables route every slot to the same address (generation aside).
    pub fn same_routing(&self, other: &SlotTable) -> bool {
        (0..SLOT_COUNT).all(|s| {
            self.master_for(s as u16).map(|m| &m.addr)
                == other.master_for(s as u16).map(|m| &m.addr)
        }) && self.masters.len() == other.masters.len()
            && self.masters.iter().zip(&other.masters).all(|(a, b)| a == b)
    }

    fn master_index(&mut self, addr: &str, id: &str, config_epoch: u64) -> usize {
        if let Some(i) = self.masters.iter().position(|m| &*m.addr == addr) {
            return i;
        }
        self.masters.push(Master {
            addr: Arc::from(addr),
            id: id.to_string(),
            config_epoch,
            replicas: Vec::new(),
            failing: false,
        });
        self.masters.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::nodes::parse_nodes;

    fn view(text: &str) -> Vec<NodeEntry> {
        let (nodes, errors) = parse_nodes(text, "127.0.0.1");
        assert!(errors.is_empty(), "{errors:?}");
        nodes
    }

    const THREE: &str = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383
d 127.0.0.1:7003@17003 slave a 0 0 1 connected
";

    #[test]
    fn builds_from_a_view() {
        let t = SlotTable::default().merge_view(&view(THREE));
        assert_eq!(t.generation, 1);
        assert_eq!(&*t.master_for(0).unwrap().addr, "127.0.0.1:7000");
        assert_eq!(&*t.master_for(5461).unwrap().addr, "127.0.0.1:7001");
        assert_eq!(&*t.master_for(16383).unwrap().addr, "127.0.0.1:7002");
        assert_eq!(t.assigned_slots(), SLOT_COUNT);
        assert_eq!(t.master_for(0).unwrap().replicas.len(), 1);
        assert_eq!(t.slots_per_master(), vec![5461, 5462, 5461]);
    }

    #[test]
    fn unassigned_slots_stay_unassigned() {
        let t = SlotTable::default().merge_view(&view(
            "a 127.0.0.1:7000@17000 master - 0 0 1 connected 0-99",
        ));
        assert!(t.master_for(99).is_some());
        assert!(t.master_for(100).is_none());
        assert_eq!(t.assigned_slots(), 100);
    }

    #[test]
    fn an_older_view_does_not_overwrite_a_newer_one() {
        // Slot 0-99 moved to c, whose epoch rose to 4.
        let newer = "\
a 127.0.0.1:7000@17000 master - 0 0 1 connected 100-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7002@17002 master - 0 0 4 connected 0-99 10923-16383
";
        let t = SlotTable::default().merge_view(&view(newer));
        assert_eq!(&*t.master_for(0).unwrap().addr, "127.0.0.1:7002");
        // A node that has not heard of the move still says a owns 0-99 at epoch 1.
        let t2 = t.merge_view(&view(THREE));
        assert_eq!(&*t2.master_for(0).unwrap().addr, "127.0.0.1:7002");
        assert_eq!(&*t2.master_for(100).unwrap().addr, "127.0.0.1:7000");
        // A failover (higher epoch) is taken.
        let failover = "\
e 127.0.0.1:7004@17004 master - 0 0 9 connected 0-99 10923-16383
a 127.0.0.1:7000@17000 master - 0 0 1 connected 100-5460
b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7002@17002 master,fail - 0 0 4 disconnected
";
        let t3 = t2.merge_view(&view(failover));
        assert_eq!(&*t3.master_for(0).unwrap().addr, "127.0.0.1:7004");
        assert_eq!(&*t3.master_for(16383).unwrap().addr, "127.0.0.1:7004");
    }

    #[test]
    fn a_view_missing_slots_keeps_known_owners() {
        let t = SlotTable::default().merge_view(&view(THREE));
        let lonely = "x 127.0.0.1:7009@17009 myself,master - 0 0 0 connected";
        let t2 = t.merge_view(&view(lonely));
        assert_eq!(t2.assigned_slots(), SLOT_COUNT);
        for s in [0, 6000, 16383] {
            assert_eq!(
                t2.master_for(s).unwrap().addr,
                t.master_for(s).unwrap().addr
            );
        }
    }

    #[test]
    fn moved_patches_one_slot() {
        let t = SlotTable::default().merge_view(&view(THREE));
        let t2 = t.with_moved(5, "127.0.0.1:7001");
        assert_eq!(&*t2.master_for(5).unwrap().addr, "127.0.0.1:7001");
        assert_eq!(&*t2.master_for(6).unwrap().addr, "127.0.0.1:7000");
        let t3 = t2.with_moved(6, "127.0.0.1:9999");
        assert_eq!(&*t3.master_for(6).unwrap().addr, "127.0.0.1:9999");
        assert_eq!(t3.masters.len(), 4);
        assert!(!t3.same_routing(&t));
        assert!(t.same_routing(&t.clone()));
    }

    #[test]
    fn a_standalone_server_serves_every_slot() {
        let t = SlotTable::single("127.0.0.1:6379");
        assert_eq!(t.assigned_slots(), SLOT_COUNT);
        assert_eq!(&*t.master_for(16383).unwrap().addr, "127.0.0.1:6379");
    }

    #[test]
    fn any_master_prefers_serving_ones() {
        let t = SlotTable::default().merge_view(&view(THREE));
        let t = t.with_moved(0, "127.0.0.1:7000");
        for h in 0..6 {
            assert!(t.any_master(h).is_some());
        }
        assert!(SlotTable::default().any_master(1).is_none());
    }
}
