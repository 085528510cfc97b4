//! A store's open keys: each key and its state in a slot, found by a table of slot numbers. So a
//! free bucket of the table costs 4 bytes, not a whole entry, and the due-time queue and the change
//! list name a key by its slot (4 bytes), not by a copy of the key. Slots come in fixed chunks:
//! growing never copies them, nor leaves room for as many again.

use std::hash::BuildHasher;
use hashbrown::HashTable;

use crate::sessions::Key;

pub type Slot = u32;

const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

type Held<V> = Option<(Key, V)>;

pub struct KeyMap<V> {
    table: HashTable<Slot>,
    chunks: Vec<Box<[Held<V>]>>, // CHUNK slots each
    handed_out: usize,           // slots ever used (in use now, or in `free`)
    free: Vec<Slot>,
    hasher: foldhash::fast::RandomState,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        KeyMap { table: HashTable::new(), chunks: Vec::new(), handed_out: 0, free: Vec::new(),
                 hasher: foldhash::fast::RandomState::default() }
    }
}

/// Slot `slot` of `chunks`.
fn held<V>(chunks: &[Box<[Held<V>]>], slot: Slot) -> &Held<V> {
    &chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
}

fn held_mut<V>(chunks: &mut [Box<[Held<V>]>], slot: Slot) -> &mut Held<V> {
    &mut chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
}

fn is_key<V>(chunks: &[Box<[Held<V>]>], slot: Slot, key: &str) -> bool {
    held(chunks, slot).as_ref().is_some_and(|(held, _)| held.as_str() == key)
}

/// The hash of the key in `slot` (which is in use), for the table as it grows.
fn rehash<'a, V>(hasher: &'a foldhash::fast::RandomState, chunks: &'a [Box<[Held<V>]>]) -> impl Fn(&Slot) -> u64 + 'a {
    move |&slot| hasher.hash_one(held(chunks, slot).as_ref().expect("a slot in use").0.as_str())
}

impl<V> KeyMap<V> {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// The slot of `key`, if it is here.
    pub fn find(&self, key: &str) -> Option<Slot> {
        self.find_hashed(self.hash(key), key)
    }

