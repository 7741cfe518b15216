//! Reporting: the stdout table, JSON and CSV files, and SVG charts.
//!
//! # JSON schema (stable; additions only)
//!
//! ```text
//! {
//!   "schema": 1,
//!   "machine": {"cpu": str, "cores": int, "kernel": str, "os": str, "arch": str,
//!               "floor": {                   // absent with --floor-samples 0
//!                 "samples": int, "syscall_ns": int, "handoff_ns": int,
//!                 "signal_send_ns": int | null, "signal_deliver_ns": int | null,
//!                 "wake_remote_ns": int | null, "wake_send_ns": int | null,
//!                 "wake_remote_cold_ns": int | null,
//!                 "signal_victim_ns": int | null}},
//!   "config":  {"kernels": [str], "modes": [str], "threads": [int], "probes": int,
//!               "interval_us": int, "stretch_ms": float, "quick": bool,
//!               "wait": "futex" | "go-suspendg", "runtime": "threads" | "goroutines",
//!               "probe": "stop" | "collect"},   // collect: ttsp_ns has two
//!                                               // stops a probe
//!   "results": [{
//!     "kernel": str, "mode": str, "threads": int, "stops": int,
//!     "ttsp_ns":    {"p50": int, "p90": int, "p99": int, "p999": int, "max": int},
//!     "restart_ns": {"p50": int, "p90": int, "p99": int, "p999": int, "max": int},
//!                                      // --probe collect: the whole collection
//!     "stop_first_ns": {...same quantiles} | null,  // --probe collect: the
//!     "stop_second_ns": {...same quantiles} | null, // two stops' lengths
//!     "coordinator_cpu_ns": {...same quantiles},  // the coordinator's CPU
//!                                      // time per probe (stop and restart)
//!     "signals_per_stop": float, "resends_per_stop": float,
//!     "held_per_stop": float,          // threads found still parked from the
//!                                      // previous stop and held without a signal
//!     "local_wakes_per_stop": float,   // stops whose coordinator a parked
//!                                      // thread on its CPU woke (an optimisation)
//!     "throughput_ratio": float | null,      // CPU-time rate / interleaved
//!                                            // reference's; null: no mode call
//!                                            // fit in a probing window
//!     "throughput_ratio_wall": float | null, // the same from wall time
//!     "reference_spread": float,       // the same estimator between reference
//!                                      // phases: |median - 1|, the noise floor
//!     "units_per_call": int, "collections": int,
//!     "error": str | null              // why the run failed, if it did
//!   }]
//! }
//! ```

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// One row of the report.
pub struct Row {
    /// Kernel.
    pub kernel: String,
    /// Mode.
    pub mode: String,
    /// Threads.
    pub threads: usize,
    /// Probes made.
    pub stops: u64,
    /// Time to safepoint, ns.
    pub ttsp: Histogram<u64>,
    /// Stop to restart, ns (a collection probe: the whole collection).
    pub restart: Histogram<u64>,
    /// Collection probes (`--probe collect`): the first stop's length,
    /// time to safepoint included, ns; empty for bare stops.
    pub stop_first: Histogram<u64>,
    /// Collection probes: the second stop's length, ns.
    pub stop_second: Histogram<u64>,
    /// The coordinator's CPU time per probe, ns.
    pub coord_cpu: Histogram<u64>,
    /// Signals per stop.
    pub signals_per_stop: f64,
    /// Re-sends per stop.
    pub resends_per_stop: f64,
    /// Threads per stop found still parked from an earlier stop and held
    /// without a signal.
    pub held_per_stop: f64,
    /// Stops per stop whose sleeping coordinator was woken by a parked
    /// thread on its own CPU.
    pub local_wakes_per_stop: f64,
    /// Throughput per CPU second over the interleaved reference phases'
    /// (see `suite`).
    pub ratio: f64,
    /// The same from wall time.
    pub ratio_wall: f64,
    /// The same estimator between reference phases, as its distance from 1:
    /// the noise floor of the ratios.
    pub reference_spread: f64,
    /// Units per kernel call.
    pub units_per_call: u64,
    /// Collections during the run.
    pub collections: u64,
    /// Why the run failed (a stop timed out, say), if it did.
    pub error: Option<String>,
}

