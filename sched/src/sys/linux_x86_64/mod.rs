//! x86-64 Linux: the switch (`switch.rs`).

mod switch;
pub(crate) use switch::{prepare_stack, switch, Registers};
