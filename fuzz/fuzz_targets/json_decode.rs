//! Fuzzes the HTTP gateway's protojson decoder with arbitrary bytes.
//!
//! Any input must either decode or fail with a `JsonError` (never panic), and whatever decodes must
//! survive a round trip: encoding it and decoding the result gives the same request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlimit::http::json;

fuzz_target!(|body: &[u8]| {
    let Ok(request) = json::decode_get_rate_limits_req(body) else {
        return;
    };
    let encoded = json::encode_get_rate_limits_req(&request);
    let again =
        json::decode_get_rate_limits_req(&encoded).expect("the encoder's output always decodes");
    assert_eq!(again, request, "a decoded request survives a round trip");
});