/// The quantiles reported, with their JSON keys.
pub const QUANTILES: &[(&str, f64)] = &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

fn quantiles(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, q) in QUANTILES {
        m.insert(k.to_string(), json!(h.value_at_quantile(*q)));
    }
    m.insert("max".into(), json!(h.max()));
    Value::Object(m)
}

fn us(ns: u64) -> String {
    let v = ns as f64 / 1000.0;
    if v >= 1000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The stdout table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<9} {:<15} {:>3} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>6} {:>6} | {:>6} {:>6}",
        "kernel", "mode", "thr", "p50", "p90", "p99", "p99.9", "max", "rs p50", "rs p99", "sig/s", "rsnd/s", "thrpt", "wall"
    );
    let _ = writeln!(
        s,
        "{:<9} {:<15} {:>3} {:>39} | {:>15} | {:>13} | {:>13}",
        "", "", "", "time to safepoint (µs)", "restart (µs)", "signals/stop", "vs reference"
    );
    for r in rows {
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "{:<9} {:<15} {:>3} FAILED: {e}",
                r.kernel, r.mode, r.threads
            );
            continue;
        }
        let q = |h: &Histogram<u64>, p: f64| us(h.value_at_quantile(p));
        let _ = writeln!(
            s,
            "{:<9} {:<15} {:>3} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>6.2} {:>6.2} | {:>6} {:>6}",
            r.kernel,
            r.mode,
            r.threads,
            q(&r.ttsp, 0.5),
            q(&r.ttsp, 0.9),
            q(&r.ttsp, 0.99),
            q(&r.ttsp, 0.999),
            us(r.ttsp.max()),
            q(&r.restart, 0.5),
            q(&r.restart, 0.99),
            r.signals_per_stop,
            r.resends_per_stop,
            ratio_cell(r.ratio),
            ratio_cell(r.ratio_wall)
        );
    }
    let collected: Vec<&Row> = rows
        .iter()
        .filter(|r| r.error.is_none() && !r.stop_first.is_empty())
        .collect();
    if !collected.is_empty() {
        let _ = writeln!(
            s,
            "\nthe whole pause: each probe a concurrent collection, two stops (µs; time to safepoint above counts both)"
        );
        let _ = writeln!(
            s,
            "{:<9} {:<15} {:>3} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>9}",
            "kernel", "mode", "thr", "1st p50", "p99", "max", "2nd p50", "p99", "max", "cycle p50"
        );
        for r in collected {
            let q = |h: &Histogram<u64>, p: f64| us(h.value_at_quantile(p));
            let _ = writeln!(
                s,
                "{:<9} {:<15} {:>3} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>9}",
                r.kernel,
                r.mode,
                r.threads,
                q(&r.stop_first, 0.5),
                q(&r.stop_first, 0.99),
                us(r.stop_first.max()),
                q(&r.stop_second, 0.5),
                q(&r.stop_second, 0.99),
                us(r.stop_second.max()),
                q(&r.restart, 0.5),
            );
        }
    }
    s
}

/// A throughput ratio for the table: three decimals, or `n/a` for NaN (no
/// mode call to compare).
fn ratio_cell(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        format!("{x:.3}")
    }
}

/// A ratio for the CSV: empty for NaN.
fn ratio_csv(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x:.4}")
    }
}

