//! Fuzzes the `GetRateLimits` items reader (`ringlimit::wire_items`) against prost.
//!
//! Any bytes must give exactly what prost gives: the same items, or the same error (with no bound
//! on the number of items, so that the reader reads them all).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringlimit::proto;
use ringlimit::wire_items::{Decoded, decode_items};

fuzz_target!(|message: &[u8]| {
    let ours = match decode_items(&Bytes::copy_from_slice(message), usize::MAX) {
        Ok(Decoded::Items(items)) => Ok(items
            .into_iter()
            .map(proto::RateLimitReq::from)
            .collect::<Vec<_>>()),
        Ok(Decoded::TooMany) => panic!("no maximum was given"),
        Err(error) => Err(error.to_string()),
    };
    let prost = proto::GetRateLimitsReq::decode(message)
        .map(|request| request.requests)
        .map_err(|error| error.to_string());
    assert_eq!(ours, prost, "the reader answers as prost");
});
