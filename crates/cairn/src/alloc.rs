//! The memory allocator a job's binary is advised to install.
//!
//! Records move between threads: the thread of a source allocates a
//! record's strings and vectors, the thread of the operator after a
//! `key_by` frees them. The system allocator on Linux (glibc) is slow at
//! freeing memory another thread allocated: once the freeing thread's small
//! per-size cache is full, each free takes the lock of the allocating
//! thread's arena and sorts the chunk into its bins; mimalloc returns such
//! a block to the page it came from with one atomic operation. In Nexmark's
//! window queries, installing mimalloc cut the CPU time by a quarter to a
//! third, and restores and snapshots of 10M keys took a third less CPU too.
//! The cost: a job whose records own no heap memory and whose state is large
//! (10M keys) runs about 7% slower and peaks at about 40% more memory
//! (`docs/benchmarks.md`); such a job may keep the system allocator.
//!
//! A job installs it with two lines in its binary:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: cairn::alloc::MiMalloc = cairn::alloc::MiMalloc;
//!
//! fn main() {
//!     // build and execute the job
//! }
//! ```
//!
//! It is a re-export (cargo feature `mimalloc`, on by default), so that a
//! job needs no dependency of its own for it; a library cannot choose the
//! allocator for the binary it ends up in, so Cairn does not install it.

#[cfg(feature = "mimalloc")]
pub use mimalloc::MiMalloc;