/// A row as JSON (NaN ratios become `null`).
pub fn row_json(r: &Row) -> Value {
    json!({
        "kernel": r.kernel,
        "mode": r.mode,
        "threads": r.threads,
        "stops": r.stops,
        "ttsp_ns": quantiles(&r.ttsp),
        "restart_ns": quantiles(&r.restart),
        "stop_first_ns": (!r.stop_first.is_empty()).then(|| quantiles(&r.stop_first)),
        "stop_second_ns": (!r.stop_second.is_empty()).then(|| quantiles(&r.stop_second)),
        "coordinator_cpu_ns": quantiles(&r.coord_cpu),
        "signals_per_stop": r.signals_per_stop,
        "resends_per_stop": r.resends_per_stop,
        "held_per_stop": r.held_per_stop,
        "local_wakes_per_stop": r.local_wakes_per_stop,
        "throughput_ratio": r.ratio,
        "throughput_ratio_wall": r.ratio_wall,
        "reference_spread": r.reference_spread,
        "units_per_call": r.units_per_call,
        "collections": r.collections,
        "error": r.error,
    })
}

/// The machine description used in reports.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "kernel": kernel,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// The CSV file: one line per row, quantiles flattened. Written with the
/// `csv` crate, which quotes any field that needs it.
pub fn csv(rows: &[Row]) -> Result<String, String> {
    let mut header: Vec<String> = ["kernel", "mode", "threads", "stops"]
        .map(String::from)
        .to_vec();
    let quantile_columns = |header: &mut Vec<String>, pre: &str| {
        for (k, _) in QUANTILES {
            header.push(format!("{pre}_{k}"));
        }
        header.push(format!("{pre}_max"));
    };
    for pre in ["ttsp_ns", "restart_ns"] {
        quantile_columns(&mut header, pre);
    }
    header.extend(
        [
            "signals_per_stop",
            "resends_per_stop",
            "throughput_ratio",
            "throughput_ratio_wall",
            "units_per_call",
            "collections",
            "reference_spread",
            "held_per_stop",
            "coordinator_cpu_ns_p50",
            "coordinator_cpu_ns_p99",
            "local_wakes_per_stop",
        ]
        .map(String::from),
    );
    // Added later, so at the end: `--probe collect`'s two stops.
    for pre in ["stop_first_ns", "stop_second_ns"] {
        quantile_columns(&mut header, pre);
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| format!("writing the CSV: {e}");
    w.write_record(&header).map_err(err)?;
    for r in rows {
        let mut rec = vec![
            r.kernel.clone(),
            r.mode.clone(),
            r.threads.to_string(),
            r.stops.to_string(),
        ];
        let quantile_fields = |rec: &mut Vec<String>, h: &Histogram<u64>| {
            if h.is_empty() {
                // Bare stops have no stop lengths: empty fields.
                rec.extend(std::iter::repeat_n(String::new(), QUANTILES.len() + 1));
                return;
            }
            for (_, q) in QUANTILES {
                rec.push(h.value_at_quantile(*q).to_string());
            }
            rec.push(h.max().to_string());
        };
        for h in [&r.ttsp, &r.restart] {
            quantile_fields(&mut rec, h);
        }
        rec.extend([
            format!("{:.4}", r.signals_per_stop),
            format!("{:.4}", r.resends_per_stop),
            ratio_csv(r.ratio),
            ratio_csv(r.ratio_wall),
            r.units_per_call.to_string(),
            r.collections.to_string(),
            format!("{:.4}", r.reference_spread),
            format!("{:.4}", r.held_per_stop),
            r.coord_cpu.value_at_quantile(0.5).to_string(),
            r.coord_cpu.value_at_quantile(0.99).to_string(),
            format!("{:.4}", r.local_wakes_per_stop),
        ]);
        for h in [&r.stop_first, &r.stop_second] {
            quantile_fields(&mut rec, h);
        }
        w.write_record(&rec).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| format!("writing the CSV: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("writing the CSV: {e}"))
}

const COLORS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// SVG: the time-to-safepoint distribution per mode (all kernels merged),
/// as quantile curves on a log time axis. `unit` names what ran the
/// kernels (`threads`, `goroutines`).
pub fn svg_ttsp(rows: &[Row], threads: usize, unit: &str) -> String {
    let mut modes: Vec<(String, Histogram<u64>)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.threads == threads && r.stops > 0 && r.error.is_none())
    {
        match modes.iter_mut().find(|(m, _)| *m == r.mode) {
            Some((_, h)) => {
                let _ = h.add(&r.ttsp);
            }
            None => modes.push((r.mode.clone(), r.ttsp.clone())),
        }
    }
    let (w, h, l, t, b, rgt) = (760.0, 420.0, 70.0, 40.0, 50.0, 170.0);
    let pw = w - l - rgt;
    let ph = h - t - b;
    // x: quantile 0..0.999 mapped on -log10(1-q); y: log10(ns) from 100ns to 1s.
    let qx = |q: f64| l + pw * (-(1.0 - q).log10() / 3.0);
    let (ylo, yhi) = (2.0f64, 9.0f64);
    let vy = |ns: f64| t + ph * (1.0 - ((ns.max(100.0)).log10() - ylo) / (yhi - ylo));
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{}' y='20' font-size='14' text-anchor='middle'>Time to safepoint by mode ({threads} {unit}, all kernels)</text>\n",
        l + pw / 2.0
    );
    for e in 2..=9 {
        let y = vy(10f64.powi(e));
        let label = match e {
            2 => "100ns",
            3 => "1µs",
            4 => "10µs",
            5 => "100µs",
            6 => "1ms",
            7 => "10ms",
            8 => "100ms",
            _ => "1s",
        };
        let _ = writeln!(s, "<line x1='{l}' x2='{}' y1='{y}' y2='{y}' stroke='#ddd'/><text x='{}' y='{}' text-anchor='end'>{label}</text>", l + pw, l - 6.0, y + 4.0);
    }
    for (q, label) in [
        (0.0, "p0"),
        (0.5, "p50"),
        (0.9, "p90"),
        (0.99, "p99"),
        (0.999, "p99.9"),
    ] {
        let x = qx(q);
        let _ = writeln!(s, "<line x1='{x}' x2='{x}' y1='{t}' y2='{}' stroke='#ddd'/><text x='{x}' y='{}' text-anchor='middle'>{label}</text>", t + ph, t + ph + 16.0);
    }
    let _ = writeln!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>quantile</text>",
        l + pw / 2.0,
        h - 10.0
    );
    for (i, (mode, hist)) in modes.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        for k in 0..=60 {
            let q = 1.0 - 10f64.powf(-3.0 * k as f64 / 60.0);
            let v = hist.value_at_quantile(q) as f64;
            let _ = write!(pts, "{:.1},{:.1} ", qx(q), vy(v));
        }
        let _ = writeln!(
            s,
            "<polyline fill='none' stroke='{c}' stroke-width='2' points='{pts}'/>"
        );
        let ly = t + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x='{}' y='{}' width='14' height='4' fill='{c}'/><text x='{}' y='{}'>{}</text>",
            l + pw + 12.0,
            ly - 4.0,
            l + pw + 32.0,
            ly + 2.0,
            esc(mode)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// SVG: throughput ratio (running time) per kernel and mode, grouped bars.
/// `unit` as for [`svg_ttsp`].
pub fn svg_throughput(rows: &[Row], threads: usize, unit: &str) -> String {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.threads == threads && r.error.is_none())
        .collect();
    let mut kernels: Vec<&str> = Vec::new();
    let mut modes: Vec<&str> = Vec::new();
    for r in &rows {
        if !kernels.contains(&r.kernel.as_str()) {
            kernels.push(&r.kernel);
        }
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    let (w, h, l, t, b, rgt) = (860.0, 420.0, 60.0, 40.0, 50.0, 150.0);
    let pw = w - l - rgt;
    let ph = h - t - b;
    // f64::max ignores NaN (a row with nothing to compare draws no bar).
    let ymax = rows.iter().map(|r| r.ratio).fold(1.2f64, f64::max).min(3.0);
    let vy = |v: f64| t + ph * (1.0 - v.min(ymax) / ymax);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n\
         <text x='{}' y='20' font-size='14' text-anchor='middle'>Mutator throughput vs. no runtime ({threads} {unit})</text>\n",
        l + pw / 2.0
    );
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let y = vy(v);
        let stroke = if (v - 1.0f64).abs() < 1e-9 {
            "#888"
        } else {
            "#ddd"
        };
        let _ = writeln!(s, "<line x1='{l}' x2='{}' y1='{y}' y2='{y}' stroke='{stroke}'/><text x='{}' y='{}' text-anchor='end'>{v:.1}</text>", l + pw, l - 6.0, y + 4.0);
        v += 0.2;
    }
    let gw = pw / kernels.len().max(1) as f64;
    let bw = gw * 0.8 / modes.len().max(1) as f64;
    for (ki, k) in kernels.iter().enumerate() {
        let gx = l + gw * ki as f64 + gw * 0.1;
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
            gx + gw * 0.4,
            t + ph + 16.0,
            esc(k)
        );
        for (mi, m) in modes.iter().enumerate() {
            if let Some(r) = rows
                .iter()
                .find(|r| r.kernel == *k && r.mode == *m && !r.ratio.is_nan())
            {
                let x = gx + bw * mi as f64;
                let y = vy(r.ratio);
                let _ = writeln!(s, "<rect x='{x:.1}' y='{y:.1}' width='{:.1}' height='{:.1}' fill='{}'><title>{} {}: {:.3}</title></rect>", bw * 0.9, t + ph - y, COLORS[mi % COLORS.len()], esc(k), esc(m), r.ratio);
            }
        }
    }
    for (mi, m) in modes.iter().enumerate() {
        let ly = t + 10.0 + 18.0 * mi as f64;
        let _ = writeln!(
            s,
            "<rect x='{}' y='{}' width='12' height='12' fill='{}'/><text x='{}' y='{}'>{}</text>",
            l + pw + 12.0,
            ly - 9.0,
            COLORS[mi % COLORS.len()],
            l + pw + 30.0,
            ly + 2.0,
            esc(m)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kernel: &str) -> Row {
        let mut h = crate::suite::empty_histogram();
        h.record(1000).unwrap();
        Row {
            kernel: kernel.into(),
            mode: "signal".into(),
            threads: 2,
            stops: 7,
            ttsp: h.clone(),
            restart: h.clone(),
            stop_first: crate::suite::empty_histogram(),
            stop_second: h.clone(),
            coord_cpu: h,
            signals_per_stop: 1.5,
            resends_per_stop: 0.0,
            held_per_stop: 0.0,
            local_wakes_per_stop: 0.25,
            ratio: f64::NAN,
            ratio_wall: 0.98,
            reference_spread: 0.01,
            units_per_call: 10,
            collections: 0,
            error: None,
        }
    }

    #[test]
    fn csv_rows_have_the_header_s_columns_and_quote_what_needs_it() {
        let text = csv(&[row("spin"), row("a, \"quoted\" kernel")]).unwrap();
        let mut r = ::csv::Reader::from_reader(text.as_bytes());
        let header = r.headers().unwrap().clone();
        assert_eq!(&header[0], "kernel");
        let recs: Vec<_> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        for rec in &recs {
            assert_eq!(rec.len(), header.len());
            assert_eq!(&rec[3], "7");
        }
        assert_eq!(&recs[1][0], "a, \"quoted\" kernel");
        let ratio = header.iter().position(|h| h == "throughput_ratio").unwrap();
        assert_eq!(&recs[0][ratio], "", "NaN is an empty field");
        // The two stops' columns come last; an empty histogram (bare stops)
        // gives empty fields, a filled one its values.
        let first = header
            .iter()
            .position(|h| h == "stop_first_ns_p50")
            .unwrap();
        let second = header
            .iter()
            .position(|h| h == "stop_second_ns_p50")
            .unwrap();
        let local = header
            .iter()
            .position(|h| h == "local_wakes_per_stop")
            .unwrap();
        assert!(local < first && first < second);
        assert_eq!(&recs[0][first], "");
        assert_eq!(&recs[0][second], "1000");
        assert_eq!(&header[header.len() - 1], "stop_second_ns_max");
    }
}
