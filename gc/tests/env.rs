//! Environment settings: the usual yes/no spellings are accepted, and
//! anything else is an error naming the variable (never silently ignored).
//! Its own test binary: it changes the process environment.

use pardon::{Config, Heap};

#[test]
fn yes_no_settings_accept_the_usual_spellings_and_reject_the_rest() {
    let cfg = || Config {
        arena_size: 1 << 30,
        ..Config::default()
    };
    for var in ["PARDON_VERIFY", "PARDON_GENERATIONAL", "PARDON_GCTRACE"] {
        for (v, on) in [
            ("1", true),
            ("yes", true),
            ("ON", true),
            ("True", true),
            ("0", false),
            ("no", false),
            ("off", false),
        ] {
            std::env::set_var(var, v);
            let heap = Heap::new(cfg()).unwrap_or_else(|e| panic!("{var}={v}: {e}"));
            match var {
                "PARDON_VERIFY" => assert_eq!(heap.raw().config().verify, on, "{var}={v}"),
                "PARDON_GENERATIONAL" => {
                    assert_eq!(heap.raw().config().generational, on, "{var}={v}")
                }
                _ => {}
            }
        }
        for v in ["maybe", "2", "enable"] {
            std::env::set_var(var, v);
            let e = Heap::new(cfg()).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(v), "{var}={v}: {e}");
        }
        std::env::remove_var(var);
    }
}
