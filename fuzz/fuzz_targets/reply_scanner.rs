//! The backend reply scanner (every RESP2 and RESP3 type, nested) and the value parser:
//! never a panic, and both agree on where each reply ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slotgate::resp::ReplyScanner;
use slotgate::resp::value::Value;

fuzz_target!(|data: &[u8]| {
    let mut scanner = ReplyScanner::new();
    let mut at = 0;
    while at < data.len() {
        match scanner.next(&data[at..]) {
            Ok(Some(n)) => {
                assert!(n > 0 && at + n <= data.len());
                if let Ok(Some((_, len))) = Value::parse(&data[at..]) {
                    assert_eq!(len, n);
                }
                // The helpers that read inside a reply take any complete frame.
                let frame = &data[at..at + n];
                let _ = slotgate::resp::reply::elements(frame);
                let _ = slotgate::resp::reply::pair_elements(frame);
                let _ = slotgate::resp::reply::integer(frame);
                let _ = slotgate::resp::reply::bulk_body(frame);
                at += n;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = Value::parse(data);
});
