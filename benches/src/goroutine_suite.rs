//! The goroutine rows of the suite (`goroutines --suite`): scheduling
//! latency, the spinlock deadlock and fairness per preemption mode, then
//! stops of goroutines alone (`stw`) and collections of a heap over them,
//! stop-the-world (`gc`) and concurrent (`cgc`: each stop's length), with
//! 0, 10,000 and 100,000 parked goroutines. Every row runs in a
//! child process of its own (a cooperative run that deadlocks leaves a
//! worker spinning for ever; the child exits instead). With
//! `--go-gcparked`, Go 1.19's collections beside as many parked goroutines
//! (`benches/go/gc-parked`) run right after each `cgc` row; with
//! `--go-stwprobe`, Go 1.19's stop-the-world probe runs right after each
//! `stw` row with the same number of parked goroutines (alternating, so
//! both see the same stretch of a noisy machine), and `--plot` draws both
//! against the number parked: the claim is a time to safepoint
//! flat in it. Last, what goroutines cost (`spawn-wg`, Go's `spawn`
//! shape; `spawn` joining each handle; `switch`; `parked`, the resident
//! memory of a parked goroutine), and with `--go-sched` Go's `sched`
//! anchor right after the spawn and switch rows with the same count. The
//! spawn rows show the host's core-to-core round trip before and after
//! (`floor::core_to_core_ns`): their figures, and Go's, move with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// What `goroutines --suite` was asked for.
pub struct SuiteConfig {
    /// Fewer samples, and no 100,000-parked rows.
    pub quick: bool,
    /// `--slice` as given, for the children.
    pub slice_arg: String,
    /// The same, parsed (reported in the JSON).
    pub slice: Duration,
    /// Write the results here as JSON.
    pub json: Option<PathBuf>,
    /// Write `stw-vs-parked.svg` into this directory.
    pub plot: Option<PathBuf>,
    /// Go's `stwprobe`, built.
    pub go_stwprobe: Option<PathBuf>,
    /// Go's `sched` anchor, built.
    pub go_sched: Option<PathBuf>,
    /// Go's `gc-parked` (benches/go/gc-parked), built.
    pub go_gcparked: Option<PathBuf>,
}

/// Runs this program with `args`, killing it if it has not ended within
/// `limit` (each mode has its own watchdog; this one guards the suite
/// against a bug in them).
fn run_child(exe: &Path, args: &[String], limit: Duration) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a child");
    let t0 = Instant::now();
    while child.try_wait().expect("wait for a child").is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("a child's output")
}

