//! x86-64 Linux: the switch (`switch.rs`), the settings of threads that
//! must wake on time (`wakeups.rs`), a prefetch hint (`prefetch.rs`), the
//! thread's worker word (`tls.rs`), and clearing the vector registers
//! (`vector.rs`).

mod prefetch;
mod switch;
mod tls;
mod vector;
mod wakeups;
pub(crate) use prefetch::prefetch;
pub(crate) use switch::{prepare_stack, switch, Registers};
pub(crate) use tls::{current_worker, set_current_worker};
pub(crate) use vector::clear_vector_registers;
pub(crate) use wakeups::favour_wakeups;
