//! The benchmark binaries work end to end: binary-trees prints the Benchmarks
//! Game's expected output, GCBench's long-lived data survives in every mode,
//! and stw-latency writes JSON in the documented schema and rejects bad input.

use std::process::Command;

/// Runs `cmd`, requires it to succeed (showing its stderr otherwise), and
/// returns its stdout.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const BINARY_TREES_10: &str = "stretch tree of depth 11\t check: 4095
1024\t trees of depth 4\t check: 31744
256\t trees of depth 6\t check: 32512
64\t trees of depth 8\t check: 32704
16\t trees of depth 10\t check: 32752
long lived tree of depth 10\t check: 2047
";

#[test]
fn binary_trees_output_matches_the_benchmarks_game() {
    for mode in ["signal", "signal-handler", "poll"] {
        let text = stdout_of(
            Command::new(env!("CARGO_BIN_EXE_binary-trees")).args(["10", "--mode", mode]),
        );
        assert!(text.starts_with(BINARY_TREES_10), "{mode}: {text}");
        assert!(text.contains(mode), "summary line names the mode: {text}");
    }
}

#[test]
fn gcbench_keeps_long_lived_data_in_every_mode() {
    for mode in ["signal", "signal-handler", "poll"] {
        let text = stdout_of(
            Command::new(env!("CARGO_BIN_EXE_gcbench"))
                .args(["--scale", "5", "--mode", mode])
                .env("PARDON_VERIFY", "1"),
        );
        assert!(text.contains("Completed in"), "{text}");
    }
}

