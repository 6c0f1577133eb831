//! Criterion benchmarks of the dispatcher's pure hot paths: slot hashing, command lookup
//! and key extraction, and the multi-key split and merge.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use slotgate::command::{lookup, resolve};
use slotgate::multikey::{merge, split};
use slotgate::resp::Request;
use slotgate::slot::slot_of;
use std::hint::black_box;

fn hashing(c: &mut Criterion) {
    c.bench_function("slot_of/plain_key", |b| {
        b.iter(|| slot_of(black_box(b"user:1000:profile")))
    });
    c.bench_function("slot_of/hash_tag", |b| {
        b.iter(|| slot_of(black_box(b"{user:1000}.following")))
    });
}

fn routing(c: &mut Criterion) {
    let req = Request::from_args(&["get", "user:1000"]);
    c.bench_function("lookup_and_slot/get", |b| {
        b.iter(|| {
            let spec = resolve(black_box(&req)).unwrap();
            black_box(spec.slot(&req).unwrap())
        })
    });
}

fn multikey(c: &mut Criterion) {
    let mut mget = vec!["MGET".to_string()];
    mget.extend((0..10).map(|i| format!("k:{i}")));
    let req = Request::from_args(&mget);
    let spec = lookup(b"MGET").unwrap();
    c.bench_function("split/mget_10_keys", |b| {
        b.iter(|| black_box(split(spec, &req).unwrap()))
    });
    let (parts, m) = split(spec, &req).unwrap();
    let replies: Vec<Bytes> = parts
        .iter()
        .map(|p| {
            let n = p.raw.iter().filter(|&&c| c == b'$').count() - 1;
            let mut r = format!("*{n}\r\n");
            for _ in 0..n {
                r.push_str("$5\r\nvalue\r\n");
            }
            Bytes::from(r)
        })
        .collect();
    c.bench_function("merge/mget_10_keys", |b| {
        b.iter(|| black_box(merge(&m, &replies)))
    });
}

criterion_group!(benches, hashing, routing, multikey);
criterion_main!(benches);
