//! Frame maps from untrusted bytes (generated code's side tables): parsing
//! never panics, a parsed map round-trips, and every live slot it reports is
//! in range.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pardon_stackscan::FrameMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = FrameMap::from_bytes(data) {
        let bytes = map.to_bytes();
        let again = FrameMap::from_bytes(&bytes).expect("a serialised map parses");
        assert_eq!(again.to_bytes(), bytes);
        for site in 0..map.sites() {
            for slot in map.live_slots(site) {
                assert!(slot < map.slots());
                assert!(map.is_live(site, slot));
            }
        }
    }
});
