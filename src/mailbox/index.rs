//! The selection index: the queued messages of one mailbox, findable by any selection
//! without looking at messages the selection does not take.
//!
//! # Structure
//! - A **slab** of slots holds the messages; a slot is named by its `u32` index, never a
//!   pointer, and freed slots are chained in a free list.
//! - Every message has a **sequence number** (`seq`), one counter for the mailbox, so
//!   "oldest" means "smallest `seq`".
//! - Every slot is on two doubly linked lists (links are slot indices): its **tag lane**
//!   (the messages of its tag, oldest first) and its **sender lane** (the messages of its
//!   sender, oldest first). Lane records live in two small slabs of their own, named by
//!   `u32` index, and each slot names its two lanes. Tag lanes are found by tag in a
//!   `BTreeMap`, sender lanes by address id in a `HashMap` (hashed by a multiplication:
//!   the ids come from a counter, not from users).
//! - **Heads**: a binary min-heap of the non-empty tag lanes, ordered by the `seq` of each
//!   lane's first message; each lane record knows its place in it. The oldest message of
//!   all heads the root lane (every message is in some tag lane, and a lane's first
//!   message is its oldest), and the oldest one of another tag than the root's heads one
//!   of the root's two children.
//! - **Lanes live while non-empty, plus one spare of each kind.** A lane that empties
//!   stays in its map, empty, until another lane of its kind empties (which frees it):
//!   a mailbox whose queue keeps running dry, with one sender and one tag, never creates
//!   or removes a map entry. A selection that lands on the spare finds it empty; one that
//!   walks the tag map in order (`TagAtMost`) skips at most that one.
//!
//! Removing a message unlinks it from both lanes in O(1) (doubly linked), and, if it was
//! the first of its tag lane, moves the lane down the heap (its new first is younger), or
//! out of it when the lane empties: there are no tombstones, nothing to clean up later,
//! and memory is O(queued messages + live tags + live senders).
//!
//! # Cost of each selection
//! With `t` the number of distinct tags queued now (never the number of messages):
//!
//! | selection | how | cost |
//! |---|---|---|
//! | `Any` | the root lane's first | O(1) |
//! | `Tag(x)` | lane `x`'s first | O(log t) |
//! | `TagAtMost(n)` | first non-empty lane with tag ≤ n (lowest tag), its first | O(log t) |
//! | `TagExcept(x)` | the root lane's first, or the older of its children's | O(1) |
//! | `From(a)` | sender lane `a`'s first | O(1) expected |
//! | taking the found message | unlink twice, move the lane in the heap | O(log t) |
//! | queueing a message | find both lanes, append, maybe add a lane to the heap | O(log t) |

//! # In a shared segment
//! Nothing here depends on addresses: slots link by index, and every structure is a set
//! of fixed-size records. To move the index into a segment (the cross-process twin),
//! the slab becomes the segment's slot array (capacity fixed at creation, so `u32`
//! indices are offsets); the tag-lane map becomes a table of at most `capacity` lane
//! records (a live tag has at least one message, plus the spare) kept sorted by tag,
//! searched by bisection (O(log t)), and the heads heap an array of at most `capacity`
//! entries; the sender-lane map an open-addressed table keyed by (pid, address id) with
//! at most `capacity` live entries (plus the spare). Each record is then a group of
//! fixed-width words behind the segment's lock, every index read from it validated
//! against the capacity and every list walk bounded by it, as `shm` does for its rings.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// "No slot": the end of a list.
const NIL: u32 = u32::MAX;

/// The most messages one index can hold (slot indices are `u32`, `NIL` excluded).
pub(crate) const MAX_QUEUED: usize = NIL as usize;

/// A selection with the sender reduced to its address id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sel {
    Any,
    Tag(u64),
    TagAtMost(u64),
    TagExcept(u64),
    From(u64),
}

impl Sel {
    /// Whether a message with this tag and sender is one the selection may take (the
    /// tests' reference model).
    #[cfg(test)]
    pub(crate) fn matches(self, tag: u64, from: u64) -> bool {
        match self {
            Sel::Any => true,
            Sel::Tag(x) => tag == x,
            Sel::TagAtMost(n) => tag <= n,
            Sel::TagExcept(x) => tag != x,
            Sel::From(a) => from == a,
        }
    }
}

/// The hasher of the sender map: address ids come from a process-wide counter (no
/// user picks them), so a multiplication spreads them well enough, at a fraction of
/// SipHash's cost.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Clone, Copy, Debug)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

#[derive(Debug)]
struct Slot<M> {
    seq: u64,
    tag: u64,
    /// The tag lane and the sender lane the slot is on.
    tag_lane: u32,
    from_lane: u32,
    by_tag: Links,
    by_from: Links,
    /// `None` while the slot is free; then `by_tag.next` chains the free list.
    msg: Option<M>,
}

