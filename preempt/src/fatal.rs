//! Panics while the world is stopped.
//!
//! A thread that holds a stopped world must not run arbitrary code that may
//! take a lock a stopped thread holds. A panic does exactly that: the
//! default hook locks stderr and std's backtrace lock and allocates, and a
//! thread parked by a stop may hold any of those (it may have been stopped
//! inside `eprintln!` or `malloc`). The panic would then wait forever for a
//! thread that waits for the world to restart.
//!
//! So the registry installs, once per process, a panic hook that wraps the
//! one it finds: on a thread that holds a stopped world it formats the
//! message into a buffer on its own stack, writes it to stderr with one
//! `write(2)` (no lock, no allocation) and aborts; on every other thread it
//! calls the wrapped hook. A program that installs its own hook *after*
//! creating a registry replaces this protection; one installed before is
//! kept and called for every other panic.
//!
//! A collector that finds a problem while the world is stopped should not
//! panic at all: it keeps the finding as a plain value, restarts the world,
//! then reports (pardon's verification does).

use std::cell::Cell;
use std::fmt::Write;
use std::sync::Once;

thread_local! {
    /// How many stopped worlds this thread holds (or is stopping): const,
    /// no destructor, readable from a panic hook at any time.
    static HOLDING: Cell<u32> = const { Cell::new(0) };
}

/// Counts as holding a stopped world from creation until drop.
pub(crate) struct Holding(());

impl Holding {
    pub(crate) fn new() -> Holding {
        HOLDING.with(|h| h.set(h.get() + 1));
        Holding(())
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(h.get() - 1));
    }
}

/// Whether the calling thread holds a stopped world.
#[inline]
pub fn holds_stopped_world() -> bool {
    HOLDING.with(|h| h.get()) > 0
}

static HOOK: Once = Once::new();

/// Installs the wrapping hook once per process.
pub(crate) fn install_hook() {
    if std::thread::panicking() {
        // `take_hook` may not be called while panicking; a later registry
        // installs it.
        return;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if holds_stopped_world() {
                report_and_abort(info);
            }
            previous(info);
        }));
    });
}

/// A fixed buffer that keeps what fits and drops the rest.
struct StackBuf {
    buf: [u8; 2048],
    len: usize,
}

impl Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn report_and_abort(info: &std::panic::PanicHookInfo<'_>) -> ! {
    let mut b = StackBuf {
        buf: [0; 2048],
        len: 0,
    };
    let _ = write!(
        b,
        "pardon: a thread that holds a stopped world {info}\n\
         pardon: aborting: the stopped threads may hold locks a panic needs \
         (stderr, the backtrace lock, malloc's), so unwinding could wait forever\n"
    );
    // SAFETY: writes bytes of our own buffer to fd 2; abort has no
    // preconditions.
    unsafe {
        libc::write(2, b.buf.as_ptr().cast(), b.len);
        libc::abort()
    }
}
