//! What a poll costs inside a loop: the suite's `sum`, `spin`, `base64` and
//! `copy` kernels with
//! no poll, a poll per iteration, and strip-mined polls, on an attached
//! thread that is never stopped.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pardon::preempt::{EveryIteration, NoPoll, Registry, StripMined};
use pardon_bench::kernels::{base64_decode, base64_encode, copy, spin, sum};

#[path = "common/mod.rs"]
mod common;

fn poll(c: &mut Criterion) {
    let reg = Registry::new(Default::default()).unwrap();
    let me = reg.attach().unwrap();
    let data: Vec<u64> = (0..32 * 1024).collect();
    let mut g = c.benchmark_group("poll/sum 32K");
    g.throughput(Throughput::Elements(data.len() as u64));
    g.bench_function("no poll", |b| b.iter(|| sum(&data, 1, &mut NoPoll)));
    g.bench_function("every iteration", |b| {
        b.iter(|| sum(&data, 1, &mut EveryIteration(me.poller())))
    });
    g.bench_function("strip-mined 1000", |b| {
        b.iter(|| sum(&data, 1, &mut StripMined::<1000>::new(me.poller())))
    });
    g.finish();
    let mut g = c.benchmark_group("poll/spin 100K");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("no poll", |b| b.iter(|| spin(100_000, 1, &mut NoPoll)));
    g.bench_function("every iteration", |b| {
        b.iter(|| spin(100_000, 1, &mut EveryIteration(me.poller())))
    });
    g.bench_function("strip-mined 1000", |b| {
        b.iter(|| spin(100_000, 1, &mut StripMined::<1000>::new(me.poller())))
    });
    g.finish();
    let raw: Vec<u8> = (0..48 * 1024u32).map(|i| (i * 131 + 7) as u8).collect();
    let text = base64_encode(&raw);
    let mut out = vec![0u8; raw.len()];
    let mut g = c.benchmark_group("poll/base64 64K");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("no poll", |b| {
        b.iter(|| base64_decode(&text, &mut out, &mut NoPoll))
    });
    g.bench_function("every iteration", |b| {
        b.iter(|| base64_decode(&text, &mut out, &mut EveryIteration(me.poller())))
    });
    g.bench_function("strip-mined 1000", |b| {
        b.iter(|| base64_decode(&text, &mut out, &mut StripMined::<1000>::new(me.poller())))
    });
    g.finish();
    let src: Vec<u64> = (0..32 * 1024).collect();
    let mut dst = vec![0u64; src.len()];
    let mut g = c.benchmark_group("poll/copy 32K");
    g.throughput(Throughput::Elements(src.len() as u64));
    g.bench_function("no poll", |b| {
        b.iter(|| copy(&src, &mut dst, 1, &mut NoPoll))
    });
    g.bench_function("every iteration", |b| {
        b.iter(|| copy(&src, &mut dst, 1, &mut EveryIteration(me.poller())))
    });
    g.bench_function("strip-mined 1000", |b| {
        b.iter(|| copy(&src, &mut dst, 1, &mut StripMined::<1000>::new(me.poller())))
    });
    g.finish();
}

criterion_group! { name = benches; config = common::config(); targets = poll }
criterion_main!(benches);
