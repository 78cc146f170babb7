//! The exact-target table: where each target of one address lives in the
//! kernel's `EXACT_INDEX`, `EXACT_SLOTS` and `EXACT` maps, and the writes
//! that move the table from one set of targets to the next while the
//! program reads it. Bookkeeping only: [`super::engine`] does the writes.
//!
//! The kernel reads `EXACT_INDEX[key.fold()]`: 0 (no target), a slot of
//! `EXACT_SLOTS` whose key it compares, or `EXACT_COLLIDED` (look in the
//! `EXACT` hash map, where the targets of a shared fold go). So that a
//! packet never meets a slot that holds another key than the index says:
//!
//! - a key keeps its slot while it stays (only its value is rewritten);
//! - a new key gets a slot no key held in this update or the one before
//!   (a program run that read the index before the previous update has
//!   long finished: runs take microseconds, updates system calls);
//! - slots and hash entries are written before the index points to them,
//!   and hash entries removed after it no longer does.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pygocentrus_common::{EXACT_COLLIDED, ExactKey, ExactSlot, MAX_TARGETS, TargetValue};

/// One write to the kernel's maps, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Slot(u32, ExactSlot),
    Hash(ExactKey, TargetValue),
    Index(u32, u32),
    Unhash(ExactKey),
}

#[derive(Debug, Default)]
pub struct ExactTable {
    slot_of: HashMap<ExactKey, u32>,
    /// fold → what `EXACT_INDEX` holds for it (absent: 0).
    index: HashMap<u32, u32>,
    hashed: BTreeSet<ExactKey>,
    /// Slots nobody holds, free to take.
    free: Vec<u32>,
    /// Slots let go in the last update: free from the next.
    released: Vec<u32>,
    /// The lowest slot never used (slot 0 means "none").
    next: u32,
}

impl ExactTable {
    /// The writes that make the maps hold `entries` (distinct keys), in
    /// order, and the table's new state.
    pub fn update(&mut self, entries: &[(ExactKey, TargetValue)]) -> Vec<Write> {
        self.free.append(&mut self.released);
        let mut groups: BTreeMap<u32, Vec<(ExactKey, TargetValue)>> = BTreeMap::new();
        for (key, value) in entries {
            groups.entry(key.fold()).or_default().push((*key, *value));
        }
        let (mut first, mut moved, mut last) = (Vec::new(), Vec::new(), Vec::new());
        let mut slot_of = HashMap::new();
        let mut index = HashMap::new();
        let mut hashed = BTreeSet::new();
        for (fold, group) in groups {
            let single = match group.as_slice() {
                [(key, value)] => self.slot_of.get(key).copied().or_else(|| self.take()).map(|slot| (slot, key, value)),
                _ => None,
            };
            let want = if let Some((slot, key, value)) = single {
                first.push(Write::Slot(slot, ExactSlot { key: *key, value: *value }));
                slot_of.insert(*key, slot);
                slot
            } else {
                // A shared fold, or no slot left: the hash map.
                for (key, value) in group {
                    first.push(Write::Hash(key, value));
                    hashed.insert(key);
                }
                EXACT_COLLIDED
            };
            if self.index.get(&fold) != Some(&want) {
                moved.push((fold, want));
            }
            index.insert(fold, want);
        }
        moved.extend(self.index.keys().filter(|f| !index.contains_key(f)).map(|f| (*f, 0)));
        for key in self.hashed.difference(&hashed) {
            last.push(Write::Unhash(*key));
        }
        self.released.extend(self.slot_of.iter().filter(|(k, _)| !slot_of.contains_key(*k)).map(|(_, s)| *s));
        (self.slot_of, self.index, self.hashed) = (slot_of, index, hashed);
        // In the folds' order, whatever the hash map's.
        moved.sort_unstable();
        first.into_iter().chain(moved.into_iter().map(|(fold, v)| Write::Index(fold, v))).chain(last).collect()
    }

