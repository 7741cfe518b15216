//! The check the channel tests share: what several receivers got from
//! several senders, each sender sending `(its id, 0..n)` in order.

/// Asserts that every sender in `senders` had each of its values `0..n`
/// received exactly once by one of the receivers (`got`, one list each),
/// and that each receiver saw each sender's values in the order sent.
/// `what` names the case in the failure message.
pub fn assert_each_once_in_order(got: Vec<Vec<(u32, u32)>>, senders: &[u32], n: u32, what: &str) {
    for part in &got {
        for &p in senders {
            let seq: Vec<u32> = part.iter().filter(|v| v.0 == p).map(|v| v.1).collect();
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "{what}: sender {p} out of order at a receiver"
            );
        }
    }
    let mut all: Vec<(u32, u32)> = got.into_iter().flatten().collect();
    all.sort_unstable();
    let want: Vec<(u32, u32)> = senders
        .iter()
        .flat_map(|&p| (0..n).map(move |i| (p, i)))
        .collect();
    assert_eq!(all, want, "{what}: every value exactly once");
}
