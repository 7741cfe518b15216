//! Execution contexts and the switch between them: the primitive the
//! scheduler is built on. A context is a stack pointer at which a switch
//! saved the callee-saved registers (or at which `Context::new` laid out a
//! first entry); switching saves the running context and resumes another.

use crate::stack::Stack;
use crate::sys;

/// A context that is not running.
#[derive(Debug, Default)]
pub struct Context {
    regs: sys::Registers,
}

impl Context {
    /// An empty context, to be filled by the first [`switch`] away from
    /// the running one (a thread's own context, say).
    pub fn empty() -> Context {
        Context::default()
    }

    /// The saved stack pointer: every register the switch away saved
    /// lies at or above it, on the context's stack.
    pub(crate) fn sp(&self) -> usize {
        self.regs.sp
    }

    /// A context that, when first switched to, calls `entry(arg)` on
    /// `stack`. `entry` must never return: it ends by switching away for
    /// good.
    ///
    /// # Safety
    /// `stack` must outlive every switch to this context and not be used
    /// by anything else meanwhile.
    pub unsafe fn new(stack: &Stack, entry: extern "C" fn(usize) -> !, arg: usize) -> Context {
        // SAFETY: the top of a stack we were given to use alone.
        let regs = unsafe { sys::prepare_stack(stack.top() & !15, entry, arg) };
        Context { regs }
    }
}

/// Saves the running context into `from` and resumes `to`. Returns when
/// something switches back to `from`.
///
/// # Safety
/// `to` must hold a context saved by a switch or made by
/// [`Context::new`], not running, on a stack still mapped; `from` must stay
/// where it is until something switches back to it.
#[inline(never)]
pub unsafe fn switch(from: &mut Context, to: &Context) {
    // SAFETY: caller contract.
    unsafe { sys::switch(&mut from.regs, &to.regs) }
}
