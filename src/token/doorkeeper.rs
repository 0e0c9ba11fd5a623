//! Admission to the token cache on a token's second sight.
//!
//! Stage: token verification, its cache. A token that is verified once and never seen again (a
//! short-lived token per request, a client that refreshes before every call, a flood of
//! distinct tokens) would otherwise cost a cache insert, the cache's housekeeping and an entry
//! that only pushes useful ones out. The doorkeeper remembers which tokens were verified
//! recently, by a tag of their digest in a fixed table, and the cache takes a token only when
//! the doorkeeper has seen it before: its second request is verified once more, every later
//! one is a cache hit. The table only decides what is cached, never whether a token is valid:
//! every token it admits was verified just now.

use std::sync::atomic::{AtomicU64, Ordering};

/// The most slots a doorkeeper has (512 KiB).
const MAX_SLOTS: usize = 1 << 16;
/// The fewest.
const MIN_SLOTS: usize = 1 << 10;

/// Tokens verified recently, by digest: one tag per slot, a newer token taking its slot's
/// place.
pub(crate) struct Doorkeeper {
    slots: Box<[AtomicU64]>,
    mask: usize,
}

impl Doorkeeper {
    /// A doorkeeper for a cache of `capacity` tokens: a slot per token it can hold, within
    /// bounds.
    pub(crate) fn new(capacity: u64) -> Self {
        let slots = usize::try_from(capacity)
            .unwrap_or(MAX_SLOTS)
            .clamp(MIN_SLOTS, MAX_SLOTS)
            .next_power_of_two();
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            mask: slots - 1,
        }
    }

    /// Whether the token of `digest` was seen before (the cache should take it); if not, it is
    /// remembered for next time.
    pub(crate) fn seen_before(&self, digest: &[u8; 32]) -> bool {
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&digest[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        // Never 0, the empty slot.
        let tag = word(0) | 1;
        let slot = &self.slots[usize::try_from(word(8)).unwrap_or_default() & self.mask];
        if slot.load(Ordering::Relaxed) == tag {
            return true;
        }
        slot.store(tag, Ordering::Relaxed);
        false
    }
}

impl std::fmt::Debug for Doorkeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorkeeper")
            .field("slots", &self.slots.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u64) -> [u8; 32] {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        digest[8..16].copy_from_slice(&n.to_le_bytes());
        digest
    }

    #[test]
    fn a_token_is_admitted_on_its_second_sight() {
        let doorkeeper = Doorkeeper::new(10_000);
        assert!(!doorkeeper.seen_before(&digest(1)));
        assert!(!doorkeeper.seen_before(&digest(2)));
        assert!(doorkeeper.seen_before(&digest(1)));
        assert!(doorkeeper.seen_before(&digest(2)));
    }

    #[test]
    fn a_newer_token_in_the_same_slot_takes_its_place() {
        let doorkeeper = Doorkeeper::new(0);
        assert_eq!(doorkeeper.slots.len(), MIN_SLOTS);
        let (first, same_slot) = (digest(3), digest(3 + MIN_SLOTS as u64));
        assert!(!doorkeeper.seen_before(&first));
        assert!(!doorkeeper.seen_before(&same_slot));
        assert!(!doorkeeper.seen_before(&first), "forgotten, so seen afresh");
        assert_eq!(Doorkeeper::new(u64::MAX).slots.len(), MAX_SLOTS);
    }
}
