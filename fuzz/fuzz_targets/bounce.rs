//! The list server reads every message sent to a bounce address, from anyone: no input may
//! panic or hang the reader, and a failure it reports always names a status it can weigh.
#![no_main]

use hushlist_core::bounce::{BounceReading, read_bounce};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let BounceReading::Failed(recipients) = read_bounce(data) {
        assert!(!recipients.is_empty(), "a failure names at least one (possibly unknown) recipient");
    }
});
