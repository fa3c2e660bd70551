//! The key/value cache: every layer's rotated keys and values for the
//! positions processed so far, stored as f32, f16 or q8_0 in fixed-size pages.
//!
//! A page holds a fixed number of consecutive positions of one layer's keys
//! (or values). Each layer's keys (and its values) lie in one reserved,
//! contiguous anonymous mapping, so the fast attention kernel reads them as
//! rows `p * stride`, whatever the page; the system commits a page's memory
//! when it is first written, so the bytes the cache holds grow with the
//! positions used, not with its capacity. [`KvCache::usage`] counts them
//! exactly, page by page.
//!
//! With a memory budget ([`KvCache::set_budget`]), once the pages exceed it
//! the oldest full pages outside the layer being computed are made cold: a
//! page that is all one value is stored as that value alone, any other is
//! LZ4-compressed, and its memory is returned to the system
//! (`MADV_DONTNEED`). Every page is read at every step in full attention, so
//! writing a layer first restores its cold pages into its mapping (the hot
//! layer) and returns the previous hot layer's restored pages. Without a
//! budget nothing of this runs: a decode step allocates nothing.

use std::str::FromStr;

use half::f16;
use memmap2::MmapMut;
use serde::Serialize;

use super::kv_pages::{self, Page};
use super::ModelError;
use crate::gguf::TensorType;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum KvType {
    /// Half precision, as llama.cpp stores it by default.
    #[default]
    F16,
    /// Single precision.
    F32,
    /// Blocks of 32 8-bit values with an f16 scale (llama.cpp's `-ctk/-ctv q8_0`).
    Q8_0,
}

impl KvType {
    /// Every type, by name.
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::F32, KvType::Q8_0];

    /// Bytes a row of `kv_dim` elements takes (whole blocks of [`KvType::block`]).
    pub fn row_bytes(self, kv_dim: usize) -> usize {
        let (block, bytes) = self.geometry();
        kv_dim / block * bytes
    }

    /// Elements per block: 32 for q8_0, else 1.
    pub fn block(self) -> usize {
        self.geometry().0
    }

    /// Elements and bytes per block.
    fn geometry(self) -> (usize, usize) {
        self.tensor_type().block_geometry().unwrap_or((1, 0))
    }

    /// The name llama.cpp gives it (`f16`, `f32`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Bytes per element as LZ4 sees them (its byte planes): 4, 2, or 1 for q8_0's blocks.
    fn element_bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
            KvType::Q8_0 => 1,
        }
    }

    fn tensor_type(self) -> TensorType {
        match self {
            KvType::F16 => TensorType::F16,
            KvType::F32 => TensorType::F32,
            KvType::Q8_0 => TensorType::Q8_0,
        }
    }
}

impl FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<KvType, String> {
        KvType::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
            format!("unknown KV cache type {s:?} (one of {})", names.join(", "))
        })
    }
}

/// The bytes a cache holds, counted page by page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KvUsage {
    /// Bytes of one page.
    pub page_bytes: usize,
    /// Bytes of the pages in memory (written, or restored for the hot layer).
    pub resident_bytes: usize,
    /// Bytes the compressed pages take.
    pub compressed_bytes: usize,
    /// The most `resident_bytes + compressed_bytes` ever held at once.
    pub peak_bytes: usize,
    /// Pages stored compressed.
    pub compressed_pages: usize,
    /// Pages stored as one repeated value.
    pub same_fill_pages: usize,
    /// Pages the budget tried to compress that LZ4 does not shrink (kept as they are).
    pub incompressible_pages: usize,
}

impl KvUsage {
    /// Bytes held now: resident pages and compressed ones.
    pub fn held_bytes(&self) -> usize {
        self.resident_bytes + self.compressed_bytes
    }

    /// The bytes of every page the budget made cold or tried to, over the
    /// bytes they take: a compressed page its LZ4 bytes, an incompressible
    /// one its own, a same-fill one its 8-byte value (`None` before any).
    pub fn compression_ratio(&self) -> Option<f64> {
        let pages = self.compressed_pages + self.incompressible_pages + self.same_fill_pages;
        let stored = self.compressed_bytes + self.incompressible_pages * self.page_bytes + 8 * self.same_fill_pages;
        (pages > 0).then(|| (pages * self.page_bytes) as f64 / stored as f64)
    }

