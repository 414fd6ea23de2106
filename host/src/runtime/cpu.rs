//! How compile threads share the CPU with the threads serving requests.
//!
//! On a small machine a compile competes with traffic for the same cores.
//! This module gives each kind of compile its own rayon pool whose threads
//! carry a scheduling priority (nice value) and, on kernels with the EEVDF
//! scheduler (Linux 6.12 and later), a short time slice, so a request thread
//! that wakes up waits at most a fraction of a millisecond for a core.
//!
//! It only sets how threads are scheduled; what to compile, and when, is
//! the engine's business.

use std::sync::OnceLock;
use std::time::Duration;

/// Components larger than this compile at low priority (unless they are
/// compiled for the quick tier).
pub const LOW_PRIORITY_ABOVE: usize = 1 << 20;

/// How a compile shares the CPU with the threads serving requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// A small component: every compile thread at normal priority; it is
    /// over in a fraction of a second.
    Normal,
    /// Quick (Winch) code of a large component, which the app waits for:
    /// one thread at normal priority, so it gets a fair share of one core
    /// but never more than one core, and the others at low priority, so
    /// they only soak up CPU that traffic leaves idle.
    Quick,
    /// Optimized code of a large component, compiled while quick code
    /// serves (or, without tier-up, seconds of work): every thread at low
    /// priority.
    Background,
}

/// How one thread is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Nice value: 0 is normal, higher yields more.
    pub nice: i32,
    /// The longest the thread runs before the scheduler may hand the core to
    /// another runnable thread; `None` keeps the kernel's default.
    pub slice: Option<Duration>,
}

/// A compile thread the app waits for: normal priority, but short turns so
/// requests never wait long behind it.
pub const COMPILE_QUICK: Share = Share {
    nice: 0,
    slice: Some(Duration::from_micros(200)),
};

/// A compile thread nobody waits for: traffic gets the CPU first.
pub const COMPILE_BACKGROUND: Share = Share {
    nice: 10,
    slice: Some(Duration::from_micros(200)),
};

/// Sets how the calling thread is scheduled. Failing is harmless (the
/// thread keeps its default share), so it is only logged.
pub fn yield_to_requests(share: &Share) {
    let slice = share.slice.map_or(0, |s| s.as_nanos() as u64);
    if slice > 0 {
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: 0,
            sched_nice: share.nice,
            sched_priority: 0,
            sched_runtime: slice,
            sched_deadline: 0,
            sched_period: 0,
        };
        // SAFETY: `attr` is plain data, fully initialized, and outlives the
        // call; the kernel reads `size` bytes of it; pid 0 is this thread.
        let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const _, 0) };
        if set == 0 {
            return;
        }
        tracing::debug!(error = %std::io::Error::last_os_error(), "sched_setattr refused; setting the nice value only");
    }
    // SAFETY: gettid and setpriority have no memory-safety preconditions; on
    // Linux a thread id names just the calling thread.
    let failed = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, share.nice) != 0
    };
    if failed {
        tracing::debug!("could not lower the priority of a compile thread");
    }
}

/// The rayon pool for compiles of `urgency`, made on first use; `None` if it
/// could not be made, in which case rayon's global pool serves.
pub fn compile_pool(urgency: Urgency) -> Option<&'static rayon::ThreadPool> {
    static POOLS: OnceLock<[Option<rayon::ThreadPool>; 3]> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        let build = |urgency: Urgency| {
            rayon::ThreadPoolBuilder::new()
                .thread_name(move |i| format!("wasm-host-compile-{urgency:?}-{i}").to_lowercase())
                .start_handler(move |i| match (urgency, i) {
                    (Urgency::Normal, _) => {}
                    (Urgency::Quick, 0) => yield_to_requests(&COMPILE_QUICK),
                    _ => yield_to_requests(&COMPILE_BACKGROUND),
                })
                .build()
                .map_err(|e| tracing::warn!(error = %e, "cannot start a compile thread pool"))
                .ok()
        };
        [
            build(Urgency::Normal),
            build(Urgency::Quick),
            build(Urgency::Background),
        ]
    });
    pools[urgency as usize].as_ref()
}
