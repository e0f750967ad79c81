//! [`BlockBuf`]: the buffer a fetched block is assembled in, mapped on its own.
//!
//! Cache blocks are 1 MiB, live for as long as the LRU keeps them and are freed in whatever
//! order eviction picks. From glibc's heap that pattern fragments: after the first large free
//! glibc raises its mmap threshold past 1 MiB and serves later blocks from per-thread arenas,
//! whose freed holes it keeps. Measured with a 256 MiB cache: peak RSS 400 MiB from the heap,
//! 300 MiB with every block its own anonymous mapping, returned to the system on eviction.
//! Pinning glibc's threshold for the whole process instead (mallopt) did the same for reads but
//! made every 8 MiB upload part a fresh mapping too, costing a page fault per 4 KiB written: a
//! quarter more CPU per GiB uploaded. So only blocks are mapped; everything else keeps the heap.
//!
//! A fresh mapping costs a page fault per 4 KiB on first write (a quarter of the mount's CPU
//! with four readers on loopback), so mappings of evicted blocks are kept in a small pool and
//! handed to the next block of the same size; new ones are made with MAP_POPULATE, one system
//! call instead of 256 faults per MiB. The pool holds at most [`POOL_BYTES`].

use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// Blocks smaller than this stay on the heap: small allocations do not fragment it this way,
/// and a mapping per small object would cost a system call each.
const MAP_AT_LEAST: usize = 256 * 1024;

/// Most bytes of spare mappings kept for reuse.
const POOL_BYTES: usize = 8 * 1024 * 1024;

/// An unused mapping and its length.
struct Spare {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a spare mapping is owned by the pool alone until it is handed out.
unsafe impl Send for Spare {}

static POOL: Mutex<Vec<Spare>> = Mutex::new(Vec::new());

fn pool() -> MutexGuard<'static, Vec<Spare>> {
    // The pool is a list of free mappings; a poisoned one is still a valid list.
    POOL.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A fixed-capacity byte buffer, filled by appending, then frozen into [`Bytes`] without a copy.
pub struct BlockBuf {
    storage: Storage,
    len: usize,
}

enum Storage {
    Mapped { ptr: NonNull<u8>, capacity: usize },
    Heap(Vec<u8>),
}

// SAFETY: the mapping is owned exclusively by this value (no aliases outside its methods).
unsafe impl Send for Storage {}
// SAFETY: shared access only reads the initialized prefix.
unsafe impl Sync for Storage {}

impl BlockBuf {
    /// An empty buffer that holds exactly `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let storage = if capacity >= MAP_AT_LEAST {
            map(capacity).map_or_else(
                || Storage::Heap(Vec::with_capacity(capacity)),
                |ptr| Storage::Mapped { ptr, capacity },
            )
        } else {
            Storage::Heap(Vec::with_capacity(capacity))
        };
        BlockBuf { storage, len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Mapped { capacity, .. } => *capacity,
            Storage::Heap(vec) => vec.capacity(),
        }
    }

    /// Appends `data`, which must fit in the capacity left (the caller sizes blocks exactly).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        assert!(
            data.len() <= self.capacity() - self.len,
            "block buffer overflow: {} bytes into {} free",
            data.len(),
            self.capacity() - self.len
        );
        match &mut self.storage {
            Storage::Mapped { ptr, .. } => {
                // SAFETY: checked above that len + data.len() is within the mapping, and `data`
                // cannot alias a mapping this value owns exclusively.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        ptr.as_ptr().add(self.len),
                        data.len(),
                    );
                }
            }
            Storage::Heap(vec) => vec.extend_from_slice(data),
        }
        self.len += data.len();
    }

    pub fn freeze(mut self) -> Bytes {
        match &mut self.storage {
            Storage::Heap(vec) => Bytes::from(std::mem::take(vec)),
            // The mapping is unmapped when the last slice of the Bytes goes.
            Storage::Mapped { .. } => Bytes::from_owner(self),
        }
    }
}

impl AsRef<[u8]> for BlockBuf {
    fn as_ref(&self) -> &[u8] {
        match &self.storage {
            // SAFETY: the first `len` bytes of the mapping were written by extend_from_slice.
            Storage::Mapped { ptr, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), self.len)
            },
            Storage::Heap(vec) => vec,
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Mapped { ptr, capacity } = self {
            let len = *capacity;
            let mut pool = pool();
            let pooled: usize = pool.iter().map(|spare| spare.len).sum();
            if pooled + len <= POOL_BYTES {
                pool.push(Spare { ptr: *ptr, len });
                return;
            }
            drop(pool);
            // SAFETY: the mapping was made by `map` with this length and is unmapped only here.
            unsafe {
                libc::munmap(ptr.as_ptr().cast(), len);
            }
        }
    }
}

/// A mapping of `len` bytes: a spare one of that length from the pool, else a new anonymous
/// private mapping, or `None` if the system refuses one.
fn map(len: usize) -> Option<NonNull<u8>> {
    {
        let mut pool = pool();
        if let Some(at) = pool.iter().position(|spare| spare.len == len) {
            return Some(pool.swap_remove(at).ptr);
        }
    }
    // SAFETY: a fresh anonymous mapping has no other owner; failure is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(ptr.cast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_and_small_buffers_freeze_to_what_was_appended() {
        for capacity in [10, MAP_AT_LEAST, 1024 * 1024 + 3] {
            let mut buf = BlockBuf::with_capacity(capacity);
            let data: Vec<u8> = (0..capacity).map(|i| (i % 251) as u8).collect();
            let (head, tail) = data.split_at(capacity / 3);
            buf.extend_from_slice(head);
            buf.extend_from_slice(tail);
            assert_eq!(buf.len(), capacity);
            let frozen = buf.freeze();
            assert_eq!(&frozen[..], &data[..]);
            let slice = frozen.slice(1..5);
            drop(frozen);
            assert_eq!(&slice[..], &data[1..5], "a slice keeps the mapping alive");
        }
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn appending_past_the_capacity_panics_instead_of_writing_out_of_bounds() {
        let mut buf = BlockBuf::with_capacity(MAP_AT_LEAST);
        buf.extend_from_slice(&vec![0; MAP_AT_LEAST + 1]);
    }
}
