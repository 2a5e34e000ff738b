//! mimalloc's settings for training.
//!
//! A training step frees and allocates the same tensor sizes every step. With mimalloc's
//! defaults, memory left free for a second is handed back to the kernel ("purged": decommitted), and
//! the next step's allocations fault it in again, the kernel zeroing every page: on the
//! development machine (2-core AMD EPYC VM), `clear_page_erms` was 19-33% of a DA step's
//! samples and the process spent 1.7-4.2 s in the kernel over 12 DA steps. Never purging
//! (`purge_delay = -1`) and resetting instead of decommitting when it does
//! (`purge_decommits = 0`) brought that to under 1 s (docs/performance.md). The process keeps
//! its peak memory until it exits, which is what a training run needs anyway.
//!
//! `MIMALLOC_PURGE_DELAY` and `MIMALLOC_PURGE_DECOMMITS` in the environment win over these.

/// mimalloc 3's option numbers (`mi_option_e` in mimalloc.h of libmimalloc-sys 0.1.49; the
/// crate names only some of them). `tests::option_numbers_match_the_linked_mimalloc` checks
/// them against the defaults of its options.c.
const PURGE_DECOMMITS: libmimalloc_sys::mi_option_t = 5;
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the options above unless the environment sets them. Call first thing in `main`.
pub fn keep_freed_memory() {
    for (option, env, value) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", -1),
        (PURGE_DECOMMITS, "MIMALLOC_PURGE_DECOMMITS", 0),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: plain setters of mimalloc's global option table.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_numbers_match_the_linked_mimalloc() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_PURGE_DECOMMITS").is_some()
        {
            return; // the environment decides; nothing to compare with
        }
        // The defaults in the vendored options.c: purge_delay 1000 ms, purge_decommits 1.
        // Wrong numbers would read some other option.
        // SAFETY: plain getters and setters of mimalloc's option table.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), 1000);
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DECOMMITS), 1);
            keep_freed_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DELAY), -1);
            assert_eq!(libmimalloc_sys::mi_option_get(PURGE_DECOMMITS), 0);
        }
    }
}