    /// LZ4's ratio over the pages it shrank (`None` before any).
    pub fn lz4_ratio(&self) -> Option<f64> {
        (self.compressed_bytes > 0)
            .then(|| (self.compressed_pages * self.page_bytes) as f64 / self.compressed_bytes as f64)
    }

    fn hold(&mut self, resident: isize, compressed: isize) {
        self.resident_bytes = self.resident_bytes.saturating_add_signed(resident);
        self.compressed_bytes = self.compressed_bytes.saturating_add_signed(compressed);
        self.peak_bytes = self.peak_bytes.max(self.held_bytes());
    }
}

/// Where rows and pages lie.
#[derive(Debug, Clone, Copy)]
struct Layout {
    ty: KvType,
    kv_dim: usize,
    row_bytes: usize,
    /// Positions per page.
    page_positions: usize,
    pages_per_layer: usize,
}

impl Layout {
    fn page_bytes(&self) -> usize {
        self.page_positions * self.row_bytes
    }

    fn layer_bytes(&self) -> usize {
        self.pages_per_layer * self.page_bytes()
    }

    /// Byte offset of `pos` of `layer`.
    fn at(&self, layer: usize, pos: usize) -> usize {
        layer * self.layer_bytes() + pos * self.row_bytes
    }

    /// Index of the page holding `pos` of `layer`.
    fn page(&self, layer: usize, pos: usize) -> usize {
        layer * self.pages_per_layer + pos / self.page_positions
    }

    /// Byte range of page `page`.
    fn page_range(&self, page: usize) -> std::ops::Range<usize> {
        page * self.page_bytes()..(page + 1) * self.page_bytes()
    }
}

/// The least positions a page holds: a page is at least this many positions
/// and a whole number of the system's memory pages.
const MIN_PAGE_POSITIONS: usize = 64;

/// The system's memory page size.
fn system_page_bytes() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Positions per page for rows of `row_bytes`: the fewest, at least
/// [`MIN_PAGE_POSITIONS`], whose bytes are a whole number of system pages.
fn page_positions(row_bytes: usize) -> usize {
    let sys = system_page_bytes();
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let step = sys / gcd(row_bytes, sys).max(1);
    step * MIN_PAGE_POSITIONS.div_ceil(step)
}

/// One kind of row (keys or values) of every layer: a reserved mapping and the state of each page.
#[derive(Debug)]
struct Store {
    map: MmapMut,
    pages: Vec<Page>,
}

/// Elements a mapping can be viewed as: plain numbers, every bit pattern a value.
trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for f16 {}

/// `bytes` as elements of `T`.
fn view<T: Plain>(bytes: &[u8]) -> &[T] {
    let n = bytes.len() / std::mem::size_of::<T>();
    assert_eq!(bytes.as_ptr().align_offset(std::mem::align_of::<T>()), 0, "a KV row is misaligned");
    // SAFETY: the pointer is aligned for T (checked), the n elements lie within
    // `bytes` and share its lifetime, and T (f32, f16) has no invalid bit pattern.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), n) }
}

/// `bytes` as mutable elements of `T`.
fn view_mut<T: Plain>(bytes: &mut [u8]) -> &mut [T] {
    let n = bytes.len() / std::mem::size_of::<T>();
    assert_eq!(bytes.as_ptr().align_offset(std::mem::align_of::<T>()), 0, "a KV row is misaligned");
    // SAFETY: as in `view`; the borrow is unique, so no other view aliases it.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), n) }
}

impl Store {
    fn reserve(layout: &Layout, n_layer: usize) -> std::io::Result<Store> {
        let len = n_layer * layout.layer_bytes();
        let map = MmapMut::map_anon(len.max(1))?;
        Ok(Store { map, pages: vec![Page::Unwritten; n_layer * layout.pages_per_layer] })
    }

