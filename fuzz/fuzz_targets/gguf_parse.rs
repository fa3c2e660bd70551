//! Feeds arbitrary bytes to the GGUF parser and to the APR parser (as given,
//! and with the APR magic and header checksum made to match so that the
//! fields behind them are reached); anything accepted goes to the
//! model-config and tokenizer readers. None may panic or allocate
//! without bound. Every GGUF header accepted is also written as APR and must
//! read back with the same metadata and tensor table.
//!
//! libFuzzer's `-malloc_limit_mb` needs a sanitizer's allocator hooks, which
//! `--sanitizer none` lacks, so this target enforces it itself: when
//! `FUZZ_MALLOC_LIMIT_MB` is set (scripts/fuzz.sh sets it to the value it
//! passes as `-malloc_limit_mb`), a larger single allocation fails, and the
//! allocation-failure abort that follows is a finding.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use falsify::apr::{self, AprHeader};
use falsify::gguf::GgufHeader;
use falsify::model::ModelConfig;
use falsify::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

/// The system allocator, refusing any single allocation over [`MALLOC_LIMIT_BYTES`].
struct LimitedAlloc;

/// The largest allocation [`LimitedAlloc`] grants (no limit until `init` sets one).
static MALLOC_LIMIT_BYTES: AtomicUsize = AtomicUsize::new(usize::MAX);

// SAFETY: every call is passed unchanged to the system allocator, except that
// an oversized allocation returns null, which callers must handle anyway.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MALLOC_LIMIT_BYTES.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MALLOC_LIMIT_BYTES.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `realloc`'s contract, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LimitedAlloc = LimitedAlloc;

fuzz_target!(
    init: {
        if let Some(mb) = std::env::var("FUZZ_MALLOC_LIMIT_MB").ok().and_then(|v| v.parse::<usize>().ok()) {
            MALLOC_LIMIT_BYTES.store(mb << 20, Ordering::Relaxed);
        }
    },
    |data: &[u8]| {
        if let Ok(header) = GgufHeader::parse(data) {
            read_model(&header);
            let tensors: Vec<&[u8]> =
                header.tensors.iter().map(|t| &data[t.offset as usize..(t.offset + t.size) as usize]).collect();
            let mut written = Vec::new();
            apr::write_apr(&mut written, &header, &tensors, &mut |_| {}).expect("writing to memory cannot fail");
            let back = AprHeader::parse(&written).expect("an APR file just written reads back");
            assert_eq!(back.model.metadata.len(), header.metadata.len());
            for (a, g) in back.model.tensors.iter().zip(&header.tensors) {
                assert_eq!((&a.name, &a.dims, a.ty, a.size), (&g.name, &g.dims, g.ty, g.size));
            }
            assert_eq!(back.model.tensors.len(), header.tensors.len());
        }
        // The APR reader on the bytes as given, and with the magic and the
        // header checksum made right, so that mutations reach the fields behind them.
        let mut as_apr = data.to_vec();
        if let Some(magic) = as_apr.get_mut(..4) {
            magic.copy_from_slice(apr::MAGIC);
        }
        apr::seal_header(&mut as_apr);
        for bytes in [data, &as_apr[..]] {
            if let Ok(h) = AprHeader::parse(bytes) {
                for i in 0..h.model.tensors.len() {
                    let _ = h.verify_tensor(bytes, i);
                }
                read_model(&h.model);
            }
        }
    }
);

/// The model-config and tokenizer readers on a parsed header.
fn read_model(header: &GgufHeader) {
    let _ = ModelConfig::from_header(header);
    if let Ok(tok) = Tokenizer::from_header(header) {
        let ids = tok.encode("hello <|im_start|> world 123", true);
        let _ = tok.decode(&ids);
    }
}
