//! X-Road identifiers from arbitrary text: no panic, and what parses prints back to
//! the same identifier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veksel_id::{ClientId, GatewayId, GlobalGroupId, MemberId, ServiceId, SubsystemId};

fn round_trip<T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug>(s: &str) {
    if let Ok(id) = s.parse::<T>() {
        let again: T = id
            .to_string()
            .parse()
            .unwrap_or_else(|_| panic!("{id} does not parse back"));
        assert_eq!(again, id);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    round_trip::<MemberId>(s);
    round_trip::<SubsystemId>(s);
    round_trip::<ClientId>(s);
    round_trip::<ServiceId>(s);
    round_trip::<GatewayId>(s);
    round_trip::<GlobalGroupId>(s);
});
