//! Both servers take roster ops from the network: arbitrary op bytes must be refused cleanly.
#![no_main]

use hushlist_core::roster::{Roster, parse_body};
use hushlist_core::signed::Signed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_body(data);
    if let Ok(op) = serde_json::from_slice::<Signed>(data) {
        let _ = Roster::genesis(op);
    }
});
