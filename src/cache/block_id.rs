//! The name of one cached block, shared by the memory tier (`block`) and the disk tier
//! (`disk`), so that neither has to import the other's module for it.

/// One block of one object version. The ETag is part of the key so that blocks of a replaced
/// object are never served for the new version (they simply age out of the LRU).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockId {
    pub key: String,
    pub etag: String,
    /// Block number: the block covers bytes `index * block_size ..` of the object.
    pub index: u64,
}
