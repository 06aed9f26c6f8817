//! Management requests as the authority receives them: a change (applications at
//! /apply/v1), a gateway request and consents, from arbitrary JSON. No panic;
//! whatever parses serialises back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| veksel_fuzz::management_request(data));
