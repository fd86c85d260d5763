//! Unary gRPC calls answered in one piece, for the calls that carry rate-limit decisions.
//!
//! Why: tonic's generic server path (`tonic::server::Grpc::unary`) reads the request through a
//! boxed `Streaming` decoder and writes the answer through an `EncodeBody` stream, each frame
//! polled through several boxed body adapters: avoidable work for a call that carries one small
//! message each way. Here the request message is read whole from the body and decoded from one
//! slice, and the answer is encoded once into one buffer and sent as one DATA frame followed by
//! the `grpc-status` trailers. Alone this cut 3.4 % of a 1-item call's instructions; with
//! `grpc::Dispatch` and `grpc_connections` (tonic's server and router skipped) 14.7 %
//! (bench/analysis.md, change 9).
//!
//! The wire is tonic's: the same response headers (`content-type: application/grpc` and the
//! handler's metadata), the same frames, and the same statuses for bad input (a compressed
//! request, a message over the size limit, a body that ends inside a message, a message that does
//! not decode), with the same messages, so that the layers around the service (the
//! oversized-message mapping, tracing, admission) see no difference. The tests compare the two
//! paths call for call.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

/// The length of a gRPC message's prefix: a compression flag and a big-endian length.
pub const PREFIX_LEN: usize = 5;

/// The response headers a handler's metadata may not set (tonic's reserved list).
const RESERVED_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("te"),
    HeaderName::from_static("content-type"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-message-type"),
    HeaderName::from_static("grpc-status"),
];

/// A service whose one decision-carrying method is answered through this module; its
/// other methods go through tonic's generated server.
pub trait LeanMethod: Clone + Send + Sync + 'static {
    /// The gRPC service's name (`package.Service`).
    const SERVICE_NAME: &'static str;
    /// The method's path (`/package.Service/Method`).
    const PATH: &'static str;
    /// The method's request message.
    type Request: LeanRequest + Send + 'static;
    /// The method's response message.
    type Response: LeanResponse + Send + 'static;
    /// tonic's generated server of the whole service.
    type Generated: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxFuture<http::Response<Body>, Infallible>,
        > + Clone
        + Send
        + 'static;

    /// The generated server, refusing request messages longer than `max_request_size` bytes.
    fn generated(&self, max_request_size: usize) -> Self::Generated;

    /// Answers the method.
    fn answer(
        &self,
        request: Request<Self::Request>,
    ) -> impl Future<Output = Result<Response<Self::Response>, Status>> + Send;
}

/// A request message as [`read_request`] reads it: a prost message, or a form of one decoded by
/// the service's own reader (`GetRateLimits`' items, [`crate::wire_items`]).
pub trait LeanRequest: Sized {
    /// Decodes one whole message (its bytes without the gRPC prefix).
    fn decode_message(message: Bytes) -> Result<Self, prost::DecodeError>;
}

impl<M: Message + Default> LeanRequest for M {
    fn decode_message(message: Bytes) -> Result<Self, prost::DecodeError> {
        M::decode(message)
    }
}

/// A response message as [`respond`] writes it: a prost message, or a form of one the service
/// encodes itself (`GetRateLimits`' answers, [`crate::wire_items::encode_answers`]).
pub trait LeanResponse {
    /// The message framed as one uncompressed gRPC message.
    fn encode_message(&self) -> Bytes;
}

impl<M: Message> LeanResponse for M {
    fn encode_message(&self) -> Bytes {
        encode_message(self)
    }
}

/// The server of a [`LeanMethod`] service.
#[derive(Clone)]
pub struct LeanServer<S: LeanMethod> {
    service: S,
    generated: S::Generated,
    max_request_size: usize,
}

impl<S: LeanMethod> LeanServer<S> {
    /// Serves `service`, refusing request messages longer than `max_request_size` bytes.
    pub fn new(service: S, max_request_size: usize) -> Self {
        Self {
            generated: service.generated(max_request_size),
            service,
            max_request_size,
        }
    }
}

