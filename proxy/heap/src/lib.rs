//! Giving the heap a burst freed back to the system.
//!
//! glibc's malloc returns memory to the kernel only from the top of a heap. A burst of
//! connections leaves its freed allocations spread through the heap, under allocations that
//! outlive them, so the process keeps that memory resident after the burst: `weft-bench
//! conns` measured 36 MiB of private memory still held a second after 8,000 idle connections
//! closed, against 1.1 MiB before them. [`Trimmer`] watches how much the allocator holds free
//! and, when that grew by more than a threshold since it last looked, asks glibc to give the
//! free pages back (`malloc_trim`, which releases whole free pages inside the heap too). A
//! busy proxy reuses what it frees, so what it holds free does not grow, and it is left alone.
//!
//! Elsewhere than glibc (musl, other systems) it does nothing: those allocators return memory
//! themselves or have no such call.

/// Decides when to trim, from successive readings of the bytes the allocator holds free.
#[derive(Debug)]
pub struct Trimmer {
    /// Trim when the free bytes exceed the floor by more than this.
    threshold: usize,
    /// The fewest free bytes seen since the last trim (after it, what it left).
    floor: Option<usize>,
}

/// What one [`Trimmer::tick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Nothing grew past the threshold (or this allocator cannot say).
    Idle,
    /// The allocator was asked to give free pages back; its free bytes before.
    Trimmed { free: usize },
}

impl Trimmer {
    /// Trims when the allocator's free bytes grow by more than `threshold`.
    pub fn new(threshold: usize) -> Self {
        Self {
            threshold,
            floor: None,
        }
    }

    /// Reads the allocator's free bytes and trims if they grew past the threshold.
    pub fn tick(&mut self) -> Tick {
        let Some(free) = sys::free_bytes() else {
            return Tick::Idle;
        };
        if !self.should_trim(free) {
            return Tick::Idle;
        }
        sys::trim();
        // Pages given back inside the heap stay free chunks (only unbacked), so what counts as
        // free after the trim is the new floor: only memory freed from now on raises it.
        self.floor = sys::free_bytes();
        Tick::Trimmed { free }
    }

    /// Whether `free` bytes held free call for a trim; records the floor otherwise.
    fn should_trim(&mut self, free: usize) -> bool {
        let floor = self.floor.map_or(free, |floor| floor.min(free));
        self.floor = Some(floor);
        free - floor > self.threshold
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    /// Bytes in free chunks of every arena (`mallinfo2`'s `fordblks`).
    pub(super) fn free_bytes() -> Option<usize> {
        // SAFETY: `mallinfo2` takes no arguments and returns a struct by value; glibc locks each
        // arena while it reads it.
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }

    /// Gives every arena's free pages back to the kernel (`malloc_trim(0)`).
    pub(super) fn trim() {
        // SAFETY: `malloc_trim` takes no pointers and changes only glibc's own free lists, under
        // each arena's lock; live allocations are untouched.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    pub(super) fn free_bytes() -> Option<usize> {
        None
    }

    pub(super) fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_when_free_memory_grew_past_the_threshold_since_the_floor() {
        let mut t = Trimmer::new(100);
        assert!(!t.should_trim(1_000), "the first reading sets the floor");
        assert!(!t.should_trim(1_100), "grown by exactly the threshold");
        assert!(!t.should_trim(400), "reused: the floor follows it down");
        assert!(
            t.should_trim(501),
            "grown past the threshold from the new floor"
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_burst_freed_is_trimmed_once_and_the_next_tick_is_idle() {
        let mut t = Trimmer::new(4 << 20);
        // Whatever the test harness holds free, from here on only growth counts.
        let _ = t.tick();
        let _ = t.tick();
        // 16 MiB in small blocks (each below glibc's mmap threshold, so on the heap); one in 64
        // is kept, so the freed runs lie between live blocks and the heap cannot shrink from
        // its top.
        let blocks: Vec<Vec<u8>> = (0..8192).map(|i| vec![i as u8; 2048]).collect();
        let kept: Vec<Vec<u8>> = blocks
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| (i % 64 == 0).then_some(b))
            .collect();
        assert!(
            matches!(t.tick(), Tick::Trimmed { free } if free > 4 << 20),
            "the freed blocks are trimmed"
        );
        assert_eq!(t.tick(), Tick::Idle, "nothing new was freed");
        drop(kept);
    }
}