/// A doubly linked list of slots, with what it is the lane of.
#[derive(Clone, Copy, Debug)]
struct Lane {
    /// The tag or the sender id.
    key: u64,
    head: u32,
    tail: u32,
    /// Tag lanes: the lane's place in the heads heap (`NIL` while empty). Free lane
    /// records: the next free record.
    pos: u32,
}

/// Lane records, named by `u32` index, with a free list; and the one empty lane kept
/// (see the module docs).
#[derive(Debug)]
struct Lanes {
    recs: Vec<Lane>,
    free: u32,
    spare: Option<u32>,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            recs: Vec::new(),
            free: NIL,
            spare: None,
        }
    }
}

impl Lanes {
    fn alloc(&mut self, key: u64) -> u32 {
        let lane = Lane {
            key,
            head: NIL,
            tail: NIL,
            pos: NIL,
        };
        if self.free != NIL {
            let l = self.free;
            self.free = self.recs[l as usize].pos;
            self.recs[l as usize] = lane;
            l
        } else {
            self.recs.push(lane);
            (self.recs.len() - 1) as u32
        }
    }

    /// Lane `l` has just become empty: it becomes the spare, and the previous spare, if
    /// any, is freed; its key is returned for removal from the map.
    fn retire(&mut self, l: u32) -> Option<u64> {
        let old = self.spare.replace(l)?;
        let key = self.recs[old as usize].key;
        self.recs[old as usize].pos = self.free;
        self.free = old;
        Some(key)
    }

    /// Lane `l` (empty) is about to get a message: it is no longer the spare.
    fn revive(&mut self, l: u32) {
        if self.spare == Some(l) {
            self.spare = None;
        }
    }
}

/// Which of a slot's two lists.
#[derive(Clone, Copy)]
enum List {
    ByTag,
    ByFrom,
}

fn links<M>(slot: &mut Slot<M>, list: List) -> &mut Links {
    match list {
        List::ByTag => &mut slot.by_tag,
        List::ByFrom => &mut slot.by_from,
    }
}

/// Appends slot `i` to `lane`.
fn append<M>(slots: &mut [Slot<M>], lane: &mut Lane, i: u32, list: List) {
    *links(&mut slots[i as usize], list) = Links {
        prev: lane.tail,
        next: NIL,
    };
    if lane.tail == NIL {
        lane.head = i;
    } else {
        links(&mut slots[lane.tail as usize], list).next = i;
    }
    lane.tail = i;
}

/// Unlinks slot `i` from `lane`; says whether the lane is now empty.
fn unlink<M>(slots: &mut [Slot<M>], lane: &mut Lane, i: u32, list: List) -> bool {
    let Links { prev, next } = *links(&mut slots[i as usize], list);
    if prev == NIL {
        lane.head = next;
    } else {
        links(&mut slots[prev as usize], list).next = next;
    }
    if next == NIL {
        lane.tail = prev;
    } else {
        links(&mut slots[next as usize], list).prev = prev;
    }
    *links(&mut slots[i as usize], list) = UNLINKED;
    lane.head == NIL
}

/// The queued messages of one mailbox (see the module docs).
#[derive(Debug)]
pub(crate) struct Index<M> {
    slots: Vec<Slot<M>>,
    free: u32,
    tag_lanes: Lanes,
    from_lanes: Lanes,
    /// Tag → its lane (a live tag's, or the spare).
    tags: BTreeMap<u64, u32>,
    /// Sender id → its lane (a live sender's, or the spare).
    senders: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// The non-empty tag lanes, a binary min-heap by the `seq` of each lane's first
    /// message.
    heads: Vec<u32>,
    next_seq: u64,
    len: usize,
}

impl<M> Default for Index<M> {
    fn default() -> Self {
        Index {
            slots: Vec::new(),
            free: NIL,
            tag_lanes: Lanes::default(),
            from_lanes: Lanes::default(),
            tags: BTreeMap::new(),
            senders: HashMap::default(),
            heads: Vec::new(),
            next_seq: 0,
            len: 0,
        }
    }
}

/// A found message, to take with [`Index::take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Found(u32);

