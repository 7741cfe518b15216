//! Blocking calls without blocking the worker: [`blocking`] runs a closure
//! on a pool thread while the calling goroutine is parked.
//!
//! Go's answer to a goroutine entering a blocking system call is to hand
//! its P to another M (`entersyscall`, `handoffp`, and `sysmon`'s `retake`
//! after 20 µs), so the goroutines queued on that P run elsewhere while the
//! call blocks its M. Here goroutines stay on their worker (see
//! `runtime`), so handing the worker's queue to another thread would move
//! them, which safe Rust cannot allow. (A runtime made by the `unsafe`
//! `Runtime::with_migration` does move them: `sysmon` finds the worker
//! stuck and an idle worker takes its queued goroutines, `Proc::stuck`.
//! The call still holds its thread there.) The call moves instead: the closure
//! runs on a pool thread (as `tokio::task::spawn_blocking` does), and the
//! goroutine parks until it is done; the worker runs its other goroutines
//! meanwhile. The price is a hand-off between threads per call (a few
//! microseconds), so wrap calls that may block for long — `read` on a pipe
//! or socket, `accept`, `waitpid`, a lock held by a thread outside the
//! runtime — not every `getpid`.
//!
//! The closure may borrow from the goroutine's stack (it is `Send`, not
//! `'static`): the goroutine does not return before the closure has been
//! called and dropped, as with `std::thread::scope`. A panic in it is
//! resumed in the goroutine. Pool threads are made on demand and end after
//! ten idle seconds.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::park::{park, Waker};
use crate::queue::Shared;
use crate::region::{lock, lock_plain};

