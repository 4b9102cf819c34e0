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
//!   sender, oldest first). Lanes exist only while non-empty. Tag lanes are kept in a
//!   `BTreeMap` by tag, sender lanes in a `HashMap` by address id.
//! - **Heads**: a `BTreeMap` from the `seq` of each tag lane's first message to its slot.
//!   The oldest message of all is the first head (every message is in some tag lane, and
//!   a lane's first message is its oldest).
//!
//! Removing a message unlinks it from both lanes in O(1) (doubly linked), and, if it was
//! the first of its tag lane, replaces that lane's head entry: there are no tombstones,
//! nothing to clean up later, and memory is O(queued messages + live tags + live senders).
//!
//! # Cost of each selection
//! With `t` the number of distinct tags queued now (never the number of messages):
//!
//! | selection | how | cost |
//! |---|---|---|
//! | `Any` | first head | O(log t) |
//! | `Tag(x)` | lane `x`'s first | O(log t) |
//! | `TagAtMost(n)` | first lane with tag ≤ n (lowest tag), its first | O(log t) |
//! | `TagExcept(x)` | the first or second head (one of the two is not lane `x`'s) | O(log t) |
//! | `From(a)` | sender lane `a`'s first | O(1) expected |
//! | taking the found message | unlink twice, maybe replace a head | O(log t) |
//! | queueing a message | append to two lanes, maybe add a head | O(log t) |
//!
//! # In a shared segment
//! Nothing here depends on addresses: slots link by index, and every structure is a set
//! of fixed-size records. To move the index into a segment (the cross-process twin),
//! the slab becomes the segment's slot array (capacity fixed at creation, so `u32`
//! indices are offsets); the tag-lane map becomes a table of at most `capacity` lane
//! records (a live tag has at least one message) kept sorted by tag, searched by
//! bisection (O(log t)), and the heads map a binary heap or sorted array of at most
//! `capacity` entries; the sender-lane map an open-addressed table keyed by
//! (pid, address id) with at most `capacity` live entries. Each record is then a group of
//! fixed-width words behind the segment's lock, every index read from it validated
//! against the capacity and every list walk bounded by it, as `shm` does for its rings.

use std::collections::{BTreeMap, HashMap};

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
    /// Whether a message with this tag and sender is one the selection may take.
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
    from: u64,
    by_tag: Links,
    by_from: Links,
    /// `None` while the slot is free; then `by_tag.next` chains the free list.
    msg: Option<M>,
}

/// A doubly linked list of slots.
#[derive(Clone, Copy, Debug)]
struct Lane {
    head: u32,
    tail: u32,
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
    tags: BTreeMap<u64, Lane>,
    senders: HashMap<u64, Lane>,
    /// `seq` of each tag lane's first message → its slot.
    heads: BTreeMap<u64, u32>,
    next_seq: u64,
    len: usize,
}

impl<M> Default for Index<M> {
    fn default() -> Self {
        Index {
            slots: Vec::new(),
            free: NIL,
            tags: BTreeMap::new(),
            senders: HashMap::new(),
            heads: BTreeMap::new(),
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

    /// How many messages were ever queued.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn pushed(&self) -> u64 {
        self.next_seq
    }

    /// How many messages were ever taken.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn taken(&self) -> u64 {
        self.next_seq - self.len as u64
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
        let slot = Slot {
            seq,
            tag,
            from,
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
        let lane = self.tags.entry(tag).or_insert(Lane {
            head: NIL,
            tail: NIL,
        });
        if lane.head == NIL {
            self.heads.insert(seq, i);
        }
        append(&mut self.slots, lane, i, List::ByTag);
        let lane = self.senders.entry(from).or_insert(Lane {
            head: NIL,
            tail: NIL,
        });
        append(&mut self.slots, lane, i, List::ByFrom);
        self.len += 1;
    }

    /// The message `sel` takes now: the oldest it matches (for `TagAtMost`, the oldest of
    /// the lowest matching tag). Costs in the module docs.
    pub(crate) fn find(&self, sel: Sel) -> Option<Found> {
        let i = match sel {
            Sel::Any => *self.heads.values().next()?,
            Sel::Tag(x) => self.tags.get(&x)?.head,
            Sel::TagAtMost(n) => self.tags.range(..=n).next()?.1.head,
            Sel::TagExcept(x) => *self
                .heads
                .values()
                .take(2)
                .find(|&&i| self.slots[i as usize].tag != x)?,
            Sel::From(a) => self.senders.get(&a)?.head,
        };
        Some(Found(i))
    }

    /// Removes a found message and returns it with its tag.
    pub(crate) fn take(&mut self, Found(i): Found) -> (u64, M) {
        let (seq, tag, from) = {
            let s = &self.slots[i as usize];
            (s.seq, s.tag, s.from)
        };
        let lane = self
            .tags
            .get_mut(&tag)
            .expect("a queued message's tag lane");
        let was_head = lane.head == i;
        if unlink(&mut self.slots, lane, i, List::ByTag) {
            self.tags.remove(&tag);
        } else if was_head {
            let next = lane.head;
            self.heads.insert(self.slots[next as usize].seq, next);
        }
        if was_head {
            self.heads.remove(&seq);
        }
        let lane = self
            .senders
            .get_mut(&from)
            .expect("a queued message's sender lane");
        if unlink(&mut self.slots, lane, i, List::ByFrom) {
            self.senders.remove(&from);
        }
        let slot = &mut self.slots[i as usize];
        let msg = slot.msg.take().expect("a found slot holds a message");
        slot.by_tag.next = self.free;
        self.free = i;
        self.len -= 1;
        (tag, msg)
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
        assert!(ix.tags.is_empty() && ix.senders.is_empty() && ix.heads.is_empty());
        // Freed slots are reused.
        ix.push(0, 0, 9);
        assert_eq!(ix.slots.len(), 5);
        assert_eq!(drain(&mut ix, Sel::Any), [9]);
    }
}
