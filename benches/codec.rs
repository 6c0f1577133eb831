//! Criterion benchmarks of the RESP hot paths: the request scanner (1, 10 and 100
//! arguments; a 1 MB bulk arriving in 4 KB reads) and the reply scanner.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use slotgate::resp::{Limits, ReplyScanner, Request, RequestScanner};
use std::hint::black_box;

fn request_of(args: usize) -> Vec<u8> {
    let mut parts = vec!["MSET".to_string()];
    for i in 0..args.saturating_sub(1) {
        parts.push(format!("key:{i}"));
    }
    Request::from_args(&parts).raw.to_vec()
}

fn request_scanner(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_scanner");
    for args in [1usize, 10, 100] {
        let input = request_of(args);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("args", args), &input, |b, input| {
            let mut scanner = RequestScanner::new(Limits::default());
            b.iter(|| {
                let mut buf = BytesMut::from(&input[..]);
                black_box(scanner.next(&mut buf, true).unwrap().unwrap());
            })
        });
    }
    // A 1 MB bulk fed in 4 KB pieces: linear, no rescan from the start.
    let mut big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    big.extend_from_slice(b"\r\n");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("1mb_bulk_in_4kb_reads", |b| {
        b.iter(|| {
            let mut scanner = RequestScanner::new(Limits::default());
            let mut buf = BytesMut::with_capacity(big.len());
            let mut done = None;
            for chunk in big.chunks(4096) {
                buf.extend_from_slice(chunk);
                if let Some(r) = scanner.next(&mut buf, true).unwrap() {
                    done = Some(r);
                }
            }
            black_box(done.unwrap());
        })
    });
    group.finish();
}

fn reply_scanner(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply_scanner");
    let simple = b"$5\r\nhello\r\n".to_vec();
    let mut array = b"*10\r\n".to_vec();
    for i in 0..10 {
        array.extend_from_slice(format!("$6\r\nvalue{i}\r\n").as_bytes());
    }
    for (name, input) in [("bulk", simple), ("array_of_10", array)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("reply", name), &input, |b, input| {
            let mut scanner = ReplyScanner::new();
            b.iter(|| black_box(scanner.next(input).unwrap().unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, request_scanner, reply_scanner);
criterion_main!(benches);