/// `--suite`: every row in a child process of its own (a cooperative
/// run that deadlocks leaves a worker spinning for ever; the child exits
/// instead), then a table, and JSON with `--json`.
pub fn run(a: &SuiteConfig) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let samples = if a.quick { "100" } else { "300" };
    let parked: &[&str] = if a.quick {
        &["0", "10000"]
    } else {
        &["0", "10000", "100000"]
    };
    let mut runs: Vec<Vec<String>> = Vec::new();
    for p in ["signal", "poll", "coop"] {
        let common = |mode: &str| {
            vec![
                "--mode".to_string(),
                mode.to_string(),
                "--preemption".into(),
                p.into(),
                "--slice".into(),
                a.slice_arg.clone(),
                "--json-line".into(),
            ]
        };
        let mut l = common("latency");
        l.extend(
            [
                "--procs",
                "2",
                "--workers",
                "4",
                "--samples",
                samples,
                "--timeout",
                "2s",
            ]
            .map(String::from),
        );
        runs.push(l);
        let mut s = common("spinlock");
        s.extend(["--rounds", "10", "--timeout", "2s"].map(String::from));
        runs.push(s);
        runs.push(common("fairness"));
    }
    // Stops of goroutines alone, then collections of a heap over them.
    let gc_samples = if a.quick { "30" } else { "100" };
    for (mode, samples) in [("stw", samples), ("gc", gc_samples), ("cgc", gc_samples)] {
        for n in parked {
            let mut s: Vec<String> = [
                "--mode",
                mode,
                "--preemption",
                "signal",
                "--procs",
                "2",
                "--workers",
                "2",
                "--samples",
                samples,
                "--parked",
                n,
                "--json-line",
                "--slice",
            ]
            .map(String::from)
            .to_vec();
            s.push(a.slice_arg.clone());
            runs.push(s);
        }
    }
    // What goroutines cost, in signal mode (the cost rows' counts).
    let n = if a.quick { "200000" } else { "1000000" };
    for (mode, procs, count) in [
        ("spawn-wg", "2", n),
        ("spawn", "2", n),
        ("switch", "1", n),
        ("parked", "2", if a.quick { "10000" } else { "100000" }),
    ] {
        runs.push(
            [
                "--mode",
                mode,
                "--preemption",
                "signal",
                "--procs",
                procs,
                "--n",
                count,
                "--json-line",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    let mut results = Vec::new();
    println!("row       mode    parked   result");
    for args in runs {
        let out = run_child(&exe, &args, Duration::from_secs(120));
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            json!({"mode": args[1], "preemption": args[3],
                   "result": {"outcome": "error",
                              "stderr": String::from_utf8_lossy(&out.stderr)}})
        });
        let r = &v["result"];
        let shown = match (v["mode"].as_str(), r["outcome"].as_str()) {
            (Some("latency"), Some("ok")) => format!(
                "lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r["lateness_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e6,
                r["lateness_ns"]["p99"].as_f64().unwrap_or(0.0) / 1e6,
                r["lateness_ns"]["max"].as_f64().unwrap_or(0.0) / 1e6
            ),
            (Some("spinlock"), Some("ok")) => format!(
                "{:.2} ms a round",
                r["round_ns"].as_f64().unwrap_or(0.0) / 1e6
            ),
            (Some("fairness"), Some(_)) => format!(
                "ratio {:.2} ({})",
                r["ratio"].as_f64().unwrap_or(0.0),
                r["outcome"].as_str().unwrap_or("?")
            ),
            (Some("stw"), Some("ok")) => format!(
                "stop+restart p50 {:.0} us, p99 {:.0} us; ttsp p50 {:.0} us, p99 {:.0} us",
                r["stop_restart_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["stop_restart_ns"]["p99"].as_f64().unwrap_or(0.0) / 1e3,
                r["ttsp_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["ttsp_ns"]["p99"].as_f64().unwrap_or(0.0) / 1e3
            ),
            (Some("gc"), Some("ok")) => format!(
                "ttsp p50 {:.0} us, p99 {:.0} us; pause p50 {:.0} us; roots p50 {:.0} us{}",
                r["ttsp_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["ttsp_ns"]["p99"].as_f64().unwrap_or(0.0) / 1e3,
                r["pause_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["roots_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["roots_per_parked_ns"]
                    .as_f64()
                    .map_or(String::new(), |n| format!(
                        " ({n:.0} ns a parked goroutine)"
                    ))
            ),
            (Some("cgc"), Some("ok")) => format!(
                "first stop p50 {:.0} us, p99 {:.0} us; second p50 {:.0} us, p99 {:.0} us; {} parked scanned after the first",
                r["first_stop_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["first_stop_ns"]["p99"].as_f64().unwrap_or(0.0) / 1e3,
                r["second_stop_ns"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                r["second_stop_ns"]["p99"].as_f64().unwrap_or(0.0) / 1e3,
                r["deferred"].as_u64().unwrap_or(0)
            ),
            (Some("spawn" | "spawn-wg"), Some("ok")) => {
                let c2c = |i: usize| {
                    r["core_to_core_ns"][i]
                        .as_u64()
                        .map_or("n/a".to_string(), |n| n.to_string())
                };
                format!(
                    "{:.0} ns a goroutine (core-to-core round trip {}/{} ns before/after)",
                    r["ns_each"].as_f64().unwrap_or(0.0),
                    c2c(0),
                    c2c(1)
                )
            }
            (Some("switch"), Some("ok")) => {
                format!(
                    "{:.0} ns a switch",
                    r["ns_a_switch"].as_f64().unwrap_or(0.0)
                )
            }
            (Some("parked"), Some("ok")) => format!(
                "{:.0} bytes resident a parked goroutine",
                r["bytes_each"].as_f64().unwrap_or(0.0)
            ),
            (_, Some(o)) => o.to_uppercase(),
            _ => "?".into(),
        };
        println!(
            "{:<9} {:<7} {:<8} {}",
            v["mode"].as_str().unwrap_or("?"),
            v["preemption"].as_str().unwrap_or("?"),
            if v["mode"] == "stw" || v["mode"] == "gc" || v["mode"] == "cgc" {
                v["parked"].to_string()
            } else {
                "-".into()
            },
            shown
        );
        let go_row = match (&a.go_stwprobe, v["mode"].as_str(), v["parked"].as_u64()) {
            (Some(go), Some("stw"), Some(n)) => Some(go_stw_row(go, n, samples)),
            _ => None,
        };
        let go_gc = match (&a.go_gcparked, v["mode"].as_str(), v["parked"].as_u64()) {
            (Some(go), Some("cgc"), Some(n)) => {
                Some(go_gc_row(go, n, if a.quick { "10" } else { "30" }))
            }
            _ => None,
        };
        let go_cost = match (&a.go_sched, v["mode"].as_str()) {
            (Some(go), Some("spawn-wg")) => Some(go_sched_row(go, "spawn", "2", n)),
            (Some(go), Some("switch")) => Some(go_sched_row(go, "switch", "1", n)),
            _ => None,
        };
        results.push(v);
        // Go's rows over as many parked goroutines: its stop, its collection.
        for (g, what, key) in [
            go_row.map(|g| (g, "stop+start", "stop_restart_ns")),
            go_gc.map(|g| (g, "both stops", "pause_ns")),
        ]
        .into_iter()
        .flatten()
        {
            let r = &g["result"];
            println!(
                "{:<9} {:<7} {:<8} {}",
                g["mode"].as_str().unwrap_or("?"),
                "go1.19",
                g["parked"].to_string(),
                match r["outcome"].as_str() {
                    Some("ok") => format!(
                        "{what} p50 {:.0} us, p99 {:.0} us",
                        r[key]["p50"].as_f64().unwrap_or(0.0) / 1e3,
                        r[key]["p99"].as_f64().unwrap_or(0.0) / 1e3
                    ),
                    _ => format!("ERROR {}", r["error"]),
                }
            );
            results.push(g);
        }
        if let Some(g) = go_cost {
            println!(
                "{:<9} {:<7} {:<8} {}",
                g["mode"].as_str().unwrap_or("?"),
                "go1.19",
                "-",
                match g["result"]["ns"].as_f64() {
                    Some(ns) => {
                        let c2c = |i: usize| {
                            g["result"]["core_to_core_ns"][i]
                                .as_u64()
                                .map_or("n/a".to_string(), |n| n.to_string())
                        };
                        format!(
                            "{ns:.0} ns (core-to-core round trip {}/{} ns before/after)",
                            c2c(0),
                            c2c(1)
                        )
                    }
                    None => format!("ERROR {}", g["result"]["error"]),
                }
            );
            results.push(g);
        }
    }
    if let Some(path) = &a.json {
        let doc = json!({
            "schema": 1,
            "machine": crate::report::machine(),
            "config": {"slice_ns": a.slice.as_nanos() as u64, "quick": a.quick},
            "results": results,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(dir) = &a.plot {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let p = dir.join("stw-vs-parked.svg");
        std::fs::write(&p, svg_vs_parked(&series_vs_parked(&results)))
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Runs Go's `sched` anchor in `mode` (`spawn`: a goroutine each, with a
/// `WaitGroup`; `switch`: a channel ping-pong on one P) with `n` and
/// `GOMAXPROCS=procs`; a row in the suite's JSON shape, its figure in ns
/// (a goroutine, or a switch).
fn go_sched_row(go: &Path, mode: &str, procs: &str, n: &str) -> Value {
    let c2c = || crate::floor::core_to_core_ns(crate::floor::CORE_TO_CORE_TRIPS).unwrap_or(None);
    let c2c_before = c2c();
    let out = std::process::Command::new(go)
        .args(["-mode", mode, "-n", n])
        .env("GOMAXPROCS", procs)
        .output();
    let result = match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            // "... (123 ns each)" or "... (123 ns a switch)".
            let ns = text
                .rsplit_once('(')
                .and_then(|(_, t)| t.split_whitespace().next())
                .and_then(|x| x.parse::<f64>().ok());
            match ns {
                Some(ns) => json!({"outcome": "ok", "ns": ns,
                                   "core_to_core_ns": [c2c_before, c2c()]}),
                None => json!({"outcome": "error", "error": format!(
                    "no result in its output: {text} {}", String::from_utf8_lossy(&o.stderr))}),
            }
        }
        Err(e) => json!({"outcome": "error", "error": format!("{}: {e}", go.display())}),
    };
    json!({"mode": format!("go-{mode}"), "preemption": "go1.19", "procs": procs, "result": result})
}

/// Runs Go's `stwprobe` with `parked` goroutines parked and two spinning
/// on two Ps, `probes` probes; a row in the suite's JSON shape.
fn go_stw_row(go: &Path, parked: u64, probes: &str) -> Value {
    let args = [
        "-workers",
        "2",
        "-parked",
        &parked.to_string(),
        "-probes",
        probes,
    ];
    go_parked_row(
        go,
        &args,
        "go-stw",
        parked,
        "stop_restart_ns",
        parse_stwprobe,
    )
}

/// Runs Go's `gc-parked` with `parked` goroutines parked and two
/// spinning on two Ps, `cycles` collections; a row in the suite's JSON
/// shape (a cycle's pause is the sum of its stops, `MemStats.PauseNs`).
fn go_gc_row(go: &Path, parked: u64, cycles: &str) -> Value {
    let args = ["-parked", &parked.to_string(), "-cycles", cycles];
    go_parked_row(go, &args, "go-gc", parked, "pause_ns", parse_gcparked)
}

/// Runs a Go anchor over `parked` goroutines with `GOMAXPROCS=2`; its
/// quantiles, as `parse` reads them from its output, go under `key`.
fn go_parked_row(
    go: &Path,
    args: &[&str],
    mode: &str,
    parked: u64,
    key: &str,
    parse: fn(&str) -> Option<(f64, f64, f64)>,
) -> Value {
    let out = std::process::Command::new(go)
        .args(args)
        .env("GOMAXPROCS", "2")
        .output();
    let result = match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            match parse(&text) {
                Some((p50, p99, max)) => {
                    json!({"outcome": "ok", key: {"p50": p50, "p99": p99, "max": max}})
                }
                None => json!({"outcome": "error", "error": format!(
                    "no result in its output: {text} {}", String::from_utf8_lossy(&o.stderr))}),
            }
        }
        Err(e) => json!({"outcome": "error", "error": format!("{}: {e}", go.display())}),
    };
    json!({"mode": mode, "preemption": "go1.19", "parked": parked, "result": result})
}

/// The pause p50, p99 and max, in ns, from `gc-parked`'s line
/// (`... pause(both stops) p50 153.2 p99 518.1 max 1268.9 us; ...`).
pub fn parse_gcparked(text: &str) -> Option<(f64, f64, f64)> {
    let rest = &text[text.find("pause(both stops)")? + "pause(both stops)".len()..];
    let mut w = rest.split_whitespace();
    let mut field = |name: &str| -> Option<f64> {
        (w.next()? == name).then_some(())?;
        w.next()?.parse::<f64>().ok().map(|us| us * 1e3)
    };
    Some((field("p50")?, field("p99")?, field("max")?))
}

/// The stop-the-world p50, p99 and max, in ns, from `stwprobe`'s line
/// (`... stw p50=61.2µs p99=275.1µs max=1.2ms ...`).
pub fn parse_stwprobe(text: &str) -> Option<(f64, f64, f64)> {
    let field = |name: &str| {
        let at = text.find(&format!(" {name}="))? + name.len() + 2;
        let v = text[at..].split_whitespace().next()?;
        parse_go_duration(v)
    };
    Some((field("p50")?, field("p99")?, field("max")?))
}

/// A Go `time.Duration` as printed (`850ns`, `61.2µs`, `1.5ms`, `2s`,
/// `1m2.5s`), in ns.
pub fn parse_go_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let (scale, len) = [
            ("ns", 1.0, 2),
            ("µs", 1e3, "µs".len()),
            ("us", 1e3, 2),
            ("ms", 1e6, 2),
            ("s", 1e9, 1),
            ("m", 60e9, 1),
            ("h", 3600e9, 1),
        ]
        .iter()
        .find(|(u, _, _)| rest.starts_with(u))
        .map(|&(_, sc, l)| (sc, l))?;
        total += n * scale;
        rest = &rest[len..];
    }
    // Whole nanoseconds: a decimal fraction times its unit is not exact.
    (!s.is_empty()).then_some(total.round())
}

/// One line of the plot: a label, dashed or not, and (parked, ns) points.
pub struct Series {
    /// What it is, ending in its quantile (`... p50`).
    pub label: String,
    /// Drawn dashed (the p99 lines).
    pub dashed: bool,
    /// (parked goroutines, ns), in the order measured.
    pub points: Vec<(u64, f64)>,
}

/// The plot's lines from the suite's results: pardon's stop+restart and
/// time to safepoint (`stw` rows), the collections' time to safepoint
/// (`gc` rows), and Go's stop+start (`go-stw` rows), each at p50 (solid)
/// and p99 (dashed).
pub fn series_vs_parked(results: &[Value]) -> Vec<Series> {
    let mut out = Vec::new();
    for (mode, key, label) in [
        ("stw", "stop_restart_ns", "pardon stop+restart"),
        ("stw", "ttsp_ns", "pardon time to safepoint"),
        ("gc", "ttsp_ns", "pardon collection TTSP"),
        ("go-stw", "stop_restart_ns", "Go 1.19 stop+start"),
    ] {
        for (q, dashed) in [("p50", false), ("p99", true)] {
            let points: Vec<(u64, f64)> = results
                .iter()
                .filter(|v| v["mode"] == mode && v["result"]["outcome"] == "ok")
                .filter_map(|v| Some((v["parked"].as_u64()?, v["result"][key][q].as_f64()?)))
                .collect();
            if !points.is_empty() {
                out.push(Series {
                    label: format!("{label} {q}"),
                    dashed,
                    points,
                });
            }
        }
    }
    out
}

/// SVG: time (log axis, 10 µs to 100 ms) against parked goroutines (one
/// column per count measured).
pub fn svg_vs_parked(series: &[Series]) -> String {
    use std::fmt::Write as _;
    let mut counts: Vec<u64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let (w, h, l, t, b, rgt) = (760.0, 420.0, 70.0, 40.0, 50.0, 230.0);
    let (pw, ph) = (w - l - rgt, h - t - b);
    let col = |n: u64| {
        let i = counts.iter().position(|&c| c == n).unwrap_or(0) as f64;
        l + pw * (i + 0.5) / counts.len().max(1) as f64
    };
    let (ylo, yhi) = (4.0f64, 8.0f64);
    let vy = |ns: f64| t + ph * (1.0 - (ns.max(1e4).log10().min(yhi) - ylo) / (yhi - ylo));
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{}' y='20' font-size='14' text-anchor='middle'>Stopping the world against parked goroutines (2 spinning on 2 workers)</text>\n",
        l + pw / 2.0
    );
    for (e, label) in [
        (4, "10µs"),
        (5, "100µs"),
        (6, "1ms"),
        (7, "10ms"),
        (8, "100ms"),
    ] {
        let y = vy(10f64.powi(e));
        let _ = writeln!(s, "<line x1='{l}' x2='{}' y1='{y}' y2='{y}' stroke='#ddd'/><text x='{}' y='{}' text-anchor='end'>{label}</text>", l + pw, l - 6.0, y + 4.0);
    }
    for &c in &counts {
        let x = col(c);
        let _ = writeln!(
            s,
            "<text x='{x}' y='{}' text-anchor='middle'>{c}</text>",
            t + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>parked goroutines</text>",
        l + pw / 2.0,
        h - 10.0
    );
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    let mut kinds: Vec<&str> = Vec::new();
    for (i, sr) in series.iter().enumerate() {
        let kind = sr.label.rsplit_once(' ').map_or(sr.label.as_str(), |p| p.0);
        let k = kinds.iter().position(|x| *x == kind).unwrap_or_else(|| {
            kinds.push(kind);
            kinds.len() - 1
        });
        let c = colors[k % colors.len()];
        let dash = if sr.dashed {
            " stroke-dasharray='6 4'"
        } else {
            ""
        };
        let pts: String = sr
            .points
            .iter()
            .map(|&(n, v)| format!("{:.1},{:.1} ", col(n), vy(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill='none' stroke='{c}' stroke-width='2'{dash} points='{pts}'/>"
        );
        for &(n, v) in &sr.points {
            let _ = writeln!(
                s,
                "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{c}'/>",
                col(n),
                vy(v)
            );
        }
        let ly = t + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1='{}' x2='{}' y1='{ly}' y2='{ly}' stroke='{c}' stroke-width='2'{dash}/><text x='{}' y='{}'>{}</text>",
            l + pw + 10.0,
            l + pw + 30.0,
            l + pw + 36.0,
            ly + 4.0,
            sr.label
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_in_every_unit_go_prints() {
        for (s, ns) in [
            ("850ns", 850.0),
            ("61.25µs", 61_250.0),
            ("61.25us", 61_250.0),
            ("1.5ms", 1_500_000.0),
            ("2s", 2e9),
            ("1m2.5s", 62.5e9),
        ] {
            assert_eq!(parse_go_duration(s), Some(ns), "{s}");
        }
        for bad in ["", "12", "ms", "1.5xs"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn gcparked_lines_give_their_quantiles() {
        let line = "go parked=100000 cycles=30 pause(both stops) p50 160.0 p99 313.1 max 382.9 us; cycle p50 684072.0 us";
        assert_eq!(
            parse_gcparked(line),
            Some((160_000.0, 313_100.0, 382_900.0))
        );
        assert_eq!(parse_gcparked("go parked=0 cycles=0"), None);
        assert_eq!(parse_gcparked("pause(both stops) p50 x p99 1 max 2"), None);
    }

    #[test]
    fn stwprobe_lines_give_their_quantiles() {
        let line = "go go1.19.8 GODEBUG=\"\" parked=100000 workers=2 iters=50000000 probes=200: \
                    stw p50=64.1µs p99=300.2µs max=1.25ms  (loops done=12 in 1.2s)";
        assert_eq!(
            parse_stwprobe(line),
            Some((64_100.0, 300_200.0, 1_250_000.0))
        );
        assert_eq!(parse_stwprobe("no collections"), None);
    }

    #[test]
    fn the_plot_has_a_line_per_series_and_a_column_per_count() {
        let results = vec![
            json!({"mode": "stw", "parked": 0, "result": {"outcome": "ok",
                "stop_restart_ns": {"p50": 80e3, "p99": 200e3},
                "ttsp_ns": {"p50": 60e3, "p99": 150e3}}}),
            json!({"mode": "stw", "parked": 10000, "result": {"outcome": "ok",
                "stop_restart_ns": {"p50": 85e3, "p99": 210e3},
                "ttsp_ns": {"p50": 62e3, "p99": 160e3}}}),
            json!({"mode": "go-stw", "parked": 0, "result": {"outcome": "ok",
                "stop_restart_ns": {"p50": 61e3, "p99": 275e3}}}),
            json!({"mode": "go-stw", "parked": 10000, "result": {"outcome": "error"}}),
        ];
        let series = series_vs_parked(&results);
        let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "pardon stop+restart p50",
                "pardon stop+restart p99",
                "pardon time to safepoint p50",
                "pardon time to safepoint p99",
                "Go 1.19 stop+start p50",
                "Go 1.19 stop+start p99",
            ]
        );
        assert_eq!(series[0].points, [(0, 80e3), (10000, 85e3)]);
        assert_eq!(
            series[4].points,
            [(0, 61e3)],
            "the failed Go row is left out"
        );
        let svg = svg_vs_parked(&series);
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert!(svg.contains(">10000</text>"));
    }
}
