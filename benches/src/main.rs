//! The STW-latency suite (in progress).

fn main() {}
