//! The key/value cache: every layer's rotated keys and values for the
//! positions processed so far, in f32.

/// Keys and values for `len` positions of every layer, with room for `capacity`.
#[derive(Debug, Clone)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    len: usize,
    /// `[layer][position][kv_dim]`
    keys: Vec<f32>,
    /// `[layer][position][kv_dim]`
    values: Vec<f32>,
}

impl KvCache {
    /// An empty cache for `n_layer` layers of width `kv_dim`, holding `capacity` positions.
    pub fn new(n_layer: usize, kv_dim: usize, capacity: usize) -> KvCache {
        let size = n_layer * capacity * kv_dim;
        KvCache { kv_dim, capacity, len: 0, keys: vec![0.0; size], values: vec![0.0; size] }
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * std::mem::size_of::<f32>()
    }

    /// Forgets every position after the first `len` (e.g. to re-run a suffix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn at(&self, layer: usize, pos: usize) -> usize {
        (layer * self.capacity + pos) * self.kv_dim
    }

    /// Stores keys and values (rows of `kv_dim`) for positions `pos..` of `layer`.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = self.at(layer, pos);
        self.keys[at..at + k.len()].copy_from_slice(k);
        self.values[at..at + v.len()].copy_from_slice(v);
    }

    /// Marks `n` more positions as stored (after every layer has written them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// The key at `pos` of `layer`.
    pub(crate) fn key(&self, layer: usize, pos: usize) -> &[f32] {
        let at = self.at(layer, pos);
        &self.keys[at..at + self.kv_dim]
    }

    /// The value at `pos` of `layer`.
    pub(crate) fn value(&self, layer: usize, pos: usize) -> &[f32] {
        let at = self.at(layer, pos);
        &self.values[at..at + self.kv_dim]
    }
}