    /// Writes `rows` (rows of `kv_dim`) at positions `pos..` of `layer`,
    /// committing the pages first written.
    fn write(&mut self, l: &Layout, layer: usize, pos: usize, rows: &[f32], usage: &mut KvUsage) {
        let n = rows.len() / l.kv_dim.max(1);
        if n == 0 {
            return;
        }
        for page in l.page(layer, pos)..=l.page(layer, pos + n - 1) {
            match std::mem::replace(&mut self.pages[page], Page::Resident) {
                Page::Unwritten => usage.hold(l.page_bytes() as isize, 0),
                // A zero page was not restored (it reads as zeros): its memory is committed now.
                Page::SameFill(0) => {
                    usage.same_fill_pages -= 1;
                    usage.hold(l.page_bytes() as isize, 0);
                }
                // Restored with its layer: its memory is already counted.
                Page::SameFill(_) => usage.same_fill_pages -= 1,
                Page::Compressed(packed) => {
                    usage.compressed_pages -= 1;
                    usage.hold(0, -(packed.len() as isize));
                }
                Page::Incompressible => usage.incompressible_pages -= 1,
                Page::Resident => {}
            }
        }
        let bytes = &mut self.map[l.at(layer, pos)..l.at(layer, pos + n)];
        match l.ty {
            KvType::F32 => view_mut::<f32>(bytes).copy_from_slice(rows),
            KvType::F16 => view_mut::<f16>(bytes).iter_mut().zip(rows).for_each(|(d, &v)| *d = f16::from_f32(v)),
            KvType::Q8_0 => {
                let r = crate::quant::quantize(TensorType::Q8_0, rows, bytes);
                debug_assert!(r.is_ok(), "{r:?}");
            }
        }
    }

    /// Returns page `page`'s memory to the system (it then reads as zeros).
    fn release(&mut self, l: &Layout, page: usize) -> Result<(), ModelError> {
        let r = l.page_range(page);
        // SAFETY: MADV_DONTNEED on a private anonymous mapping only zeroes the
        // range; no reference into it is alive (`self` is borrowed mutably).
        unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, r.start, r.len()) }
            .map_err(|e| ModelError::KvCache(format!("cannot return a KV page's memory: {e}")))
    }

    /// Makes page `page` cold when it is resident: one value, or compressed.
    /// Returns whether it did.
    fn freeze(
        &mut self,
        l: &Layout,
        page: usize,
        usage: &mut KvUsage,
        scratch: &mut Vec<u8>,
    ) -> Result<bool, ModelError> {
        if self.pages[page] != Page::Resident {
            return Ok(false);
        }
        let cold = kv_pages::freeze(&self.map[l.page_range(page)], l.ty.element_bytes(), scratch);
        match &cold {
            Page::SameFill(_) => usage.same_fill_pages += 1,
            Page::Compressed(packed) => {
                usage.compressed_pages += 1;
                usage.hold(0, packed.len() as isize);
            }
            _ => usage.incompressible_pages += 1,
        }
        let frozen = cold.is_cold();
        self.pages[page] = cold;
        if frozen {
            self.release(l, page)?;
            usage.hold(-(l.page_bytes() as isize), 0);
        }
        Ok(frozen)
    }

    /// Restores (`hot`) or releases (`!hot`) the cold pages of `layer` in its mapping.
    fn heat(
        &mut self,
        l: &Layout,
        layer: usize,
        hot: bool,
        usage: &mut KvUsage,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ModelError> {
        let first = l.page(layer, 0);
        for page in first..first + l.pages_per_layer {
            // A zero page reads as zeros without memory.
            if !self.pages[page].is_cold() || self.pages[page] == Page::SameFill(0) {
                continue;
            }
            let bytes = l.page_bytes() as isize;
            if hot {
                let dst = &mut self.map[l.page_range(page)];
                kv_pages::thaw(&self.pages[page], dst, l.ty.element_bytes(), true, scratch)
                    .map_err(ModelError::KvCache)?;
                usage.hold(bytes, 0);
            } else {
                self.release(l, page)?;
                usage.hold(-bytes, 0);
            }
        }
        Ok(())
    }
}

/// A borrowed row of the cache.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
    /// q8_0 blocks.
    Q8_0(&'a [u8]),
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
            Row::Q8_0(r) => {
                let out = &mut buf[..r.len() / KvType::Q8_0.row_bytes(KvType::Q8_0.block()) * KvType::Q8_0.block()];
                let done = crate::quant::dequantize(TensorType::Q8_0, r, out);
                debug_assert!(done.is_ok(), "{done:?}");
                out
            }
        }
    }
}

