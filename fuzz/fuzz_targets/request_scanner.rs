//! The client request scanner (RESP and inline), fed the input in two chunks split where
//! its first byte says, before and after authentication: it must never panic, never loop,
//! and never wait for more than its limits allow.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slotgate::resp::{Limits, RequestScanner};

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_bulk_len: 1 << 16,
        max_array_len: 1024,
        max_inline_len: 4096,
        unauthenticated: false,
    };
    for authenticated in [false, true] {
        let mut scanner = RequestScanner::new(limits);
        let mut buf = BytesMut::new();
        let cut = (split as usize * input.len()) / 255;
        for chunk in [&input[..cut], &input[cut..]] {
            buf.extend_from_slice(chunk);
            // Every request takes at least one byte off the buffer.
            for _ in 0..=input.len() {
                match scanner.next(&mut buf, authenticated) {
                    Ok(Some(req)) => {
                        assert!(!req.is_empty());
                        for i in 0..req.len() {
                            let _ = req.arg(i);
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
});
