//! Shadow-stack frames: a function's reference slots, linked into a
//! per-thread chain while it runs.
//!
//! A frame lives on the native stack inside [`with_frame`] (or
//! [`with_frame_slots`]), which links it into the chain on entry and unlinks
//! it on exit, also when the closure panics. Linking is a single release
//! store of the chain head after the frame is fully initialised, and
//! unlinking a single store of the previous head, so a thread interrupted at
//! any instruction presents a consistent chain. The frame cannot move while
//! linked: the closure only borrows it.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::map::FrameMap;

/// The per-thread word holding the address of the innermost frame header (0
/// when the thread has no frames). The runtime keeps one per thread (per
/// task, under a scheduler), somewhere its collector can find for a stopped
/// thread — pardon keeps it in the thread's preempt record as its task word
/// (`Mutator::frames` hands it out).
///
/// The word is reachable only through [`with_frame`] and
/// [`with_frame_slots`], which store nothing but the address of a frame
/// they keep linked until they restore the previous head: a collector that
/// walks the chain (an `unsafe` act) can rely on that for a word it hands
/// out only inside a `FrameChain`.
///
/// A chain stays on the thread that made it (it is neither `Send` nor
/// `Sync`): frames are linked and unlinked in strict nesting only because
/// one thread's `with_frame` calls nest. A chain another thread could link
/// into would lose that order (thread A links, B links on top, A unlinks,
/// B unlinks: the head is A's returned frame), and the collector would
/// walk a frame that is gone.
///
/// ```compile_fail
/// use std::sync::atomic::AtomicUsize;
/// use pardon_stackscan::FrameChain;
/// let head = AtomicUsize::new(0);
/// let chain = FrameChain::new(&head);
/// std::thread::scope(|s| {
///     s.spawn(move || chain.head()); // a chain cannot go to another thread
/// });
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FrameChain<'a>(&'a AtomicUsize, PhantomData<*const ()>);

impl<'a> FrameChain<'a> {
    /// A chain whose head is `head`.
    pub fn new(head: &'a AtomicUsize) -> FrameChain<'a> {
        FrameChain(head, PhantomData)
    }

    /// The innermost frame's header address, or 0.
    pub fn head(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the scanner reads of a frame. `#[repr(C)]`, so generated code can
/// build one too.
#[repr(C)]
#[derive(Debug)]
pub struct FrameHeader {
    /// Address of the next outer frame's header, or 0.
    pub prev: usize,
    /// The frame's map.
    pub map: *const FrameMap,
    /// The call site the function is at (or about to call from).
    pub site: AtomicU32,
    /// Number of slots.
    pub nslots: u32,
    /// The slots.
    pub slots: *const AtomicUsize,
}

/// A frame with `N` slots, linked while [`with_frame`] runs.
pub struct Frame<'m, const N: usize> {
    header: FrameHeader,
    slots: [AtomicUsize; N],
    _map: PhantomData<&'m FrameMap>,
}

/// A frame over slots the caller owns (interpreter frames, generated code).
pub struct DynFrame<'a> {
    header: FrameHeader,
    slots: &'a [AtomicUsize],
}

/// Unlinks on drop, including during unwinding.
struct Link<'a> {
    chain: FrameChain<'a>,
    /// This frame's header: the head while it is linked.
    me: usize,
    prev: usize,
}

impl Drop for Link<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let now = self.chain.0.load(Ordering::Relaxed);
        if now != self.me {
            unlinked_out_of_order(now, self.me);
        }
        self.chain.0.store(self.prev, Ordering::Release);
    }
}

/// A frame ends while another, linked after it, is still the head: its
/// thread switched stacks inside a frame's closure (a stackful coroutine
/// library that does not save and restore the chain per coroutine, as
/// pardon-sched does for goroutines) and came back out of order. Going
/// on would leave the head at a frame that is gone, which the collector
/// would walk; so the process ends, saying why (this runs in `Drop`,
/// perhaps while unwinding, where a panic would abort anyway).
#[cold]
#[inline(never)]
fn unlinked_out_of_order(now: usize, me: usize) -> ! {
    eprintln!(
        "pardon-stackscan: a frame ({me:#x}) ended while a frame linked after it ({now:#x}) \
         was still the chain's head: frames were linked and unlinked out of order \
         (a stack switched inside a frame's closure); aborting"
    );
    std::process::abort()
}

#[inline(always)]
fn link<'a>(chain: FrameChain<'a>, header: &FrameHeader) -> Link<'a> {
    let now = chain.0.load(Ordering::Relaxed);
    if now != header.prev {
        chain_changed(now, header.prev);
    }
    chain
        .0
        .store(header as *const FrameHeader as usize, Ordering::Release);
    Link {
        chain,
        me: header as *const FrameHeader as usize,
        prev: header.prev,
    }
}

#[cold]
#[inline(never)]
fn chain_changed(now: usize, expected: usize) -> ! {
    panic!("frame chain changed while linking (head {now:#x}, expected {expected:#x})")
}

// These checks run on every frame entry and site change: inlined, so that
// with a static map they fold to nothing, and with their panics out of line.
#[inline(always)]
fn check_map(map: &FrameMap, nslots: usize) {
    if map.slots() != nslots || map.sites() == 0 {
        bad_map(map, nslots);
    }
}

#[cold]
#[inline(never)]
fn bad_map(map: &FrameMap, nslots: usize) -> ! {
    if map.sites() == 0 {
        panic!("a frame map needs at least one call site");
    }
    panic!(
        "frame has {nslots} slots but its map describes {}",
        map.slots()
    )
}