/// Keys and values for `len` positions of every layer, with room for `capacity`.
#[derive(Debug)]
pub struct KvCache {
    layout: Layout,
    n_layer: usize,
    capacity: usize,
    len: usize,
    keys: Store,
    values: Store,
    usage: KvUsage,
    /// Bytes the pages may hold, when a budget is set.
    budget: Option<usize>,
    /// The layer whose cold pages are restored in its mapping.
    hot: Option<usize>,
    /// A page's byte planes, while one is compressed or restored.
    scratch: Vec<u8>,
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
    /// overflows or the system refuses the address space, or
    /// [`ModelError::KvCache`] for a q8_0 cache whose rows are not whole blocks.
    pub fn try_new(ty: KvType, n_layer: usize, kv_dim: usize, capacity: usize) -> Result<KvCache, ModelError> {
        if !kv_dim.is_multiple_of(ty.block()) {
            return Err(ModelError::KvCache(format!(
                "a {} cache needs rows of whole {}-element blocks; this model's are {kv_dim}",
                ty.name(),
                ty.block()
            )));
        }
        let refused = |e: &dyn std::fmt::Display| {
            // In u128, the size of any request is exact.
            let bytes = 2 * n_layer as u128 * capacity as u128 * ty.row_bytes(kv_dim) as u128;
            ModelError::OutOfMemory { what: format!("a KV cache of {capacity} positions ({bytes} bytes): {e}") }
        };
        let row_bytes = ty.row_bytes(kv_dim);
        let page_positions = page_positions(row_bytes);
        let pages_per_layer = capacity.div_ceil(page_positions);
        let layout = Layout { ty, kv_dim, row_bytes, page_positions, pages_per_layer };
        pages_per_layer
            .checked_mul(layout.page_positions)
            .and_then(|n| n.checked_mul(row_bytes))
            .and_then(|n| n.checked_mul(n_layer))
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| refused(&"too large"))?;
        let keys = Store::reserve(&layout, n_layer).map_err(|e| refused(&e))?;
        let values = Store::reserve(&layout, n_layer).map_err(|e| refused(&e))?;
        let usage = KvUsage { page_bytes: layout.page_bytes(), ..KvUsage::default() };
        Ok(KvCache {
            layout,
            n_layer,
            capacity,
            len: 0,
            keys,
            values,
            usage,
            budget: None,
            hot: None,
            scratch: Vec::new(),
        })
    }

    /// Sets (or, with `None`, lifts) the bytes the pages may hold; beyond it
    /// the oldest full pages are made cold as the cache grows.
    pub fn set_budget(&mut self, bytes: Option<usize>) {
        self.budget = bytes;
    }

    /// The bytes the pages may hold, when a budget is set.
    pub fn budget(&self) -> Option<usize> {
        self.budget
    }

    /// Element type.
    pub fn kv_type(&self) -> KvType {
        self.layout.ty
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

    /// Layers.
    pub fn layers(&self) -> usize {
        self.n_layer
    }

    /// Positions per page.
    pub fn page_positions(&self) -> usize {
        self.layout.page_positions
    }

    /// Bytes the cache's keys and values take at full capacity, every page
    /// resident (what it reserves, not what it holds: see [`KvCache::usage`]).
    pub fn bytes(&self) -> usize {
        2 * self.n_layer * self.layout.layer_bytes()
    }

    /// The bytes the pages hold now, and at most so far.
    pub fn usage(&self) -> KvUsage {
        self.usage
    }

    /// Stores keys and values (rows of `kv_dim`) for positions `pos..` of
    /// `layer`, first restoring that layer's cold pages (with a budget, then
    /// making older pages cold while the pages exceed it).
    pub(crate) fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<(), ModelError> {
        if self.budget.is_some() || self.hot.is_some() || self.usage.compressed_pages + self.usage.same_fill_pages > 0 {
            self.heat(layer)?;
        }
        let (l, u) = (&self.layout, &mut self.usage);
        self.keys.write(l, layer, pos, k, u);
        self.values.write(l, layer, pos, v, u);
        match self.budget {
            Some(budget) => self.keep_to(budget),
            None => Ok(()),
        }
    }

    /// Makes `layer` the hot layer: its cold pages restored, the previous hot layer's released.
    fn heat(&mut self, layer: usize) -> Result<(), ModelError> {
        if self.hot == Some(layer) {
            return Ok(());
        }
        let (l, u, s) = (&self.layout, &mut self.usage, &mut self.scratch);
        if let Some(old) = self.hot.take() {
            self.keys.heat(l, old, false, u, s)?;
            self.values.heat(l, old, false, u, s)?;
        }
        self.keys.heat(l, layer, true, u, s)?;
        self.values.heat(l, layer, true, u, s)?;
        self.hot = Some(layer);
        Ok(())
    }

    /// Makes the oldest full pages outside the hot layer cold, oldest first,
    /// until the pages hold at most `budget` bytes or none is left to make cold.
    fn keep_to(&mut self, budget: usize) -> Result<(), ModelError> {
        let l = self.layout;
        for at in 0..self.len / l.page_positions {
            for layer in (0..self.n_layer).filter(|&layer| Some(layer) != self.hot) {
                for store in [&mut self.keys, &mut self.values] {
                    if self.usage.held_bytes() <= budget {
                        return Ok(());
                    }
                    store.freeze(&l, layer * l.pages_per_layer + at, &mut self.usage, &mut self.scratch)?;
                }
            }
        }
        Ok(())
    }

    /// Marks `n` more positions as stored (after every layer has written them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    fn row<'a>(&self, store: &'a Store, layer: usize, pos: usize, offset: usize, len: usize) -> Row<'a> {
        debug_assert!(self.readable(layer), "layer {layer} has cold pages and is not the hot layer");
        let l = &self.layout;
        let at = l.at(layer, pos);
        match l.ty {
            KvType::F32 => Row::F32(&view::<f32>(&store.map[at..at + l.row_bytes])[offset..offset + len]),
            KvType::F16 => Row::F16(&view::<f16>(&store.map[at..at + l.row_bytes])[offset..offset + len]),
            KvType::Q8_0 => {
                debug_assert!(offset.is_multiple_of(l.ty.block()) && len.is_multiple_of(l.ty.block()));
                Row::Q8_0(&store.map[at + l.ty.row_bytes(offset)..at + l.ty.row_bytes(offset + len)])
            }
        }
    }

    /// Whether every page of `layer` can be read where it lies.
    fn readable(&self, layer: usize) -> bool {
        let pages = layer * self.layout.pages_per_layer..(layer + 1) * self.layout.pages_per_layer;
        self.hot == Some(layer)
            || [&self.keys, &self.values].iter().all(|s| s.pages[pages.clone()].iter().all(|p| !p.is_cold()))
    }

    /// Layer `layer`'s keys and values (`[position][kv_dim]`, every position
    /// the cache can hold) when stored as f16, for the fast attention kernel.
    pub(crate) fn f16_layer(&self, layer: usize) -> Option<(&[f16], &[f16])> {
        if self.layout.ty != KvType::F16 {
            return None;
        }
        debug_assert!(self.readable(layer), "layer {layer} has cold pages and is not the hot layer");
        let range = self.layout.at(layer, 0)..self.layout.at(layer + 1, 0);
        Some((view(&self.keys.map[range.clone()]), view(&self.values.map[range])))
    }

    /// Elements per position of a layer.
    pub(crate) fn kv_dim(&self) -> usize {
        self.layout.kv_dim
    }

    /// `len` key elements from `offset` at `pos` of `layer`.
    pub(crate) fn key(&self, layer: usize, pos: usize, offset: usize, len: usize) -> Row<'_> {
        self.row(&self.keys, layer, pos, offset, len)
    }

    /// `len` value elements from `offset` at `pos` of `layer`.
    pub(crate) fn value(&self, layer: usize, pos: usize, offset: usize, len: usize) -> Row<'_> {
        self.row(&self.values, layer, pos, offset, len)
    }

    /// The bytes of every page of the keys, then of the values (cold pages
    /// read as zeros): what the same-fill detector and the compressor see.
    pub fn page_bytes(&self) -> impl Iterator<Item = &[u8]> {
        let page = self.layout.page_bytes().max(1);
        self.keys.map.chunks_exact(page).chain(self.values.map.chunks_exact(page))
    }
}