impl<S: LeanMethod> NamedService for LeanServer<S> {
    const NAME: &'static str = S::SERVICE_NAME;
}

impl<S: LeanMethod> tower::Service<http::Request<Body>> for LeanServer<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != S::PATH {
            return self.generated.call(request);
        }
        let service = self.service.clone();
        let limit = self.max_request_size;
        Box::pin(async move {
            let result = match read_request(request, limit).await {
                Ok(request) => service.answer(request).await,
                Err(status) => Err(status),
            };
            Ok(respond(result))
        })
    }
}

/// Reads the request message of a unary call, at most `limit` bytes long, as tonic's server
/// does: the first message is the request; messages after it are decoded and dropped; trailers
/// and a body the client cancelled after its last message end the request.
pub async fn read_request<M>(
    request: http::Request<Body>,
    limit: usize,
) -> Result<tonic::Request<M>, Status>
where
    M: LeanRequest,
{
    unsupported_encoding(request.headers())?;
    let (parts, mut body) = request.into_parts();
    let mut messages = Messages::new(limit);
    let mut first = None;
    loop {
        while let Some(bytes) = messages.next()? {
            let message =
                M::decode_message(bytes).map_err(|error| Status::internal(error.to_string()))?;
            first.get_or_insert(message);
        }
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => messages.push(data),
                Err(_trailers) => break,
            },
            // As tonic: a request cancelled after its messages ends them.
            Some(Err(status)) if status.code() == Code::Cancelled => break,
            Some(Err(status)) => return Err(status),
            None => {
                messages.finish()?;
                break;
            }
        }
    }
    let message = first.ok_or_else(|| Status::internal("Missing request message."))?;
    Ok(tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    ))
}

/// The HTTP response of a unary call's result: the message in one DATA frame, then
/// `grpc-status: 0`; a `Status` as tonic sends it (headers only).
pub fn respond<M: LeanResponse>(
    result: Result<tonic::Response<M>, Status>,
) -> http::Response<Body> {
    let response = match result {
        Ok(response) => response,
        Err(status) => return status.into_http(),
    };
    let (metadata, message, extensions) = response.into_parts();
    let mut headers = metadata.into_headers();
    for reserved in &RESERVED_HEADERS {
        headers.remove(reserved);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let mut response = http::Response::new(Body::new(OneMessage {
        message: Some(message.encode_message()),
        ended: false,
    }));
    *response.version_mut() = http::Version::HTTP_2;
    *response.headers_mut() = headers;
    *response.extensions_mut() = extensions;
    response
}

/// `message` as one uncompressed gRPC message: the flag, the big-endian length, the message.
pub fn encode_message<M: Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut frame = BytesMut::with_capacity(PREFIX_LEN + length);
    frame.put_u8(0);
    // A message longer than u32::MAX cannot be framed; the request limit and the batching policy
    // keep both directions far below.
    frame.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
    message.encode_raw(&mut frame);
    frame.freeze()
}

/// A `grpc-encoding` other than `identity` is refused as tonic refuses it when no compression is
/// enabled (the server enables none).
fn unsupported_encoding(headers: &HeaderMap) -> Result<(), Status> {
    let Some(encoding) = headers.get("grpc-encoding") else {
        return Ok(());
    };
    if encoding.as_bytes() == b"identity" {
        return Ok(());
    }
    let named = match std::str::from_utf8(encoding.as_bytes()) {
        Ok(name) => name.to_string(),
        Err(_) => format!("{:?}", encoding.as_bytes()),
    };
    let mut status = Status::unimplemented(format!(
        "Content is compressed with `{named}` which isn't supported"
    ));
    status.metadata_mut().insert(
        "grpc-accept-encoding",
        tonic::metadata::MetadataValue::from_static("identity"),
    );
    Err(status)
}

/// The length-prefixed messages of a request body, split as its DATA frames arrive.
struct Messages {
    /// Bytes received and not yet taken as a message.
    buffer: BytesMut,
    /// The length of the message whose prefix was read, while its bytes are awaited.
    awaited: Option<usize>,
    limit: usize,
}