    fn find_hashed(&self, hash: u64, key: &str) -> Option<Slot> {
        self.table.find(hash, |&slot| is_key(&self.chunks, slot, key)).copied()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).map(|slot| self.state(slot))
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.find(key).map(|slot| self.state_mut(slot))
    }

    /// The key and state in `slot`, if the slot is in use.
    pub fn at(&self, slot: Slot) -> Option<(&Key, &V)> {
        if slot as usize >= self.handed_out {
            return None;
        }
        held(&self.chunks, slot).as_ref().map(|(key, state)| (key, state))
    }

    /// The key in `slot`, if the slot is in use.
    pub fn key(&self, slot: Slot) -> Option<&Key> {
        self.at(slot).map(|(key, _)| key)
    }

    /// The state in `slot`, which is in use.
    pub fn state(&self, slot: Slot) -> &V {
        &held(&self.chunks, slot).as_ref().expect("a slot in use").1
    }

    pub fn state_mut(&mut self, slot: Slot) -> &mut V {
        self.entry_mut(slot).1
    }

    pub fn entry_mut(&mut self, slot: Slot) -> (&Key, &mut V) {
        let (key, state) = held_mut(&mut self.chunks, slot).as_mut().expect("a slot in use");
        (key, state)
    }

    /// Add `key`, which is not here; its slot.
    pub fn insert(&mut self, key: Key, state: V) -> Slot {
        let hash = self.hash(&key);
        self.insert_hashed(hash, key, state)
    }

    fn insert_hashed(&mut self, hash: u64, key: Key, state: V) -> Slot {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                if self.handed_out == self.chunks.len() * CHUNK {
                    self.chunks.push((0..CHUNK).map(|_| None).collect());
                }
                self.handed_out += 1;
                Slot::try_from(self.handed_out - 1).expect("fewer than 4 billion open keys")
            }
        };
        *held_mut(&mut self.chunks, slot) = Some((key, state));
        let KeyMap { table, chunks, hasher, .. } = self;
        table.insert_unique(hash, slot, rehash(hasher, chunks));
        slot
    }

    /// Add or replace the state of `key` (one hash: a restore sets mostly keys not seen yet).
    pub fn set(&mut self, key: &str, state: V) -> Slot {
        let hash = self.hash(key);
        match self.find_hashed(hash, key) {
            Some(slot) => {
                *self.state_mut(slot) = state;
                slot
            }
            None => self.insert_hashed(hash, Key::from(key), state),
        }
    }

    /// Take `key` out, with its state; its slot is free for another key.
    pub fn remove(&mut self, key: &str) -> Option<(Slot, Key, V)> {
        let hash = self.hash(key);
        let chunks = &self.chunks;
        let slot = self.table.find_entry(hash, |&slot| is_key(chunks, slot, key)).ok()?.remove().0;
        let (key, state) = held_mut(&mut self.chunks, slot).take().expect("a slot in use");
        self.free.push(slot);
        Some((slot, key, state))
    }

    /// Room in the table for `count` more keys at once.
    pub fn reserve(&mut self, count: usize) {
        let KeyMap { table, chunks, hasher, .. } = self;
        table.reserve(count, rehash(hasher, chunks));
    }

    pub fn clear(&mut self) {
        *self = KeyMap { hasher: self.hasher.clone(), ..Default::default() };
    }

    fn all(&self) -> impl Iterator<Item = &Held<V>> {
        self.chunks.iter().flat_map(|chunk| chunk.iter()).take(self.handed_out)
    }

    /// (slot, key, state) of every key, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Key, &V)> {
        self.all().enumerate().filter_map(|(slot, held)| held.as_ref().map(|(key, state)| (slot as Slot, key, state)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &Key, &mut V)> {
        let handed_out = self.handed_out;
        self.chunks.iter_mut().flat_map(|chunk| chunk.iter_mut()).take(handed_out).enumerate()
            .filter_map(|(slot, held)| held.as_mut().map(|(key, state)| (slot as Slot, &*key, state)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.iter().map(|(_, key, _)| key)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(.., state)| state)
    }
}

/// The keys of a store changed since the last commit: a bit per slot (no copy of the key, no
/// hashing per record, and a few bytes per thousand keys), and the keys taken out since (whose
/// slots may hold other keys by then).
#[derive(Default)]
pub struct ChangedKeys {
    marked: Vec<u64>,
    count: usize, // bits set
    gone: Vec<Key>,
}

/// The word of the marks that holds `slot`'s, and its bit there.
fn mark_of(slot: Slot) -> (usize, u64) {
    ((slot / 64) as usize, 1 << (slot % 64))
}

impl ChangedKeys {
    pub fn mark(&mut self, slot: Slot) {
        let (word, bit) = mark_of(slot);
        if word >= self.marked.len() {
            self.marked.resize(word + 1, 0);
        }
        if self.marked[word] & bit == 0 {
            self.marked[word] |= bit;
            self.count += 1;
        }
    }

    /// A key that is not (or no longer) in the map.
    pub fn mark_gone(&mut self, key: Key) {
        self.gone.push(key);
    }

    /// `key` left `slot`: the slot's mark is the key's, kept by its name.
    pub fn removed(&mut self, slot: Slot, key: &Key) {
        let (word, bit) = mark_of(slot);
        if let Some(marked) = self.marked.get_mut(word).filter(|marked| **marked & bit != 0) {
            *marked &= !bit;
            self.count -= 1;
        }
        self.gone.push(key.clone());
    }

    /// Every marked key kept by its name, as the map is about to be cleared.
    pub fn keep_by_name<V>(&mut self, keys: &KeyMap<V>) {
        let mut marked = Vec::new();
        self.unmark_all(|slot| marked.push(keys.key(slot).expect("a marked slot is in use").clone()));
        self.gone.append(&mut marked);
    }

    /// `each` marked slot, unmarked.
    fn unmark_all(&mut self, mut each: impl FnMut(Slot)) {
        for (word, marked) in self.marked.iter_mut().enumerate().filter(|(_, marked)| **marked != 0) {
            let mut bits = std::mem::take(marked);
            while bits != 0 {
                each((word * 64) as Slot + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        self.count = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.gone.is_empty()
    }

    /// The changed keys (`keys` sorted, each once), none marked after; the keys that left are lent
    /// by `gone`, which the caller keeps while it uses them.
    pub fn take<'a, V>(&mut self, keys: &'a KeyMap<V>, gone: &'a mut Vec<Key>) -> Vec<&'a str> {
        *gone = std::mem::take(&mut self.gone);
        let mut changed: Vec<&str> = Vec::with_capacity(gone.len() + self.count);
        changed.extend(gone.iter().map(Key::as_str));
        self.unmark_all(|slot| changed.push(keys.key(slot).expect("a marked slot is in use")));
        changed.sort_unstable();
        changed.dedup(); // a key that left and came back
        changed
    }

    pub fn clear(&mut self) {
        *self = ChangedKeys::default();
    }
}