impl KvCache {
    /// Recompresses the first compressed page outside the hot layer with one
    /// bit of its bytes flipped: a compressor whose round trip loses a bit.
    /// Returns whether there was such a page.
    #[cfg(test)]
    pub(crate) fn flip_a_compressed_bit(&mut self) -> bool {
        let (per_layer, hot) = (self.layout.pages_per_layer, self.hot);
        let (mut bytes, width) = (vec![0u8; self.layout.page_bytes()], self.layout.ty.element_bytes());
        for store in [&mut self.keys, &mut self.values] {
            let cold = |(i, p): &(usize, &Page)| matches!(p, Page::Compressed(_)) && hot != Some(i / per_layer);
            let Some(i) = store.pages.iter().enumerate().find(cold).map(|(i, _)| i) else {
                continue;
            };
            kv_pages::thaw(&store.pages[i], &mut bytes, width, false, &mut self.scratch).unwrap();
            bytes[0] ^= 0x40;
            let flipped = kv_pages::freeze(&bytes, width, &mut self.scratch);
            if matches!(flipped, Page::Compressed(_)) {
                store.pages[i] = flipped;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, kv_dim: usize, seed: f32) -> Vec<f32> {
        (0..n * kv_dim).map(|i| (i as f32 * seed).sin()).collect()
    }

    #[test]
    fn memory_grows_with_the_positions_written_not_the_capacity() {
        for ty in KvType::ALL {
            let mut c = KvCache::new(ty, 3, 64, 4096);
            let page = c.usage().page_bytes;
            assert_eq!(page, c.page_positions() * ty.row_bytes(64));
            assert!(page.is_multiple_of(system_page_bytes()), "{ty:?}");
            assert_eq!(c.usage().resident_bytes, 0, "{ty:?}: nothing written");
            for layer in 0..3 {
                c.write(layer, 0, &rows(10, 64, 0.1), &rows(10, 64, 0.2)).unwrap();
            }
            c.advance(10);
            assert_eq!(c.usage().resident_bytes, 3 * 2 * page, "{ty:?}: one page of keys and values per layer");
            let p = c.page_positions();
            c.write(1, 10, &rows(p, 64, 0.1), &rows(p, 64, 0.2)).unwrap();
            assert_eq!(c.usage().resident_bytes, 8 * page, "{ty:?}: layer 1 spans two pages");
            assert_eq!(c.usage().peak_bytes, 8 * page);
            assert_eq!(c.bytes(), 2 * 3 * 4096usize.div_ceil(p) * page);
        }
    }

    #[test]
    fn each_type_reads_back_what_was_written() {
        let (k, v) = (rows(5, 64, 0.37), rows(5, 64, 0.11));
        for (ty, tol) in [(KvType::F32, 0.0), (KvType::F16, 1e-3), (KvType::Q8_0, 1e-2)] {
            let mut c = KvCache::new(ty, 2, 64, 300);
            c.write(1, 0, &k, &v).unwrap();
            c.advance(5);
            let mut buf = [0.0f32; 64];
            for p in 0..5 {
                let got = c.key(1, p, 32, 32).as_f32(&mut buf).to_vec();
                let want = &k[p * 64 + 32..p * 64 + 64];
                assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() <= tol), "{ty:?} {got:?} vs {want:?}");
                let got = c.value(1, p, 0, 64).as_f32(&mut buf);
                assert!(got.iter().zip(&v[p * 64..]).all(|(a, b)| (a - b).abs() <= tol), "{ty:?}");
            }
        }
    }

