//! The key/value cache: every layer's rotated keys and values for the
//! positions processed so far, stored as f32 or f16.

use std::collections::TryReserveError;

use half::f16;
use serde::Serialize;

use super::ModelError;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum KvType {
    /// Half precision, as llama.cpp stores it by default.
    #[default]
    F16,
    /// Single precision.
    F32,
}

impl KvType {
    /// Bytes per stored element.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

#[derive(Debug, Clone)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Store {
    /// `n` zeros of type `ty`, or the allocator's refusal.
    fn zeroed(ty: KvType, n: usize) -> Result<Store, TryReserveError> {
        fn zeros<T: Copy>(n: usize, zero: T) -> Result<Vec<T>, TryReserveError> {
            let mut v = Vec::new();
            v.try_reserve_exact(n)?;
            v.resize(n, zero);
            Ok(v)
        }
        Ok(match ty {
            KvType::F32 => Store::F32(zeros(n, 0.0)?),
            KvType::F16 => Store::F16(zeros(n, f16::ZERO)?),
        })
    }

    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            Store::F32(s) => s[at..at + x.len()].copy_from_slice(x),
            Store::F16(s) => s[at..at + x.len()].iter_mut().zip(x).for_each(|(d, &v)| *d = f16::from_f32(v)),
        }
    }
}

/// A borrowed row of the cache.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl<'a> Row<'a> {
    /// The row as f32: borrowed when stored as f32, else converted into `buf`.
    #[inline]
    pub fn as_f32<'b>(&self, buf: &'b mut [f32]) -> &'b [f32]
    where
        'a: 'b,
    {
        match *self {
            Row::F32(r) => r,
            Row::F16(r) => {
                let out = &mut buf[..r.len()];
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(r, out);
                out
            }
        }
    }
}

/// Keys and values for `len` positions of every layer, with room for `capacity`.
#[derive(Debug, Clone)]
pub struct KvCache {
    ty: KvType,
    kv_dim: usize,
    capacity: usize,
    len: usize,
    /// `[layer][position][kv_dim]`
    keys: Store,
    /// `[layer][position][kv_dim]`
    values: Store,
}

impl KvCache {
    /// An empty cache for `n_layer` layers of width `kv_dim`, holding `capacity` positions.
    ///
    /// # Panics
    /// When the system has no memory for it ([`KvCache::try_new`] says so instead).
    pub fn new(ty: KvType, n_layer: usize, kv_dim: usize, capacity: usize) -> KvCache {
        KvCache::try_new(ty, n_layer, kv_dim, capacity).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`KvCache::new`], or [`ModelError::OutOfMemory`] when its size
    /// overflows or the system refuses the memory.
    pub fn try_new(ty: KvType, n_layer: usize, kv_dim: usize, capacity: usize) -> Result<KvCache, ModelError> {
        let refused = |e: &dyn std::fmt::Display| {
            // In u128, the size of any request is exact.
            let bytes = 2 * n_layer as u128 * capacity as u128 * kv_dim as u128 * ty.bytes() as u128;
            ModelError::OutOfMemory { what: format!("a KV cache of {capacity} positions ({bytes} bytes): {e}") }
        };
        let size =
            n_layer.checked_mul(capacity).and_then(|n| n.checked_mul(kv_dim)).ok_or_else(|| refused(&"too large"))?;
        let keys = Store::zeroed(ty, size).map_err(|e| refused(&e))?;
        let values = Store::zeroed(ty, size).map_err(|e| refused(&e))?;
        Ok(KvCache { ty, kv_dim, capacity, len: 0, keys, values })
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Positions stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (a no-op when fewer are stored),
    /// so decoding can go on from position `len` again.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the cache holds for keys and values at full capacity (the size of
    /// its stores as they are, whatever type was asked for).
    pub fn bytes(&self) -> usize {
        let bytes = |s: &Store| match s {
            Store::F32(v) => std::mem::size_of_val(&v[..]),
            Store::F16(v) => std::mem::size_of_val(&v[..]),
        };
        bytes(&self.keys) + bytes(&self.values)
    }

    fn at(&self, layer: usize, pos: usize) -> usize {
        (layer * self.capacity + pos) * self.kv_dim
    }

    /// Stores keys and values (rows of `kv_dim`) for positions `pos..` of `layer`.
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = self.at(layer, pos);
        self.keys.write(at, k);
        self.values.write(at, v);
    }

    /// Marks `n` more positions as stored (after every layer has written them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    fn row<'a>(&self, store: &'a Store, layer: usize, pos: usize, offset: usize, len: usize) -> Row<'a> {
        let at = self.at(layer, pos) + offset;
        match store {
            Store::F32(s) => Row::F32(&s[at..at + len]),
            Store::F16(s) => Row::F16(&s[at..at + len]),
        }
    }

    /// Layer `layer`'s keys and values (`[position][kv_dim]`, every position
    /// the cache can hold) when stored as f16, for the fast attention kernel.
    pub(crate) fn f16_layer(&self, layer: usize) -> Option<(&[f16], &[f16])> {
        let range = self.at(layer, 0)..self.at(layer + 1, 0);
        match (&self.keys, &self.values) {
            (Store::F16(k), Store::F16(v)) => Some((&k[range.clone()], &v[range])),
            _ => None,
        }
    }

    /// Elements per position of a layer.
    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// `len` key elements from `offset` at `pos` of `layer`.
    pub(crate) fn key(&self, layer: usize, pos: usize, offset: usize, len: usize) -> Row<'_> {
        self.row(&self.keys, layer, pos, offset, len)
    }

    /// `len` value elements from `offset` at `pos` of `layer`.
    pub(crate) fn value(&self, layer: usize, pos: usize, offset: usize, len: usize) -> Row<'_> {
        self.row(&self.values, layer, pos, offset, len)
    }
}