impl<M> Index<M> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Queues `msg` with its tag and sender id. The caller keeps `len()` below
    /// [`MAX_QUEUED`].
    pub(crate) fn push(&mut self, tag: u64, from: u64, msg: M) {
        assert!(
            self.len < MAX_QUEUED,
            "a mailbox holds at most 2^32 - 1 messages"
        );
        let seq = self.next_seq;
        self.next_seq += 1;
        let tag_lane = match self.tags.get(&tag) {
            Some(&l) => l,
            None => {
                let l = self.tag_lanes.alloc(tag);
                self.tags.insert(tag, l);
                l
            }
        };
        let from_lane = match self.senders.get(&from) {
            Some(&l) => l,
            None => {
                let l = self.from_lanes.alloc(from);
                self.senders.insert(from, l);
                l
            }
        };
        let slot = Slot {
            seq,
            tag,
            tag_lane,
            from_lane,
            by_tag: UNLINKED,
            by_from: UNLINKED,
            msg: Some(msg),
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.slots[i as usize].by_tag.next;
            self.slots[i as usize] = slot;
            i
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        let lane = &mut self.tag_lanes.recs[tag_lane as usize];
        let first = lane.head == NIL;
        append(&mut self.slots, lane, i, List::ByTag);
        if first {
            self.tag_lanes.revive(tag_lane);
            self.heap_push(tag_lane);
        }
        if self.from_lanes.recs[from_lane as usize].head == NIL {
            self.from_lanes.revive(from_lane);
        }
        let lane = &mut self.from_lanes.recs[from_lane as usize];
        append(&mut self.slots, lane, i, List::ByFrom);
        self.len += 1;
    }

    /// The first slot of tag lane `l` (`NIL` when empty).
    fn head_of(&self, l: u32) -> u32 {
        self.tag_lanes.recs[l as usize].head
    }

    /// The message `sel` takes now: the oldest it matches (for `TagAtMost`, the oldest of
    /// the lowest matching tag). Costs in the module docs.
    pub(crate) fn find(&self, sel: Sel) -> Option<Found> {
        let i = match sel {
            Sel::Any => self.head_of(*self.heads.first()?),
            Sel::Tag(x) => self.head_of(*self.tags.get(&x)?),
            // At most one lane is empty (the spare): the second lane in range is not.
            Sel::TagAtMost(n) => self
                .tags
                .range(..=n)
                .take(2)
                .map(|(_, &l)| self.head_of(l))
                .find(|&i| i != NIL)?,
            // The oldest message of another tag heads the oldest lane of another tag:
            // the heap's root, or else (the root is lane `x`) one of its two children.
            Sel::TagExcept(x) => {
                let head = |p: usize| self.heads.get(p).map(|&l| self.head_of(l));
                let root = head(0)?;
                if self.slots[root as usize].tag != x {
                    root
                } else {
                    match (head(1), head(2)) {
                        (Some(a), Some(b)) => {
                            if self.slots[a as usize].seq < self.slots[b as usize].seq {
                                a
                            } else {
                                b
                            }
                        }
                        (Some(a), None) => a,
                        _ => return None,
                    }
                }
            }
            Sel::From(a) => self.from_lanes.recs[*self.senders.get(&a)? as usize].head,
        };
        (i != NIL).then_some(Found(i))
    }

    /// Removes a found message and returns it with its tag.
    pub(crate) fn take(&mut self, Found(i): Found) -> (u64, M) {
        let (tag, tl, fl) = {
            let s = &self.slots[i as usize];
            (s.tag, s.tag_lane, s.from_lane)
        };
        let lane = &mut self.tag_lanes.recs[tl as usize];
        let was_head = lane.head == i;
        let pos = lane.pos;
        if unlink(&mut self.slots, lane, i, List::ByTag) {
            self.heap_remove(pos);
            if let Some(key) = self.tag_lanes.retire(tl) {
                self.tags.remove(&key);
            }
        } else if was_head {
            // The lane's first message is younger now: it moves down the heap.
            self.sift_down(pos as usize);
        }
        let lane = &mut self.from_lanes.recs[fl as usize];
        if unlink(&mut self.slots, lane, i, List::ByFrom)
            && let Some(key) = self.from_lanes.retire(fl)
        {
            self.senders.remove(&key);
        }
        let slot = &mut self.slots[i as usize];
        let msg = slot.msg.take().expect("a found slot holds a message");
        slot.by_tag.next = self.free;
        self.free = i;
        self.len -= 1;
        (tag, msg)
    }

    /// The heap key of tag lane `l`: the `seq` of its first message.
    fn key(&self, l: u32) -> u64 {
        self.slots[self.head_of(l) as usize].seq
    }

    fn heap_set(&mut self, p: usize, l: u32) {
        self.heads[p] = l;
        self.tag_lanes.recs[l as usize].pos = p as u32;
    }

    /// Adds the (just non-empty) tag lane `l` to the heads heap.
    fn heap_push(&mut self, l: u32) {
        self.heads.push(l);
        self.sift_up(self.heads.len() - 1, l);
    }

    /// Removes the tag lane at heap position `p` (just emptied).
    fn heap_remove(&mut self, p: u32) {
        let p = p as usize;
        let gone = self.heads[p];
        self.tag_lanes.recs[gone as usize].pos = NIL;
        let last = self.heads.pop().expect("a heap position is in range");
        if p < self.heads.len() {
            // `last` takes the emptied lane's place, then moves to where its key fits.
            self.heap_set(p, last);
            self.sift_down(p);
            let p = self.tag_lanes.recs[last as usize].pos as usize;
            self.sift_up(p, last);
        }
    }

    fn sift_up(&mut self, mut p: usize, l: u32) {
        let k = self.key(l);
        while p > 0 {
            let parent = (p - 1) / 2;
            let pl = self.heads[parent];
            if self.key(pl) <= k {
                break;
            }
            self.heap_set(p, pl);
            p = parent;
        }
        self.heap_set(p, l);
    }

    fn sift_down(&mut self, mut p: usize) {
        let l = self.heads[p];
        let k = self.key(l);
        loop {
            let c = 2 * p + 1;
            if c >= self.heads.len() {
                break;
            }
            let c = if c + 1 < self.heads.len()
                && self.key(self.heads[c + 1]) < self.key(self.heads[c])
            {
                c + 1
            } else {
                c
            };
            let cl = self.heads[c];
            if k <= self.key(cl) {
                break;
            }
            self.heap_set(p, cl);
            p = c;
        }
        self.heap_set(p, l);
    }

    /// Runs `f` on every queued message, in no particular order (O(slots); for rare
    /// events such as the last receiver detaching).
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut M)) {
        for s in &mut self.slots {
            if let Some(m) = &mut s.msg {
                f(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(ix: &mut Index<u32>, sel: Sel) -> Vec<u32> {
        let mut out = vec![];
        while let Some(f) = ix.find(sel) {
            out.push(ix.take(f).1);
        }
        out
    }

    #[test]
    fn selections() {
        let mut ix = Index::default();
        // (tag, from, body)
        for (n, (tag, from)) in [(5, 1), (3, 2), (5, 2), (1, 1), (3, 1)]
            .into_iter()
            .enumerate()
        {
            ix.push(tag, from, n as u32);
        }
        assert_eq!(ix.len(), 5);
        assert_eq!(ix.find(Sel::TagExcept(5)).map(|f| ix.take(f).1), Some(1));
        assert_eq!(ix.find(Sel::TagAtMost(4)).map(|f| ix.take(f).1), Some(3));
        assert_eq!(ix.find(Sel::From(1)).map(|f| ix.take(f).1), Some(0));
        assert_eq!(ix.find(Sel::Tag(9)), None);
        assert_eq!(drain(&mut ix, Sel::Tag(3)), [4]);
        assert_eq!(drain(&mut ix, Sel::Any), [2]);
        assert_eq!(ix.len(), 0);
        // Only the spare lanes are left.
        assert!(ix.tags.len() <= 1 && ix.senders.len() <= 1 && ix.heads.is_empty());
        // Freed slots are reused.
        ix.push(0, 0, 9);
        assert_eq!(ix.slots.len(), 5);
        assert_eq!(drain(&mut ix, Sel::Any), [9]);
    }

    /// Random pushes and selections over many tags (a heads heap several levels deep)
    /// and senders, each result compared with a linear scan of a `Vec` in push order;
    /// the maps hold the live lanes and at most one spare each.
    #[test]
    fn matches_linear_scan() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut ix = Index::default();
        let mut model: Vec<(u64, u64, u32)> = Vec::new();
        // Fewer rounds under miri, which runs this about a thousand times slower.
        let rounds = if cfg!(miri) { 400 } else { 20_000u32 };
        for body in 0..rounds {
            if model.len() < 300 && rnd(100) < 50 {
                let (tag, from) = (rnd(40), rnd(7));
                ix.push(tag, from, body);
                model.push((tag, from, body));
            } else {
                let k = rnd(45);
                let sel = match rnd(5) {
                    0 => Sel::Any,
                    1 => Sel::Tag(k),
                    2 => Sel::TagAtMost(k),
                    3 => Sel::TagExcept(k),
                    _ => Sel::From(k % 8),
                };
                let want = match sel {
                    Sel::TagAtMost(n) => model
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.0 <= n)
                        .min_by_key(|(i, m)| (m.0, *i))
                        .map(|(i, _)| i),
                    _ => model.iter().position(|m| sel.matches(m.0, m.1)),
                };
                let got = ix.find(sel).map(|f| ix.take(f).1);
                assert_eq!(got, want.map(|i| model.remove(i).2), "{sel:?}");
            }
            assert_eq!(ix.len(), model.len());
            let tags: std::collections::BTreeSet<u64> = model.iter().map(|m| m.0).collect();
            let froms: std::collections::BTreeSet<u64> = model.iter().map(|m| m.1).collect();
            assert!(ix.tags.len() - tags.len() <= 1 && ix.senders.len() - froms.len() <= 1);
            assert_eq!(ix.heads.len(), tags.len());
        }
    }
}