#[cold]
#[inline(never)]
fn bad_site(site: usize, sites: usize) -> ! {
    panic!("call site {site} out of range ({sites} sites)")
}

/// Runs `f` with a linked frame of `N` slots described by `map` (whose slot
/// count must be `N`). The frame starts at call site 0 with every slot 0.
///
/// ```
/// use std::sync::atomic::AtomicUsize;
/// use pardon_stackscan::{frame_map, with_frame, FrameChain, FrameMap};
/// static MAP: FrameMap = frame_map!(2; [0], [0, 1]);
/// let head = AtomicUsize::new(0);
/// with_frame::<2, _>(FrameChain::new(&head), &MAP, |fr| {
///     fr.set(0, 0x1000);
///     fr.set_site(1); // about to make call 1, where both slots are live
///     assert_ne!(head.load(std::sync::atomic::Ordering::Relaxed), 0);
/// });
/// assert_eq!(head.load(std::sync::atomic::Ordering::Relaxed), 0);
/// ```
#[inline]
pub fn with_frame<const N: usize, R>(
    chain: FrameChain<'_>,
    map: &FrameMap,
    f: impl FnOnce(&Frame<'_, N>) -> R,
) -> R {
    check_map(map, N);
    let mut frame = Frame::<N> {
        header: FrameHeader {
            prev: chain.0.load(Ordering::Relaxed),
            map,
            site: AtomicU32::new(0),
            nslots: N as u32,
            slots: std::ptr::null(),
        },
        slots: [const { AtomicUsize::new(0) }; N],
        _map: PhantomData,
    };
    frame.header.slots = frame.slots.as_ptr();
    let _link = link(chain, &frame.header);
    f(&frame)
}

/// Runs `f` with a linked frame over `slots`, described by `map`.
pub fn with_frame_slots<R>(
    chain: FrameChain<'_>,
    map: &FrameMap,
    slots: &[AtomicUsize],
    f: impl FnOnce(&DynFrame<'_>) -> R,
) -> R {
    check_map(map, slots.len());
    let frame = DynFrame {
        header: FrameHeader {
            prev: chain.0.load(Ordering::Relaxed),
            map,
            site: AtomicU32::new(0),
            nslots: slots.len() as u32,
            slots: slots.as_ptr(),
        },
        slots,
    };
    let _link = link(chain, &frame.header);
    f(&frame)
}

#[inline(always)]
fn set_site(h: &FrameHeader, site: usize) {
    // SAFETY: `map` was a valid reference when the frame was built and the
    // frame's borrow of it outlives the frame.
    let sites = unsafe { &*h.map }.sites();
    if site >= sites {
        bad_site(site, sites);
    }
    h.site.store(site as u32, Ordering::Relaxed);
}

/// The accessors both kinds of frame share: they differ only in where their
/// slots live (inline in a `Frame`, borrowed by a `DynFrame`).
macro_rules! frame_accessors {
    () => {
        /// Stores a reference (or any word) in slot `i`.
        #[inline(always)]
        pub fn set(&self, i: usize, v: usize) {
            self.slots[i].store(v, Ordering::Relaxed);
        }
        /// Reads slot `i`.
        #[inline(always)]
        pub fn get(&self, i: usize) -> usize {
            self.slots[i].load(Ordering::Relaxed)
        }
        /// Declares the call site the function is about to call from: only
        /// the slots live there are roots while the callee runs.
        #[inline(always)]
        pub fn set_site(&self, site: usize) {
            set_site(&self.header, site)
        }
        /// The frame header's address: where the frame sits on the native
        /// stack.
        pub fn position(&self) -> usize {
            &self.header as *const FrameHeader as usize
        }
    };
}

impl<const N: usize> Frame<'_, N> {
    frame_accessors!();
}

impl DynFrame<'_> {
    frame_accessors!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process that ends two frames out of order.
    const CHILD: &str = "PARDON_STACKSCAN_OUT_OF_ORDER_CHILD";

    fn header(prev: usize, map: &FrameMap) -> FrameHeader {
        FrameHeader {
            prev,
            map,
            site: AtomicU32::new(0),
            nslots: 0,
            slots: std::ptr::null(),
        }
    }

    /// Frames ended in the order they were linked (what a stack switch
    /// inside a frame's closure can do) end the process with a message,
    /// rather than leave the head at the frame that ended first. Run in a
    /// child process, which must die of SIGABRT having said why; frames
    /// ended in nesting order leave the head where it was.
    #[test]
    fn frames_ended_out_of_order_end_the_process() {
        static MAP: FrameMap = crate::frame_map!(0; []);
        let head = AtomicUsize::new(0);
        let chain = FrameChain::new(&head);
        if std::env::var_os(CHILD).is_some() {
            let a = header(0, &MAP);
            let la = link(chain, &a);
            let b = header(chain.head(), &MAP);
            let lb = link(chain, &b);
            drop(la); // out of order: b is the head
            drop(lb);
            unreachable!("the out-of-order end returned");
        }
        // In order: the head is restored.
        {
            let a = header(0, &MAP);
            let _la = link(chain, &a);
            let b = header(chain.head(), &MAP);
            let lb = link(chain, &b);
            assert_eq!(chain.head(), &b as *const FrameHeader as usize);
            drop(lb);
            assert_eq!(chain.head(), &a as *const FrameHeader as usize);
        }
        assert_eq!(chain.head(), 0);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "frame::tests::frames_ended_out_of_order_end_the_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        // 6: SIGABRT on Linux.
        assert_eq!(out.status.signal(), Some(6), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("out of order"), "{err}");
    }
}
