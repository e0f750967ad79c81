//! Sequential-access detection and the prefetch window it drives, as a pure state machine.
//!
//! A read that starts near where the stream so far ended (within a slop, because the kernel
//! issues several reads at once and they may arrive slightly out of order) continues the stream.
//! The window starts at one block on the second sequential read and doubles each time the
//! stream enters a new block, up to a cap: a reader that turns out to be sequential soon fetches
//! far ahead, while a short or random reader never pays for data it will not read. Any other
//! read is a jump: the window drops to zero and the new position starts a new stream, except a
//! forward skip that lands inside the prefetch window (the kernel skipping pages it cached).

/// How far (bytes, either way) a read may start from the stream's end and still continue it.
const MIN_SEQUENTIAL_SLOP: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The handle's first read.
    First,
    Sequential,
    /// A read away from the stream: the window was reset.
    Jump,
}

#[derive(Debug)]
pub(crate) struct AccessPattern {
    block_size: u64,
    max_window_blocks: u64,
    slop: u64,
    /// One past the furthest byte read in the current stream.
    stream_end: Option<u64>,
    window_blocks: u64,
    /// Blocks of this stream below this index were already handed to a prefetch: later reads
    /// scan the window only from here.
    prefetched_to: u64,
}

impl AccessPattern {
    pub(crate) fn new(block_size: u64, max_window_blocks: u64) -> Self {
        AccessPattern {
            block_size,
            max_window_blocks,
            slop: block_size.max(MIN_SEQUENTIAL_SLOP),
            stream_end: None,
            window_blocks: 0,
            prefetched_to: 0,
        }
    }

    /// Records a read of the non-empty range `offset..end`.
    pub(crate) fn observe(&mut self, offset: u64, end: u64) -> Access {
        let Some(stream_end) = self.stream_end else {
            self.stream_end = Some(end);
            return Access::First;
        };
        // A forward skip into the window keeps the stream: the kernel skips pages it still
        // holds in its page cache (a second pass over a file), and those holes are no jump.
        let window_bytes = self.window_blocks.saturating_mul(self.block_size);
        let forward_into_window = offset > stream_end && offset - stream_end <= window_bytes;
        if offset.abs_diff(stream_end) > self.slop && !forward_into_window {
            self.window_blocks = 0;
            self.prefetched_to = 0;
            self.stream_end = Some(end);
            return Access::Jump;
        }
        let entered_new_block = self.last_block(end) > self.last_block(stream_end);
        if self.window_blocks == 0 || entered_new_block {
            self.window_blocks = (self.window_blocks * 2).max(1).min(self.max_window_blocks);
        }
        self.stream_end = Some(stream_end.max(end));
        Access::Sequential
    }

    pub(crate) fn window_blocks(&self) -> u64 {
        self.window_blocks
    }

    /// The first block after the furthest one read: where prefetching starts.
    pub(crate) fn next_block(&self) -> u64 {
        self.stream_end.map_or(0, |end| self.last_block(end) + 1)
    }

    /// The blocks prefetch should consider: `from..stop`.
    pub(crate) fn prefetch_range(&self) -> std::ops::Range<u64> {
        let next = self.next_block();
        next.max(self.prefetched_to)..next.saturating_add(self.window_blocks)
    }

    /// Records that prefetch has dealt with every block below `reached`.
    pub(crate) fn note_prefetched(&mut self, reached: u64) {
        self.prefetched_to = self.prefetched_to.max(reached);
    }

    fn last_block(&self, end: u64) -> u64 {
        end.saturating_sub(1) / self.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    #[test]
    fn window_doubles_per_new_block_up_to_the_cap() {
        let mut pattern = AccessPattern::new(MIB, 8);
        let mut windows = Vec::new();
        let mut offset = 0;
        while offset < 12 * MIB {
            pattern.observe(offset, offset + 128 * KIB);
            windows.push(pattern.window_blocks());
            offset += 128 * KIB;
        }
        assert_eq!(windows[0], 0, "the first read alone does not prefetch");
        assert_eq!(
            windows[1], 1,
            "the second sequential read starts the window"
        );
        assert_eq!(windows[7], 1, "no growth within a block");
        assert_eq!(windows[8], 2, "entering block 1 doubles");
        assert_eq!(windows[16], 4);
        assert_eq!(windows[24], 8);
        assert_eq!(*windows.iter().max().unwrap(), 8, "capped");
    }

    #[test]
    fn slightly_reordered_reads_stay_sequential() {
        let mut pattern = AccessPattern::new(MIB, 64);
        assert_eq!(pattern.observe(0, 128 * KIB), Access::First);
        assert_eq!(pattern.observe(256 * KIB, 384 * KIB), Access::Sequential);
        assert_eq!(pattern.observe(128 * KIB, 256 * KIB), Access::Sequential);
        assert_eq!(pattern.next_block(), 1);
        assert_eq!(pattern.window_blocks(), 1);
    }

    #[test]
    fn a_jump_resets_the_window_and_starts_a_new_stream() {
        let mut pattern = AccessPattern::new(MIB, 64);
        for i in 0..40 {
            pattern.observe(i * 256 * KIB, (i + 1) * 256 * KIB);
        }
        assert!(pattern.window_blocks() > 1);
        assert_eq!(pattern.observe(100 * MIB, 100 * MIB + 4096), Access::Jump);
        assert_eq!(pattern.window_blocks(), 0);
        assert_eq!(pattern.next_block(), 101);
        assert_eq!(
            pattern.prefetch_range(),
            101..101,
            "no window, nothing to prefetch"
        );
        assert_eq!(
            pattern.observe(100 * MIB + 4096, 100 * MIB + 8192),
            Access::Sequential
        );
        assert_eq!(pattern.window_blocks(), 1);
    }

    #[test]
    fn the_prefetch_range_starts_after_what_was_already_prefetched() {
        let mut pattern = AccessPattern::new(MIB, 64);
        pattern.observe(0, 128 * KIB);
        pattern.observe(128 * KIB, 256 * KIB);
        assert_eq!(pattern.prefetch_range(), 1..2);
        pattern.note_prefetched(2);
        pattern.observe(256 * KIB, 384 * KIB);
        assert_eq!(pattern.prefetch_range(), 2..2);
        pattern.observe(MIB, MIB + 128 * KIB);
        assert_eq!(pattern.prefetch_range(), 2..4);
    }

    #[test]
    fn a_zero_cap_never_prefetches() {
        let mut pattern = AccessPattern::new(MIB, 0);
        for i in 0..10 {
            pattern.observe(i * MIB, (i + 1) * MIB);
        }
        assert_eq!(pattern.window_blocks(), 0);
    }

    #[test]
    fn a_forward_skip_into_the_window_keeps_the_stream() {
        let mut pattern = AccessPattern::new(MIB, 16);
        let mut offset = 0;
        while offset < 8 * MIB {
            pattern.observe(offset, offset + 128 * KIB);
            offset += 128 * KIB;
        }
        let window = pattern.window_blocks();
        assert!(window >= 4);
        // The kernel had the next 3 MiB cached and asks for what follows them.
        let skip_to = offset + 3 * MIB;
        assert_eq!(
            pattern.observe(skip_to, skip_to + 128 * KIB),
            Access::Sequential
        );
        assert!(pattern.window_blocks() >= window);
        // A skip beyond the window is still a jump.
        let far = skip_to + 100 * MIB;
        assert_eq!(pattern.observe(far, far + 128 * KIB), Access::Jump);
    }
}