impl Messages {
    fn new(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            awaited: None,
            limit,
        }
    }

    fn push(&mut self, data: Bytes) {
        self.buffer.put(data);
    }

    /// The next whole message, if its bytes have all arrived.
    fn next(&mut self) -> Result<Option<Bytes>, Status> {
        let length = match self.awaited {
            Some(length) => length,
            None => {
                if self.buffer.len() < PREFIX_LEN {
                    return Ok(None);
                }
                match self.buffer.get_u8() {
                    0 => {}
                    1 => {
                        return Err(Status::internal(
                            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                        ));
                    }
                    flag => {
                        return Err(Status::internal(format!(
                            "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
                        )));
                    }
                }
                let length = self.buffer.get_u32() as usize;
                if length > self.limit {
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {length} bytes, the limit is: {} bytes",
                        self.limit
                    )));
                }
                self.buffer.reserve(length);
                self.awaited = Some(length);
                length
            }
        };
        if self.buffer.len() < length {
            return Ok(None);
        }
        self.awaited = None;
        Ok(Some(self.buffer.split_to(length).freeze()))
    }

    /// The body ended: bytes left over are a message cut short. (As tonic: a prefix whose message
    /// never came is no message at all.)
    fn finish(&self) -> Result<(), Status> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(Status::internal("Unexpected EOF decoding stream."))
        }
    }
}

/// A response body of one message and `grpc-status: 0` trailers.
struct OneMessage {
    message: Option<Bytes>,
    ended: bool,
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        self.ended = true;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.ended
    }
}

#[cfg(test)]
mod tests {
    //! The lean path against tonic's generated server, request for request: the same status,
    //! headers, body and trailers, for good calls and for every kind of bad input.

    use bytes::{BufMut, Bytes, BytesMut};
    use http_body_util::{BodyExt, StreamBody};
    use prost::Message;
    use tonic::body::Body;
    use tower::ServiceExt;

    use crate::grpc::{V1Server, V1Service};
    use crate::proto;
    use crate::test_nodes::node;

    const LIMIT: usize = 4096;

    /// A case of bad input: its name, the request body's DATA frames, the request's headers.
    type BadCase = (&'static str, Vec<Bytes>, Vec<(&'static str, &'static str)>);

    /// What a client sees of a response.
    #[derive(Debug, PartialEq)]
    struct Seen {
        status: http::StatusCode,
        headers: http::HeaderMap,
        body: Bytes,
        trailers: Option<http::HeaderMap>,
    }

    async fn seen(response: http::Response<Body>) -> Seen {
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.expect("the body is read");
        let trailers = collected.trailers().cloned();
        Seen {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    }

    fn request(
        frames: Vec<http_body::Frame<Bytes>>,
        headers: &[(&str, &str)],
    ) -> http::Request<Body> {
        let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, tonic::Status>));
        let mut request = http::Request::new(Body::new(StreamBody::new(stream)));
        *request.uri_mut() = http::Uri::from_static("/pb.gubernator.V1/GetRateLimits");
        *request.method_mut() = http::Method::POST;
        request.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        request
    }

    fn framed(flag: u8, message: &[u8]) -> Bytes {
        let mut frame = BytesMut::new();
        frame.put_u8(flag);
        frame.put_u32(message.len() as u32);
        frame.put_slice(message);
        frame.freeze()
    }