#[test]
fn stw_latency_writes_the_documented_json() {
    let dir = std::env::temp_dir().join(format!("pardon-stw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    stdout_of(
        Command::new(env!("CARGO_BIN_EXE_stw-latency"))
            .args([
                "--kernel", "spin", "--kernel", "syscall", "--mode", "signal", "--mode", "coop",
            ])
            .args([
                "--threads",
                "2",
                "--probes",
                "5",
                "--coop-probes",
                "3",
                "--stretch",
                "2ms",
                "--floor-samples",
                "20",
                "--json",
            ])
            .arg(&json)
            .arg("--plot")
            .arg(&dir),
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["schema"], 1);
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    let floor = &doc["machine"]["floor"];
    assert_eq!(floor["samples"], 20, "{floor}");
    assert!(floor["syscall_ns"].as_u64().unwrap() > 0, "{floor}");
    assert!(floor["handoff_ns"].as_u64().unwrap() > 0, "{floor}");
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 kernels x 2 modes");
    for r in results {
        for key in ["kernel", "mode", "threads", "signals_per_stop"] {
            assert!(!r[key].is_null(), "{key} missing in {r}");
        }
        // A number, or null when no mode call fitted a probing window.
        assert!(
            r["throughput_ratio"].is_f64() || r["throughput_ratio"].is_null(),
            "{r}"
        );
        for q in ["p50", "p90", "p99", "p999", "max"] {
            assert!(r["ttsp_ns"][q].as_u64().unwrap() > 0, "ttsp {q} in {r}");
            assert!(
                r["restart_ns"][q].as_u64().unwrap() > 0,
                "restart {q} in {r}"
            );
        }
        // Exactly the stops asked for.
        let want = if r["mode"] == "coop" { 3 } else { 5 };
        assert_eq!(r["stops"].as_u64().unwrap(), want, "{r}");
    }
    // Signal mode signals the spinning threads; coop sends no signal.
    let find = |k: &str, m: &str| {
        results
            .iter()
            .find(|r| r["kernel"] == k && r["mode"] == m)
            .unwrap()
            .clone()
    };
    assert!(find("spin", "signal")["signals_per_stop"].as_f64().unwrap() > 0.0);
    // 2 ms calls in windows of 80 ms or more: there is a ratio to report.
    assert!(
        find("spin", "signal")["throughput_ratio"].as_f64().unwrap() > 0.0,
        "{}",
        find("spin", "signal")
    );
    assert_eq!(
        find("spin", "coop")["signals_per_stop"].as_f64().unwrap(),
        0.0
    );
    assert!(dir.join("ttsp-2threads.svg").exists());
    assert!(dir.join("throughput-2threads.svg").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stw_latency_rejects_bad_arguments() {
    for args in [
        &["--kernel", "nope"][..],
        &["--mode", "sometimes"][..],
        &["--threads", "0"][..],
        &["--interval", "5 parsecs"][..],
        &["--interval", "5"][..],
        &["--probes", "0"][..],
        &["--json", "/nonexistent-dir/r.json"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stw-latency"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

/// A negative number is refused by every tool with a message that says so,
/// not clap's "unexpected argument".
#[test]
fn negative_numbers_are_refused_by_name() {
    for (exe, args) in [
        (env!("CARGO_BIN_EXE_stw-latency"), &["--threads", "-5"][..]),
        (env!("CARGO_BIN_EXE_stw-latency"), &["--probes", "-1"][..]),
        (
            env!("CARGO_BIN_EXE_stw-latency"),
            &["--interval", "-1ms"][..],
        ),
        (env!("CARGO_BIN_EXE_binary-trees"), &["-3"][..]),
        (env!("CARGO_BIN_EXE_gcbench"), &["--scale", "-1"][..]),
        (env!("CARGO_BIN_EXE_pause"), &["--live-mb", "-2"][..]),
    ] {
        let out = Command::new(exe).args(args).output().unwrap();
        assert!(!out.status.success(), "{exe} {args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("negative"), "{exe} {args:?}: {err}");
    }
}

#[test]
fn pause_reports_serial_and_parallel_marks_of_the_same_heap() {
    let text = stdout_of(Command::new(env!("CARGO_BIN_EXE_pause")).args([
        "--live-mb",
        "8",
        "--collections",
        "2",
        "--mark-workers",
        "1,2",
    ]));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.contains('|') && !l.contains("markers"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    // Both marks find the same live objects: four trees of 2^17 - 1 nodes
    // and their list cells at least (conservative roots may add a few).
    let objects: Vec<usize> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(objects[0] >= 4 * ((1 << 17) - 1) + 4, "{text}");
    assert_eq!(objects[0], objects[1], "{text}");
    assert!(text.contains("mark speed-up with 2 threads"), "{text}");
}

#[test]
fn pause_rejects_bad_arguments() {
    for args in [&["--mark-workers", "0"][..], &["--mode", "polls-only"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_pause"))
            .args(args)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

/// Every tool answers `--help`, and a bad argument is an error naming it
/// (the two peer benchmarks parsed their arguments by hand, and
/// `gcbench --help` was an error).
#[test]
fn tools_answer_help_and_name_bad_arguments() {
    for exe in [
        env!("CARGO_BIN_EXE_binary-trees"),
        env!("CARGO_BIN_EXE_gcbench"),
        env!("CARGO_BIN_EXE_stw-latency"),
        env!("CARGO_BIN_EXE_pause"),
    ] {
        let out = Command::new(exe).arg("--help").output().unwrap();
        assert!(out.status.success(), "{exe} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{exe}"
        );
    }
    for (exe, args, names) in [
        (
            env!("CARGO_BIN_EXE_binary-trees"),
            &["--threads", "0"][..],
            "threads",
        ),
        (env!("CARGO_BIN_EXE_binary-trees"), &["31"][..], "N"),
        (
            env!("CARGO_BIN_EXE_gcbench"),
            &["--scale", "11"][..],
            "scale",
        ),
        (
            env!("CARGO_BIN_EXE_gcbench"),
            &["--mode", "fast"][..],
            "mode",
        ),
    ] {
        let out = Command::new(exe).args(args).output().unwrap();
        assert!(!out.status.success(), "{exe} {args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{exe} {args:?}: {err}");
    }
}
