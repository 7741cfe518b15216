//! x86-64 Linux: the switch (`switch.rs`), the settings of threads that
//! must wake on time (`wakeups.rs`), and a prefetch hint (`prefetch.rs`).

mod prefetch;
mod switch;
mod wakeups;
pub(crate) use prefetch::prefetch;
pub(crate) use switch::{prepare_stack, switch, Registers};
pub(crate) use wakeups::favour_wakeups;