    /// A slot nobody holds or held in the last update.
    fn take(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        if self.next < MAX_TARGETS {
            self.next += 1;
            return Some(self.next);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use pygocentrus_common::EXACT_COLLIDED;

    use super::*;

    fn key(last: u8, port: u16) -> ExactKey {
        ExactKey::new([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, last], port.to_be_bytes())
    }

    fn value(id: u32) -> TargetValue {
        TargetValue { rules: [id, 0, 0, 0, 0, 0] }
    }

    /// What the kernel would find for `k` after `writes`, from `maps`.
    #[derive(Default)]
    struct Maps {
        index: HashMap<u32, u32>,
        slots: HashMap<u32, ExactSlot>,
        hash: HashMap<ExactKey, TargetValue>,
    }

    impl Maps {
        fn apply(&mut self, writes: &[Write]) {
            for w in writes {
                match *w {
                    Write::Slot(i, s) => {
                        self.slots.insert(i, s);
                    }
                    Write::Hash(k, v) => {
                        self.hash.insert(k, v);
                    }
                    Write::Index(f, v) => {
                        self.index.insert(f, v);
                    }
                    Write::Unhash(k) => {
                        self.hash.remove(&k);
                    }
                }
            }
        }

        fn find(&self, k: &ExactKey) -> Option<TargetValue> {
            match self.index.get(&k.fold()).copied().unwrap_or(0) {
                0 => None,
                EXACT_COLLIDED => self.hash.get(k).copied(),
                i => self.slots.get(&i).filter(|s| s.key == *k).map(|s| s.value),
            }
        }
    }

    #[test]
    fn the_maps_find_what_each_update_wrote_and_nothing_else() {
        let (mut table, mut maps) = (ExactTable::default(), Maps::default());
        let first: Vec<_> = (1..=50).map(|d| (key(d, 80), value(u32::from(d)))).collect();
        maps.apply(&table.update(&first));
        for (k, v) in &first {
            assert_eq!(maps.find(k), Some(*v));
        }
        // Keep half, change some values, drop the rest, add new ones.
        let second: Vec<_> = (25..=75).map(|d| (key(d, 80), value(u32::from(d) + 100))).collect();
        maps.apply(&table.update(&second));
        for (k, v) in &second {
            assert_eq!(maps.find(k), Some(*v));
        }
        for d in 1..25 {
            assert_eq!(maps.find(&key(d, 80)), None, "{d} is gone");
        }
        maps.apply(&table.update(&[]));
        assert!((1..=75).all(|d| maps.find(&key(d, 80)).is_none()));
        assert!(maps.hash.is_empty());
    }

    #[test]
    fn a_kept_key_keeps_its_slot_and_a_new_key_takes_no_slot_just_let_go() {
        let mut table = ExactTable::default();
        let slot_of = |w: &[Write], k: ExactKey| {
            w.iter().find_map(|w| match w {
                Write::Slot(i, s) if s.key == k => Some(*i),
                _ => None,
            })
        };
        let w1 = table.update(&[(key(1, 80), value(1)), (key(2, 80), value(2))]);
        let (a, b) = (slot_of(&w1, key(1, 80)).unwrap(), slot_of(&w1, key(2, 80)).unwrap());
        let w2 = table.update(&[(key(1, 80), value(9)), (key(3, 80), value(3))]);
        assert_eq!(slot_of(&w2, key(1, 80)), Some(a));
        let c = slot_of(&w2, key(3, 80)).unwrap();
        assert_ne!(c, b, "the slot let go in this update was taken again at once");
        // One update later it may be taken.
        let w3 = table.update(&[(key(1, 80), value(9)), (key(3, 80), value(3)), (key(4, 80), value(4))]);
        assert_eq!(slot_of(&w3, key(4, 80)), Some(b));
    }

    #[test]
    fn the_index_moves_only_after_what_it_points_to_is_written() {
        let mut table = ExactTable::default();
        table.update(&[(key(1, 80), value(1))]);
        let writes = table.update(&[(key(2, 80), value(2))]);
        let pos = |pred: &dyn Fn(&Write) -> bool| writes.iter().position(pred).unwrap();
        let slot = pos(&|w| matches!(w, Write::Slot(_, s) if s.key == key(2, 80)));
        let index = pos(&|w| matches!(w, Write::Index(f, v) if *f == key(2, 80).fold() && *v != 0));
        assert!(slot < index, "{writes:?}");
    }

    #[test]
    fn keys_that_share_a_fold_go_to_the_hash_map() {
        // Find two keys with one fold.
        let mut seen: HashMap<u32, ExactKey> = HashMap::new();
        let (a, b) = (0..=u16::MAX)
            .find_map(|p| {
                let k = key(7, p);
                seen.insert(k.fold(), k).map(|other| (other, k))
            })
            .unwrap();
        let (mut table, mut maps) = (ExactTable::default(), Maps::default());
        maps.apply(&table.update(&[(a, value(1)), (b, value(2))]));
        assert_eq!(maps.index.get(&a.fold()), Some(&EXACT_COLLIDED));
        assert_eq!((maps.find(&a), maps.find(&b)), (Some(value(1)), Some(value(2))));
        // One goes: the other moves to a slot, and the hash map empties.
        maps.apply(&table.update(&[(b, value(2))]));
        assert_eq!(maps.find(&b), Some(value(2)));
        assert_eq!(maps.find(&a), None);
        assert!(maps.hash.is_empty());
    }
}
