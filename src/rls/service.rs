//! The RLS front: `ShouldRateLimit` over gRPC, shared with `POST /json`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::grpc_unary::{LeanMethod, LeanServer};

use super::counters::Counters;
use super::decide::{self, Options, RlsError};
use super::metrics::CallResult;
use super::reload::RlsState;
use super::wire::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use super::wire::{RateLimitRequest, RateLimitResponse, rate_limit_response::Code};

/// Answers `ShouldRateLimit` calls with the current configuration, counting through `C`.
#[derive(Debug)]
pub struct RlsService<C> {
    counters: Arc<C>,
    state: Arc<RlsState>,
    options: Options,
}

impl<C: Counters> RlsService<C> {
    /// A service over `counters`, configured by `state`.
    pub fn new(counters: Arc<C>, state: Arc<RlsState>, options: Options) -> Self {
        Self {
            counters,
            state,
            options,
        }
    }

    /// The configuration state (for `/rlconfig`).
    pub fn state(&self) -> &Arc<RlsState> {
        &self.state
    }

    /// Decides one call and records its stats.
    pub async fn should_rate_limit(
        &self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, RlsError> {
        let config = self.state.current();
        let metrics = self.state.metrics();
        match decide::should_rate_limit(&*self.counters, config.as_deref(), &self.options, request)
            .await
        {
            Ok(outcome) => {
                metrics.record(&outcome.stats);
                if outcome.global_shadow {
                    metrics.global_shadow_mode.inc();
                }
                metrics.call(if outcome.response.overall_code == Code::OverLimit as i32 {
                    CallResult::OverLimit
                } else {
                    CallResult::Ok
                });
                Ok(outcome.response)
            }
            Err(error) => {
                metrics.call(CallResult::Error);
                Err(error)
            }
        }
    }
}

/// The gRPC status an error is answered with: the caller's mistakes are `INVALID_ARGUMENT`, a
/// missing configuration `FAILED_PRECONDITION`, counters that cannot be reached `UNAVAILABLE`
/// (Envoy then applies its `failure_mode_deny`).
pub fn status_of(error: &RlsError) -> Status {
    match error {
        RlsError::NoConfiguration => Status::failed_precondition(error.to_string()),
        RlsError::Counters(_) => Status::unavailable(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

/// The tonic service of an [`RlsService`].
#[derive(Debug)]
pub struct RlsGrpc<C>(Arc<RlsService<C>>);

impl<C> Clone for RlsGrpc<C> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// Envoy's `RateLimitService` name, as its calls' paths carry it.
pub use super::wire::rate_limit_service_server::SERVICE_NAME;

/// The node's RLS server: `ShouldRateLimit` answered in one piece ([`crate::grpc_unary`]).
pub type RlsServer = LeanServer<RlsGrpc<crate::node::Node>>;

/// The server for `tonic::transport::Server::add_service` and `grpc::Dispatch`, decoding at most
/// `max_message_size` bytes per call.
pub fn server<C: Counters>(
    service: Arc<RlsService<C>>,
    max_message_size: usize,
) -> LeanServer<RlsGrpc<C>> {
    LeanServer::new(RlsGrpc(service), max_message_size)
}

impl<C: Counters> RlsGrpc<C> {
    /// Decides a `ShouldRateLimit` call (both servers' handler).
    async fn answer_call(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        crate::telemetry::record_items(request.get_ref().descriptors.len());
        self.0
            .should_rate_limit(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|error| status_of(&error))
    }

    /// Decides a call as the lean path read it: an oversized one is answered as `decide` would
    /// have answered it once decoded.
    async fn answer_read(
        &self,
        request: Request<RlsCall>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let (metadata, extensions, call) = request.into_parts();
        match call {
            RlsCall::Decoded(message) => {
                self.answer_call(Request::from_parts(metadata, extensions, message))
                    .await
            }
            RlsCall::Oversized(error) => {
                self.0.state.metrics().call(CallResult::Error);
                Err(status_of(&error))
            }
        }
    }
}

/// A `ShouldRateLimit` request as the lean path reads it: decoded, or refused by its size before
/// it is decoded.
///
/// Why: prost reads every descriptor and entry before `decide` counts them. An empty descriptor is
/// two bytes of message and about 100 bytes of memory, so a 1 MiB request of them cost about 50 MB
/// while it was decoded, to be refused as too many. Counted first ([`crate::wire_items::Part`]:
/// keys and lengths only), a request with more than [`decide::MAX_DESCRIPTORS`] descriptors, or a
/// descriptor with more than [`decide::MAX_ENTRIES`] entries, gets the same error without being
/// decoded (or, as `decide` checks it first, the empty domain's). The differences: a descriptor
/// with too many entries is named even where `decide` would have named another mistake first
/// (no configuration, an earlier descriptor's key too long), and an oversized request is refused
/// for its size where prost would have found a malformed field further on.
#[derive(Debug)]
pub enum RlsCall {
    /// The request, decoded.
    Decoded(RateLimitRequest),
    /// Too many descriptors or entries: not decoded.
    Oversized(RlsError),
}

impl crate::grpc_unary::LeanRequest for RlsCall {
    fn decode_message(message: bytes::Bytes) -> Result<Self, prost::DecodeError> {
        if let Some(error) = oversized(&message) {
            return Ok(Self::Oversized(error));
        }
        prost::Message::decode(message).map(Self::Decoded)
    }
}

/// `RateLimitRequest.domain` and `.descriptors`, and `RateLimitDescriptor.entries`, by field
/// number.
const DOMAIN_FIELD: u32 = 1;
const DESCRIPTORS_FIELD: u32 = 2;
const ENTRIES_FIELD: u32 = 1;

/// The error `decide` would answer an oversized `message` with once decoded, found by counting
/// alone: an empty domain (checked first there too) or too many descriptors (all counted), else
/// the first descriptor with too many entries. `None` for a message within the bounds.
fn oversized(message: &bytes::Bytes) -> Option<RlsError> {
    let request = crate::wire_items::Part::whole(message);
    let error = size_error(request)?;
    // As protobuf reads it: the last domain is the domain.
    let domain = request.occurrences(DOMAIN_FIELD).last();
    if domain.is_none_or(|domain| domain.is_empty()) {
        return Some(RlsError::EmptyDomain);
    }
    Some(error)
}

/// Too many descriptors (all counted), else the first descriptor with too many entries.
fn size_error(request: crate::wire_items::Part<'_>) -> Option<RlsError> {
    let mut count = 0;
    let mut crowded = None;
    for descriptor in request.occurrences(DESCRIPTORS_FIELD) {
        count += 1;
        if crowded.is_none() && count <= decide::MAX_DESCRIPTORS {
            let entries = descriptor.occurrences(ENTRIES_FIELD).count();
            if entries > decide::MAX_ENTRIES {
                crowded = Some(RlsError::TooManyEntries {
                    index: count - 1,
                    count: entries,
                });
            }
        }
    }
    if count > decide::MAX_DESCRIPTORS {
        return Some(RlsError::TooManyDescriptors { count });
    }
    crowded
}

impl<C: Counters> LeanMethod for RlsGrpc<C> {
    const SERVICE_NAME: &'static str = SERVICE_NAME;
    const PATH: &'static str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
    type Request = RlsCall;
    type Response = RateLimitResponse;
    type Generated = RateLimitServiceServer<RlsGrpc<C>>;

    fn generated(&self, max_request_size: usize) -> Self::Generated {
        RateLimitServiceServer::new(self.clone()).max_decoding_message_size(max_request_size)
    }

    fn answer(
        &self,
        request: Request<RlsCall>,
    ) -> impl Future<Output = Result<Response<RateLimitResponse>, Status>> + Send {
        self.answer_read(request)
    }
}

#[tonic::async_trait]
impl<C: Counters> RateLimitService for RlsGrpc<C> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.answer_call(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc_unary::LeanRequest;
    use crate::rls::wire::RateLimitDescriptor;
    use crate::rls::wire::rate_limit_descriptor::Entry;
    use prost::Message;

    fn request(shape: &[usize]) -> RateLimitRequest {
        RateLimitRequest {
            domain: "edge".into(),
            descriptors: shape
                .iter()
                .map(|&entries| RateLimitDescriptor {
                    entries: vec![
                        Entry {
                            key: "k".into(),
                            value: "v".into(),
                        };
                        entries
                    ],
                    ..Default::default()
                })
                .collect(),
            hits_addend: 1,
        }
    }

    /// What `decide` answers a decoded request with, of its size errors.
    fn expected_size_error(request: &RateLimitRequest) -> Option<RlsError> {
        if request.descriptors.len() > decide::MAX_DESCRIPTORS {
            return Some(RlsError::TooManyDescriptors {
                count: request.descriptors.len(),
            });
        }
        request
            .descriptors
            .iter()
            .position(|descriptor| descriptor.entries.len() > decide::MAX_ENTRIES)
            .map(|index| RlsError::TooManyEntries {
                index,
                count: request.descriptors[index].entries.len(),
            })
    }

    #[test]
    fn the_sizes_counted_before_decoding_are_the_sizes_decide_refuses() {
        let shapes: [&[usize]; 8] = [
            &[1],
            &[1; 128],
            &[1; 129],
            &[0; 1000],
            &[32, 32, 3],
            &[2, 33, 40],
            &[40; 129],
            &[],
        ];
        for shape in shapes {
            let request = request(shape);
            let bytes = bytes::Bytes::from(request.encode_to_vec());
            assert_eq!(
                oversized(&bytes),
                expected_size_error(&request),
                "shape {shape:?}"
            );
            match RlsCall::decode_message(bytes).unwrap() {
                RlsCall::Decoded(decoded) => {
                    assert!(expected_size_error(&request).is_none());
                    assert_eq!(decoded, request);
                }
                RlsCall::Oversized(error) => assert_eq!(Some(error), expected_size_error(&request)),
            }
        }
    }

    #[test]
    fn fields_prost_skips_do_not_hide_descriptors_or_entries() {
        // An unknown varint and a group before each descriptor, and inside each before its
        // entries: prost skips both.
        let mut message = vec![0x0a, 0x01, b'd'];
        let mut descriptor = vec![0x50, 0x01, 0x5b, 0x08, 0x01, 0x5c];
        for _ in 0..33 {
            descriptor.extend_from_slice(&[0x0a, 0x00]);
        }
        for _ in 0..2 {
            message.extend_from_slice(&[0x50, 0x07, 0x5b, 0x5c]);
            message.push(0x12);
            message.push(descriptor.len() as u8);
            message.extend_from_slice(&descriptor);
        }
        let decoded = RateLimitRequest::decode(message.as_slice()).unwrap();
        assert_eq!(decoded.descriptors.len(), 2);
        let expected = expected_size_error(&decoded);
        assert_eq!(
            expected,
            Some(RlsError::TooManyEntries {
                index: 0,
                count: 33
            })
        );
        assert_eq!(oversized(&bytes::Bytes::from(message)), expected);
    }

    #[test]
    fn a_mebibyte_of_empty_descriptors_is_refused_without_being_decoded() {
        // A domain, then two bytes each: 524,286 descriptors, which prost would have built one by
        // one.
        let mut message = vec![0x0a, 0x01, b'd'];
        message.extend_from_slice(&[0x12, 0x00].repeat(512 * 1024 - 2));
        let message = bytes::Bytes::from(message);
        match RlsCall::decode_message(message).unwrap() {
            RlsCall::Oversized(error) => {
                assert_eq!(error, RlsError::TooManyDescriptors { count: 524_286 });
                let status = status_of(&error);
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert_eq!(
                    status.message(),
                    "524286 descriptors; at most 128 are accepted"
                );
            }
            RlsCall::Decoded(_) => panic!("decoded 524,286 descriptors"),
        }
        // Malformed after the bound: still refused for its size (prost would have read them all).
        let mut malformed = vec![0x0a, 0x01, b'd'];
        malformed.extend_from_slice(&[0x12, 0x00].repeat(200));
        malformed.extend_from_slice(&[0x12, 0x05, 0x00]);
        assert!(RateLimitRequest::decode(malformed.as_slice()).is_err());
        assert_eq!(
            oversized(&bytes::Bytes::from(malformed)),
            Some(RlsError::TooManyDescriptors { count: 200 })
        );
        // With no domain, the error `decide` checks first.
        let nameless = bytes::Bytes::from(
            RateLimitRequest {
                domain: String::new(),
                ..request(&[1; 129])
            }
            .encode_to_vec(),
        );
        assert_eq!(oversized(&nameless), Some(RlsError::EmptyDomain));
        // Malformed within the bound: prost's error, as before.
        let few = bytes::Bytes::from_static(&[0x0a, 0x01, b'd', 0x12, 0x00, 0x12, 0x05, 0x00]);
        assert!(RlsCall::decode_message(few).is_err());
    }
}
