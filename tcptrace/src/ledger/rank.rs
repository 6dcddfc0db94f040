//! Top-N selection for the views: the few best rows of millions without sorting them all.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The `n` rows with the lowest `rank` (all rows when `n` is 0), lowest first. Keeps only
/// `n` rows at a time, so a top 20 of two million endpoints does not sort two million.
pub(super) fn top<T, K: Ord>(
    rows: impl Iterator<Item = T>,
    n: usize,
    rank: impl Fn(&T) -> K,
) -> Vec<T> {
    if n == 0 {
        let mut all: Vec<T> = rows.collect();
        all.sort_unstable_by_key(|r| rank(r));
        return all;
    }
    // A max-heap on rank: its top is the worst row kept so far, the one to replace.
    let mut kept: BinaryHeap<Ranked<K, T>> = BinaryHeap::with_capacity(n);
    for row in rows {
        let key = rank(&row);
        if kept.len() < n {
            kept.push(Ranked(key, row));
        } else if kept.peek().is_some_and(|worst| key < worst.0)
            // Compared first through `peek`: most rows lose, and a `PeekMut` per row (its
            // drop checks for a sift) doubled the time of a top 20 over 2,000,000 endpoints
            // once the compiler stopped inlining it.
            && let Some(mut worst) = kept.peek_mut()
        {
            *worst = Ranked(key, row);
        }
    }
    kept.into_sorted_vec().into_iter().map(|r| r.1).collect()
}

/// A row ordered by its rank alone.
struct Ranked<K, T>(K, T);

impl<K: Ord, T> Ord for Ranked<K, T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl<K: Ord, T> PartialOrd for Ranked<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, T> PartialEq for Ranked<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Ord, T> Eq for Ranked<K, T> {}