    fn call_message(name: &str) -> Vec<u8> {
        proto::GetRateLimitsReq {
            requests: vec![proto::RateLimitReq {
                name: name.into(),
                unique_key: "account:1".into(),
                hits: 1,
                limit: 10,
                duration: 60_000,
                created_at: Some(1_700_000_000_000),
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn data(bytes: impl Into<Bytes>) -> http_body::Frame<Bytes> {
        http_body::Frame::data(bytes.into())
    }

    /// Sends the same request (made twice by `make`) to the lean server and to the generated one,
    /// each on a node of its own, and returns what each answered.
    async fn both(make: impl Fn() -> http::Request<Body>) -> (Seen, Seen) {
        let lean_node = node(&[]).await;
        let tonic_node = node(&[]).await;
        let lean = V1Server::new(V1Service::new(lean_node.node().clone()), LIMIT);
        let generated = proto::v1_server::V1Server::new(V1Service::new(tonic_node.node().clone()))
            .max_decoding_message_size(LIMIT);
        let lean = seen(lean.oneshot(make()).await.unwrap()).await;
        let generated = seen(generated.oneshot(make()).await.unwrap()).await;
        lean_node.shutdown().await.expect("stops");
        tonic_node.shutdown().await.expect("stops");
        (lean, generated)
    }

    async fn same(make: impl Fn() -> http::Request<Body>) -> Seen {
        let (lean, generated) = both(make).await;
        assert_eq!(lean, generated);
        lean
    }

    #[tokio::test]
    async fn a_good_call_is_answered_as_tonic_answers_it() {
        let seen = same(|| request(vec![data(framed(0, &call_message("good")))], &[])).await;
        assert_eq!(seen.headers["content-type"], "application/grpc");
        let trailers = seen.trailers.expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        let answer = proto::GetRateLimitsResp::decode(&seen.body[5..]).expect("decodes");
        assert_eq!(answer.responses.len(), 1);
        assert_eq!(answer.responses[0].remaining, 9);
    }

    #[tokio::test]
    async fn a_message_split_over_frames_or_followed_by_trailers_is_read_whole() {
        let whole = framed(0, &call_message("split"));
        let seen = same(|| {
            let mut frames: Vec<_> = whole
                .chunks(3)
                .map(|chunk| data(Bytes::copy_from_slice(chunk)))
                .collect();
            frames.push(http_body::Frame::trailers(http::HeaderMap::new()));
            request(frames, &[])
        })
        .await;
        assert_eq!(seen.trailers.expect("trailers")["grpc-status"], "0");
        // A second message is decoded and dropped; the first one is the request.
        let mut two = BytesMut::from(&whole[..]);
        two.put(framed(0, &call_message("second")));
        let two = two.freeze();
        let seen = same(|| request(vec![data(two.clone())], &[])).await;
        let answer = proto::GetRateLimitsResp::decode(&seen.body[5..]).expect("decodes");
        assert_eq!(answer.responses.len(), 1);
    }

    #[tokio::test]
    async fn bad_input_gets_tonic_s_status_and_message() {
        let good = call_message("bad");
        let oversized = vec![b'x'; LIMIT + 1];
        let cases: Vec<BadCase> = vec![
            (
                "compressed request",
                vec![framed(0, &good)],
                vec![("grpc-encoding", "gzip")],
            ),
            ("compressed flag", vec![framed(1, &good)], vec![]),
            ("invalid flag", vec![framed(7, &good)], vec![]),
            ("over the limit", vec![framed(0, &oversized)], vec![]),
            ("cut short", vec![framed(0, &good).slice(..9)], vec![]),
            ("a prefix alone", vec![framed(0, &good).slice(..5)], vec![]),
            ("half a prefix", vec![framed(0, &good).slice(..3)], vec![]),
            ("no message", vec![], vec![]),
            ("not protobuf", vec![framed(0, &[0xff, 0xff, 0xff])], vec![]),
            (
                "a bad second message",
                vec![framed(0, &good), framed(0, &[0xff, 0xff])],
                vec![],
            ),
        ];
        for (case, frames, headers) in cases {
            let (lean, generated) =
                both(|| request(frames.iter().cloned().map(data).collect(), &headers)).await;
            assert_eq!(lean, generated, "{case}");
            assert_ne!(
                lean.headers
                    .get("grpc-status")
                    .map(|status| status.as_bytes()),
                Some(&b"0"[..]),
                "{case}: refused"
            );
        }
    }
}
