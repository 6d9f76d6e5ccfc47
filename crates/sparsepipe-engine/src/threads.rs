//! One rayon pool per thread count, shared by every engine in the process and by tract.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use rayon::ThreadPool;

use crate::error::{Error, Result};
use crate::options::below_one;

/// Environment variable that sets the thread count when none is given.
pub const NUM_THREADS_ENV: &str = "SPARSEPIPE_NUM_THREADS";

/// The thread count to use: `requested`, else `$SPARSEPIPE_NUM_THREADS`, else all cores.
pub fn resolve_num_threads(requested: Option<usize>) -> Result<usize> {
    if let Some(n) = requested {
        if n == 0 {
            return Err(below_one("num_threads", 0));
        }
        return Ok(n);
    }
    if let Ok(v) = std::env::var(NUM_THREADS_ENV) {
        let v = v.trim();
        if !v.is_empty() {
            return match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::Config(format!(
                    "{NUM_THREADS_ENV}={v:?} is not a positive integer; set it to a thread count \
                     such as 4, or unset it to use every core"
                ))),
            };
        }
    }
    Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// A process-wide rayon pool and the lock that admits one plan at a time into it.
#[derive(Debug)]
pub struct SharedPool {
    pool: Arc<ThreadPool>,
    running: Mutex<()>,
}

impl SharedPool {
    /// The rayon pool (tract's executor and our kernels run their parallel sections on it).
    pub fn pool(&self) -> &Arc<ThreadPool> {
        &self.pool
    }

    /// Runs `f` on a worker of the pool, one caller at a time.
    ///
    /// A whole plan runs on one worker, so every parallel section starts there instead of being
    /// handed over from the calling thread (a sleep/wake-up per operator). Admitting one plan at a
    /// time keeps a worker waiting inside one plan's parallel section from stealing another
    /// plan and re-entering tract's per-thread matmul scratch.
    ///
    /// While `f` runs, the pool's other workers stay awake: each runs the jobs `f` forks as they
    /// appear and spins between them, so a short parallel section starts at once instead of
    /// after a sleeping worker's wake-up (which took longer than half of a 100 µs operator).
    pub fn run_exclusive<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let _turn = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.pool.current_num_threads();
        self.pool.install(|| {
            let plan_thread = rayon::current_thread_index();
            let done = Arc::new(AtomicBool::new(false));
            // Set when `f` returns or unwinds, so no worker spins past it.
            let _stop = StopOnDrop(done.clone());
            for _ in 1..n {
                let done = done.clone();
                rayon::spawn(move || keep_warm(&done, plan_thread));
            }
            f()
        })
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs pending pool jobs, spinning between them, until `done`. Returns at once on the worker
/// running the plan (it may pick this job up while waiting on its own fork-join).
fn keep_warm(done: &AtomicBool, plan_thread: Option<usize>) {
    if rayon::current_thread_index() == plan_thread {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// The process-wide pool with `n` threads, created on first use and dropped with its last engine.
pub fn shared_pool(n: usize) -> Result<Arc<SharedPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Weak<SharedPool>>>> = OnceLock::new();
    let pools = POOLS.get_or_init(Default::default);
    let mut pools = pools.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pool) = pools.get(&n).and_then(Weak::upgrade) {
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("sparsepipe-{i}"))
        .build()
        .map_err(|e| Error::Config(format!("could not start {n} threads: {e}")))?;
    let shared = Arc::new(SharedPool { pool: Arc::new(pool), running: Mutex::new(()) });
    pools.insert(n, Arc::downgrade(&shared));
    Ok(shared)
}

/// Runs `f` on the rayon pool of the executor the plan runs with (so our kernels' parallel
/// sections use the plan's threads), or on this thread when the plan is single-threaded.
pub(crate) fn on_plan_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match tract_linalg::multithread::current_tract_executor() {
        tract_linalg::multithread::Executor::MultiThread(pool) => pool.install(f),
        _ => f(),
    }
}