thread_local! {
    /// The runtime of the goroutine whose call this pool thread runs,
    /// while it runs it: [`crate::go`] there starts goroutines on it, as
    /// it would in the goroutine.
    static ENTERED: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// The runtime whose `blocking` call the calling thread runs, if any.
pub(crate) fn entered() -> Option<Arc<Shared>> {
    ENTERED.with(|e| e.borrow().clone())
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle pool thread waits for work before it ends.
const IDLE: Duration = Duration::from_secs(10);

struct Pool {
    /// Jobs, how many threads are waiting for one, and the fork generation
    /// those threads belong to (in a forked child they do not exist).
    state: Mutex<(VecDeque<Job>, usize, u64)>,
    more: Condvar,
}

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    // Not switched out inside the initialisation, which another goroutine
    // of the worker would wait for (blocking the thread).
    crate::region::no_yield(|| {
        P.get_or_init(|| Pool {
            state: Mutex::new((VecDeque::new(), 0, crate::fork::generation())),
            more: Condvar::new(),
        })
    })
}

fn pool_thread(p: &'static Pool) {
    let mut st = lock_plain(&p.state);
    loop {
        if let Some(job) = st.0.pop_front() {
            drop(st);
            job();
            st = lock_plain(&p.state);
            continue;
        }
        st.1 += 1;
        let (next, timeout) = p
            .more
            .wait_timeout(st, IDLE)
            .unwrap_or_else(|e| e.into_inner());
        st = next;
        st.1 -= 1;
        if timeout.timed_out() && st.0.is_empty() {
            return;
        }
    }
}

/// Queues `job` for a pool thread, starting one if none is waiting.
/// Returns the job if no thread could be started.
fn submit(job: Job) -> Result<(), Job> {
    let p = pool();
    // A no-yield region: a goroutine switched out holding this lock would
    // leave the pool threads (and any goroutine of its worker that calls
    // `blocking`) waiting for it. Not a no-preempt one: queueing the job
    // and starting a thread allocate, and a stop must be able to park
    // this thread here (see `linked`); no stopped world needs this lock.
    crate::region::no_yield(|| {
        let mut st = lock_plain(&p.state);
        let generation = crate::fork::generation();
        if st.2 != generation {
            // A forked child: the waiting threads were the parent's.
            st.1 = 0;
            st.2 = generation;
        }
        st.0.push_back(job);
        if st.1 > 0 {
            p.more.notify_one();
            return Ok(());
        }
        drop(st);
        match std::thread::Builder::new()
            .name("pardon-blocking".into())
            .spawn(move || pool_thread(p))
        {
            Ok(_) => Ok(()),
            Err(_) => {
                // Take it back, if no other thread took it meanwhile.
                let mut st = lock_plain(&p.state);
                match st.0.pop_back() {
                    Some(job) => Err(job),
                    None => Ok(()),
                }
            }
        }
    })
}

/// Completion of one call: set by the pool thread once the closure has
/// been called and dropped.
#[derive(Default)]
struct Done {
    state: Mutex<(bool, Option<Waker>)>,
}

/// Runs `f`, which may block its thread for long, so that the calling
/// goroutine's worker goes on running its other goroutines: `f` runs on a
/// pool thread and the goroutine is parked until it returns. Outside a
/// runtime, `f` simply runs. A panic in `f` is resumed here.
///
/// `f` runs on another thread: it sees that thread's thread-locals, not
/// the goroutine's worker's. It is not a goroutine: it waits as threads
/// outside the runtime do, and [`go`](crate::go) in it starts goroutines
/// on the caller's runtime.
pub fn blocking<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let Some(me) = crate::worker::goroutine() else {
        return f();
    };
    let runtime = me.shared.clone();
    let mut slot: Option<std::thread::Result<R>> = None;
    let done = Arc::new(Done::default());
    let out = SendPtr(&mut slot as *mut Option<std::thread::Result<R>>);
    let d2 = done.clone();
    let call: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
        let out = out;
        let r = catch_unwind(AssertUnwindSafe(f));
        // SAFETY: `slot` outlives this write: the goroutine that owns it
        // waits below until `done` is set, which happens after this
        // closure has returned and been dropped.
        unsafe { *out.0 = Some(r) };
    });
    // SAFETY: the borrow this erases ends when the closure is dropped,
    // which the job below does before it sets `done`; the goroutine
    // borrowing the data does not leave this frame, by return or unwind,
    // until then (`UntilDone`).
    let call: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(call) };
    let job: Job = Box::new(move || {
        let outer = ENTERED.with(|e| e.replace(Some(runtime)));
        // `call` catches the closure's unwinding: this runs after it.
        call();
        drop(ENTERED.with(|e| e.replace(outer)));
        let waker = {
            let mut st = lock_plain(&d2.state);
            st.0 = true;
            st.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    });
    // Declared after `slot`, so dropped before it: whatever happens below,
    // even an unwind, this frame is not left while the pool may still
    // write `slot` or hold the closure's borrows.
    let _until_done = UntilDone(&done);
    if let Err(job) = submit(job) {
        // No thread could be started: run it here (the worker blocks,
        // which is what the caller would have had without us).
        job();
    }
    loop {
        let mut finished = false;
        park(|w| {
            let mut st = w.lock(&done.state);
            if st.0 {
                finished = true;
                false
            } else {
                st.1 = Some(w.waker());
                true
            }
        });
        if finished || lock(&done.state).0 {
            break;
        }
    }
    match slot.take() {
        Some(Ok(r)) => r,
        Some(Err(p)) => resume_unwind(p),
        None => unreachable!("a finished blocking call left no result"),
    }
}

/// Waits, when dropped, until the call is done: the last word on how
/// long `blocking`'s frame lives (on the normal path it is done already).
struct UntilDone<'a>(&'a Done);

impl Drop for UntilDone<'_> {
    fn drop(&mut self) {
        while !lock_plain(&self.0.state).0 {
            std::thread::yield_now();
        }
    }
}

/// A raw pointer that may cross to the pool thread (see `blocking`).
struct SendPtr<T>(*mut T);
// SAFETY: only dereferenced by the pool thread while the goroutine that
// owns the pointee waits, and `T` (the result) is `Send`.
unsafe impl<T: Send> Send for SendPtr<T> {}
