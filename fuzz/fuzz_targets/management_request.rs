//! Management requests as the authority receives them: a change (applications at
//! /apply/v1), a gateway request and consents, from arbitrary JSON. No panic;
//! whatever parses serialises back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veksel_proto::management::{AuthKeyConsent, Change, Consent, GatewayRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(change) = serde_json::from_slice::<Change>(data) {
        let _ = change.validate();
        let _ = (change.kind(), change.gateway(), change.consenting_member());
        let again: Change =
            serde_json::from_slice(&serde_json::to_vec(&change).expect("serialises"))
                .expect("parses back");
        assert_eq!(again, change);
    }
    let _ = serde_json::from_slice::<GatewayRequest>(data);
    let _ = serde_json::from_slice::<Consent>(data);
    let _ = serde_json::from_slice::<AuthKeyConsent>(data);
});