    #[test]
    fn kv_types_parse_by_their_llama_cpp_names() {
        for ty in KvType::ALL {
            assert_eq!(ty.name().parse::<KvType>(), Ok(ty));
        }
        assert_eq!("q4_0".parse::<KvType>().unwrap_err(), "unknown KV cache type \"q4_0\" (one of f16, f32, q8_0)");
        let err = KvCache::try_new(KvType::Q8_0, 1, 48, 8).unwrap_err().to_string();
        assert!(err.contains("whole 32-element blocks; this model's are 48"), "{err}");
    }

    /// Fills `layers` layers to `n` positions a step at a time, as decoding does.
    fn decode(c: &mut KvCache, layers: usize, n: usize) {
        for pos in c.len()..n {
            for layer in 0..layers {
                // Keys vary; values of layer 0 stay zero (same-fill pages).
                let v = if layer == 0 { vec![0.0; 64] } else { rows(1, 64, 0.01 * (pos + 1) as f32) };
                c.write(layer, pos, &rows(1, 64, (pos % 7) as f32 * 0.5 + 0.1), &v).unwrap();
            }
            c.advance(1);
        }
    }

    #[test]
    fn a_budget_keeps_the_pages_to_it_and_reads_back_every_position() {
        let (layers, n) = (3, 1000);
        let mut free = KvCache::new(KvType::F16, layers, 64, 1024);
        decode(&mut free, layers, n);
        let mut tight = KvCache::new(KvType::F16, layers, 64, 1024);
        let budget = free.usage().resident_bytes / 2;
        tight.set_budget(Some(budget));
        decode(&mut tight, layers, n);
        let u = tight.usage();
        let layer = 2 * 1024usize.div_ceil(tight.page_positions()) * u.page_bytes;
        assert!(u.same_fill_pages > 0 && u.compressed_pages > 0, "{u:?}");
        assert!(u.held_bytes() <= budget + layer, "{u:?}: within the budget and the hot layer");
        assert!(u.compression_ratio().unwrap() > 1.0, "{u:?}");
        let mut a = [0.0f32; 64];
        let mut b = [0.0f32; 64];
        for layer in 0..layers {
            tight.write(layer, n, &rows(1, 64, 0.3), &rows(1, 64, 0.4)).unwrap();
            free.write(layer, n, &rows(1, 64, 0.3), &rows(1, 64, 0.4)).unwrap();
            for p in 0..=n {
                let (x, y) = (tight.key(layer, p, 0, 64), free.key(layer, p, 0, 64));
                assert_eq!(x.as_f32(&mut a), y.as_f32(&mut b), "layer {layer} key {p}");
                assert_eq!(tight.value(layer, p, 0, 64).as_f32(&mut a), free.value(layer, p, 0, 64).as_f32(&mut b));
            }
            assert_eq!(tight.f16_layer(layer).unwrap(), free.f16_layer(layer).unwrap());
        }
        // Rewinding and writing over cold pages restores them first.
        tight.truncate(10);
        free.truncate(10);
        decode(&mut tight, layers, 200);
        decode(&mut free, layers, 200);
        tight.write(1, 200, &rows(1, 64, 0.3), &rows(1, 64, 0.4)).unwrap();
        free.write(1, 200, &rows(1, 64, 0.3), &rows(1, 64, 0.4)).unwrap();
        assert_eq!(tight.f16_layer(1).unwrap(), free.f16_layer(1).unwrap());
    }

