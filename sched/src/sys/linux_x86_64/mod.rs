//! x86-64 Linux: the switch (`switch.rs`), and the settings of threads
//! that must wake on time (`wakeups.rs`).

mod switch;
mod wakeups;
pub(crate) use switch::{prepare_stack, switch, Registers};
pub(crate) use wakeups::favour_wakeups;
