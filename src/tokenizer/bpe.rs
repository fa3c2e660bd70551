//! Byte-pair merging of one pre-token in O(n log n).
//!
//! Repeatedly merging the adjacent pair of lowest rank (leftmost among equal
//! ranks) by rescanning the whole sequence costs O(n²) on a long pre-token such
//! as a run of 40k spaces. Here the candidate pairs wait in a min-heap keyed by
//! (rank, position of the left symbol), the symbols form a doubly linked list,
//! and a merge pushes only the two pairs it creates. An entry whose symbols
//! have changed since it was pushed is stale and skipped when it comes up; every
//! live adjacent pair always has an entry, so the first live entry popped is the
//! pair the rescanning algorithm would pick, and the results are identical.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Marks the missing neighbour at either end of the list.
const NONE: usize = usize::MAX;

/// A candidate merge: ordered by rank, then by the left symbol's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: usize,
    /// The pair's symbols when it was pushed, to recognise a stale entry.
    pair: (u32, u32),
    merged: u32,
}

/// Merges adjacent `symbols`, the pair of lowest rank first (leftmost on ties),
/// until no adjacent pair merges. `merge_of(left, right)` gives a pair's
/// `(rank, merged symbol)`, or `None` when the pair never merges.
pub(super) fn merge(symbols: &[u32], merge_of: impl Fn(u32, u32) -> Option<(u32, u32)>) -> Vec<u32> {
    let n = symbols.len();
    let mut ids = symbols.to_vec();
    let mut alive = vec![true; n];
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
    let mut next: Vec<usize> = (0..n).map(|i| if i + 1 == n { NONE } else { i + 1 }).collect();
    let mut heap = BinaryHeap::new();
    let candidate = |ids: &[u32], left: usize, right: usize| {
        let pair = (ids[left], ids[right]);
        merge_of(pair.0, pair.1).map(|(rank, merged)| Reverse(Candidate { rank, left, pair, merged }))
    };
    heap.extend((1..n).filter_map(|i| candidate(&ids, i - 1, i)));
    while let Some(Reverse(c)) = heap.pop() {
        let right = next[c.left];
        // A symbol's id changes only when it absorbs its right neighbour, and then
        // grows longer, so unchanged ids mean an unchanged pair.
        if !alive[c.left] || right == NONE || (ids[c.left], ids[right]) != c.pair {
            continue;
        }
        ids[c.left] = c.merged;
        alive[right] = false;
        next[c.left] = next[right];
        if next[right] != NONE {
            prev[next[right]] = c.left;
        }
        if prev[c.left] != NONE {
            heap.extend(candidate(&ids, prev[c.left], c.left));
        }
        if next[c.left] != NONE {
            heap.extend(candidate(&ids, c.left, next[c.left]));
        }
    }
    // The first symbol only ever absorbs its right neighbours, so it heads the list.
    let mut out = Vec::new();
    let mut at = if n == 0 { NONE } else { 0 };
    while at != NONE {
        out.push(ids[at]);
        at = next[at];
    }
    out
}

/// The quadratic reference: rescan every adjacent pair after each merge.
#[cfg(test)]
pub(super) fn merge_by_rescanning(symbols: &[u32], merge_of: impl Fn(u32, u32) -> Option<(u32, u32)>) -> Vec<u32> {
    let mut symbols = symbols.to_vec();
    loop {
        let best = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| merge_of(w[0], w[1]).map(|(rank, merged)| (rank, i, merged)))
            .min();
        let Some((_, i, merged)) = best else { break };
        symbols[i] = merged;
        symbols.remove(i + 1);
    }
    symbols
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{merge, merge_by_rescanning};
    use crate::rng::SplitMix64;

    /// A random merge table over `base` initial symbols: each merge joins two
    /// symbols that exist so far into a new one, at a random rank (some ranks shared).
    fn random_merges(rng: &mut SplitMix64, base: u32, count: u32) -> HashMap<(u32, u32), (u32, u32)> {
        let mut merges = HashMap::new();
        for merged in base..base + count {
            let (l, r) = (rng.below(merged as usize) as u32, rng.below(merged as usize) as u32);
            let rank = rng.below(count as usize) as u32;
            merges.entry((l, r)).or_insert((rank, merged));
        }
        merges
    }

    #[test]
    fn heap_merge_equals_rescanning_on_random_and_adversarial_sequences() {
        let mut rng = SplitMix64(18);
        for table in 0..200 {
            let base = 2 + (table % 5) as u32;
            let count = 1 + rng.below(40) as u32;
            let merges = random_merges(&mut rng, base, count);
            let merge_of = |l: u32, r: u32| merges.get(&(l, r)).copied();
            let mut inputs: Vec<Vec<u32>> = (0..20)
                .map(|_| {
                    let len = rng.below(80);
                    (0..len).map(|_| rng.below(base as usize) as u32).collect()
                })
                .collect();
            // Runs of one symbol, alternations and a repeated random motif: the
            // shapes where equal ranks compete and ties decide the result.
            for s in 0..base {
                inputs.push(vec![s; 1 + rng.below(300)]);
                inputs.push((0..257).map(|i| if i % 2 == 0 { s } else { (s + 1) % base }).collect());
            }
            let motif: Vec<u32> = (0..1 + rng.below(5)).map(|_| rng.below(base as usize) as u32).collect();
            inputs.push(motif.iter().copied().cycle().take(motif.len() * 61).collect());
            inputs.push(Vec::new());
            for input in &inputs {
                assert_eq!(
                    merge(input, merge_of),
                    merge_by_rescanning(input, merge_of),
                    "table {table}, input {input:?}, merges {merges:?}"
                );
            }
        }
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        // 0 0 → 1 at rank 0: "0 0 0" gives "1 0", not "0 1".
        let merge_of = |l: u32, r: u32| ((l, r) == (0, 0)).then_some((0, 1));
        assert_eq!(merge(&[0, 0, 0], merge_of), [1, 0]);
        assert_eq!(merge(&[0; 5], merge_of), [1, 1, 0]);
    }
}