    #[test]
    fn a_decode_step_without_a_budget_allocates_nothing() {
        use crate::model::Logits;
        let m = crate::model::tests::tied_model();
        let mut cache = m.new_cache(200);
        let mut logits = Vec::new();
        m.forward_into(&[1, 2, 3], &mut cache, Logits::Last, None, &mut logits).unwrap();
        m.forward_into(&[4], &mut cache, Logits::Last, None, &mut logits).unwrap();
        // 150 steps cross two page boundaries: a page's memory comes from the
        // system, not the heap. The counter is shared with the tests counting
        // at the same time, which only add: the least of five windows is kept.
        let least = (0..5)
            .map(|_| {
                crate::kernels::test_alloc::counting(|| {
                    let region = stats_alloc::Region::new(&stats_alloc::INSTRUMENTED_SYSTEM);
                    for t in 0..30 {
                        m.forward_into(&[t % 40], &mut cache, Logits::Last, None, &mut logits).unwrap();
                    }
                    region.change().allocations
                })
            })
            .min();
        assert_eq!(least, Some(0));
        assert_eq!(cache.usage().resident_bytes, 2 * 2 * 3 * cache.usage().page_bytes, "three pages per layer");
    }

    #[test]
    fn q8_0_needs_heads_of_whole_blocks_and_runs_the_real_model() {
        let mut m = crate::model::tests::tied_model();
        m.kv_type = KvType::Q8_0;
        let err = m.try_new_cache(8).unwrap_err().to_string();
        assert_eq!(err, "KV cache: a q8_0 cache needs heads of whole 32-element blocks; this model's are 16");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
        if !path.exists() {
            eprintln!("skipped the real model's q8_0 run: {} is absent", path.display());
            return;
        }
        let mut m = crate::model::Model::load(&path).unwrap();
        let tok = crate::tokenizer::Tokenizer::from_header(&m.file.header).unwrap();
        let text = "def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n    pivot = arr[len(arr) // 2]\n";
        let tokens = tok.encode(text, true);
        let top1 = |m: &crate::model::Model| {
            let all = m.forward(&tokens, &mut m.new_cache(tokens.len()), crate::model::Logits::All).unwrap();
            all.chunks_exact(m.config.vocab_size).map(crate::sample::argmax).collect::<Vec<_>>()
        };
        m.kv_type = KvType::F32;
        let full = top1(&m);
        m.kv_type = KvType::Q8_0;
        let q8 = top1(&m);
        let agree = full.iter().zip(&q8).filter(|(a, b)| a == b).count();
        eprintln!("q8_0 agrees with f32 at {agree} of {} positions", tokens.len());
        assert!(agree * 10 >= tokens.len() * 9, "q8_0 agrees with f32 at {agree} of {} positions", tokens.len());
    }
}
