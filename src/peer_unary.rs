//! Forwarded calls made in one piece: the client half of [`crate::grpc_unary`].
//!
//! Why: a forwarded call through tonic's generated client goes through its streaming machinery
//! both ways: the request encoded by an `EncodeBody` stream, the answer read by a `Streaming`
//! decoder polled through boxed body adapters, and the status inferred from the headers and the
//! trailers. Callgrind of a forwarding node (`bench/callgrind-forward.sh`) put that at 15–20k
//! instructions per forwarded call, a sixth of the node's work for it. Here the request message
//! is encoded once into the one DATA frame [`PeerTransport::send_message`] queues with the
//! HEADERS, and the answer is read whole and decoded from one slice: 8.8k instructions (7 %)
//! less per forwarded call (bench/analysis.md, change 11).
//!
//! The wire is tonic's: the same request headers (`te`, `content-type`, `grpc-timeout` formatted
//! by tonic, the peer secret and `traceparent` from the same interceptor). Only the ordinary
//! answer is read here: HTTP 200, one uncompressed message within the size limit, trailers with
//! `grpc-status: 0`. Any other answer (a status, a trailers-only response, another HTTP status, a
//! compressed or oversized or unreadable message, a body cut short) is handed, frames and
//! trailers as received, to tonic's own client, so that every failure is reported exactly as
//! before (the tests compare the two on each kind of answer).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use http::HeaderValue;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use tonic::service::Interceptor;
use tonic::{Code, Status};

use crate::grpc_unary::{PREFIX_LEN, encode_message};
use crate::peer_auth::AttachSecret;
use crate::peer_transport::{PeerTransport, ResponseBody, TransportError};

/// The unary calls of one peer, made in one piece.
#[derive(Clone)]
pub struct PeerUnaryClient {
    transport: PeerTransport,
    attach: AttachSecret,
    max_response: usize,
}

impl PeerUnaryClient {
    /// Calls over `transport`, each with what `attach` adds (the peer secret, the trace
    /// context), refusing answers longer than `max_response` bytes as tonic's client would.
    pub fn new(transport: PeerTransport, attach: AttachSecret, max_response: usize) -> Self {
        Self {
            transport,
            attach,
            max_response,
        }
    }

    /// Calls `path` (`/package.Service/Method`) with `request`, its metadata and timeout
    /// included, and returns the answer (with the response's headers as its metadata) or the
    /// status tonic's client would have returned.
    pub async fn call<Req, Resp>(
        &self,
        request: tonic::Request<Req>,
        path: &'static str,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let (metadata, extensions, message) = request.into_parts();
        let intercepted =
            self.attach
                .clone()
                .call(tonic::Request::from_parts(metadata, extensions, ()))?;
        // Extensions do not travel over the wire; the transport reads none.
        let (metadata, _extensions, ()) = intercepted.into_parts();
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = http::Method::POST;
        parts.version = http::Version::HTTP_2;
        parts.uri = http::Uri::from_static(path);
        parts.headers = metadata.into_headers();
        parts
            .headers
            .insert(http::header::TE, HeaderValue::from_static("trailers"));
        parts.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let response = self
            .transport
            .send_message(parts, encode_message(&message))
            .await
            .map_err(|error| Status::from_error(Box::new(error)))?;
        let answer = Answer::read(response, self.max_response).await;
        let decoded = answer
            .ordinary(self.max_response)
            .and_then(|message| Resp::decode(message).ok());
        match decoded {
            Some(decoded) => Ok(tonic::Response::from_parts(
                tonic::metadata::MetadataMap::from_headers(answer.headers),
                decoded,
                tonic::Extensions::new(),
            )),
            // Anything but the ordinary answer is read by tonic, as before. Boxed: tonic's
            // client future is large, and unboxed it would be moved with every forwarded call's
            // future (it was: 30k more instructions of memcpy per forwarded call).
            None => Box::pin(answer.through_tonic(path, self.max_response)).await,
        }
    }
}

/// A peer's answer as received: the response head, the DATA frames, and how the body ended.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    data: Vec<Bytes>,
    end: BodyEnd,
}

/// How an answer's body ended, as far as it was read.
enum BodyEnd {
    /// With trailers.
    Trailers(http::HeaderMap),
    /// Without trailers.
    Clean,
    /// With a transport error.
    Failed(TransportError),
    /// Not yet: reading stopped once the data could no longer be one message within the limit
    /// (a peer cannot make the node buffer more than that); the rest of the body.
    Unread(ResponseBody),
}

impl Answer {
    /// Reads the answer, its data up to one message of `limit` bytes and a frame past it.
    async fn read(response: http::Response<ResponseBody>, limit: usize) -> Self {
        let (head, mut body) = response.into_parts();
        let mut data = Vec::new();
        let mut length = 0usize;
        let end = loop {
            if length > PREFIX_LEN.saturating_add(limit) {
                break BodyEnd::Unread(body);
            }
            match body.frame().await {
                None => break BodyEnd::Clean,
                Some(Err(error)) => break BodyEnd::Failed(error),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        length = length.saturating_add(chunk.len());
                        data.push(chunk);
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => break BodyEnd::Trailers(trailers),
                        // Neither data nor trailers: not a frame h2 hands out.
                        Err(_) => continue,
                    },
                },
            }
        };
        Self {
            status: head.status,
            headers: head.headers,
            data,
            end,
        }
    }

    /// The message of an ordinary answer: HTTP 200 without a status in its headers, one
    /// uncompressed message of at most `limit` bytes, trailers with `grpc-status: 0`.
    fn ordinary(&self, limit: usize) -> Option<Bytes> {
        if self.status != http::StatusCode::OK || self.headers.contains_key("grpc-status") {
            return None;
        }
        let BodyEnd::Trailers(trailers) = &self.end else {
            return None;
        };
        if Status::from_header_map(trailers)?.code() != Code::Ok {
            return None;
        }
        let mut body = match self.data.as_slice() {
            [one] => one.clone(),
            several => several
                .iter()
                .flat_map(|chunk| chunk.iter().copied())
                .collect(),
        };
        if body.len() < PREFIX_LEN || body[0] != 0 {
            return None;
        }
        body.advance(1);
        let length = usize::try_from(body.get_u32()).ok()?;
        (length <= limit && body.len() == length).then_some(body)
    }

    /// The result tonic's generated client gives for this answer: it reads the same frames and
    /// trailers as they came.
    async fn through_tonic<Resp>(
        self,
        path: &'static str,
        limit: usize,
    ) -> Result<tonic::Response<Resp>, Status>
    where
        Resp: Message + Default + Send + Sync + 'static,
    {
        let mut frames: Vec<Result<Frame<Bytes>, TransportError>> = self
            .data
            .into_iter()
            .map(|chunk| Ok(Frame::data(chunk)))
            .collect();
        let mut rest = None;
        match self.end {
            BodyEnd::Trailers(trailers) => frames.push(Ok(Frame::trailers(trailers))),
            BodyEnd::Clean => {}
            BodyEnd::Failed(error) => frames.push(Err(error)),
            BodyEnd::Unread(body) => rest = Some(http_body_util::BodyStream::new(body)),
        }
        let frames =
            futures_util::stream::iter(frames).chain(futures_util::stream::iter(rest).flatten());
        let body = http_body_util::StreamBody::new(frames);
        let mut response = http::Response::new(tonic::body::Body::new(body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        let mut grpc =
            tonic::client::Grpc::new(Replay(Some(response))).max_decoding_message_size(limit);
        if let Err(never) = grpc.ready().await {
            match never {}
        }
        grpc.unary(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<(), Resp>::default(),
        )
        .await
    }
}

/// A service that answers its one call with a response already received.
struct Replay(Option<http::Response<tonic::body::Body>>);

impl tower::Service<http::Request<tonic::body::Body>> for Replay {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<tonic::body::Body>) -> Self::Future {
        // Called once; a second call (none is made) gets an empty 200, which tonic reports as a
        // missing message.
        std::future::ready(Ok(self
            .0
            .take()
            .unwrap_or_else(|| http::Response::new(tonic::body::Body::empty()))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::{BufMut, BytesMut};
    use tokio::net::TcpListener;

    use super::*;
    use crate::peer_auth::PeerSecret;
    use crate::peer_transport::TransportOptions;
    use crate::proto::{self, GetPeerRateLimitsReq, GetPeerRateLimitsResp};

    const PATH: &str = "/pb.gubernator.PeersV1/GetPeerRateLimits";
    /// The largest answer the clients accept.
    const LIMIT: usize = 64;
    /// The header that tells the test server how to answer.
    const SCENARIO: &str = "x-scenario";
    const PATIENCE: Duration = Duration::from_secs(10);

    /// The answer of the ordinary scenario.
    fn answer() -> GetPeerRateLimitsResp {
        GetPeerRateLimitsResp {
            rate_limits: vec![proto::RateLimitResp {
                limit: 10,
                remaining: 9,
                ..Default::default()
            }],
        }
    }

    fn framed(flag: u8, message: &[u8]) -> Bytes {
        let mut frame = BytesMut::new();
        frame.put_u8(flag);
        frame.put_u32(message.len() as u32);
        frame.put_slice(message);
        frame.freeze()
    }

    fn trailers(status: &str, message: Option<&str>) -> http::HeaderMap {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_str(status).unwrap());
        if let Some(message) = message {
            trailers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
        }
        trailers
    }

    /// Answers one stream as `scenario` says.
    async fn respond(scenario: &str, mut respond: h2::server::SendResponse<Bytes>) {
        let ok = || {
            http::Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
        };
        let encoded = answer().encode_to_vec();
        let (head, data, end): (_, Vec<Bytes>, Option<http::HeaderMap>) = match scenario {
            "ordinary" => (ok(), vec![framed(0, &encoded)], Some(trailers("0", None))),
            "split" => {
                let whole = framed(0, &encoded);
                (
                    ok(),
                    vec![whole.slice(..3), whole.slice(3..)],
                    Some(trailers("0", None)),
                )
            }
            "trailers-only" => (
                ok().header("grpc-status", "8")
                    .header("grpc-message", "too%20busy"),
                vec![],
                None,
            ),
            "status-after-data" => (
                ok(),
                vec![framed(0, &encoded)],
                Some(trailers("13", Some("went wrong"))),
            ),
            "http-503" => (http::Response::builder().status(503), vec![], None),
            "no-message" => (ok(), vec![], Some(trailers("0", None))),
            "compressed" => (ok(), vec![framed(1, &encoded)], Some(trailers("0", None))),
            "oversized" => (
                ok(),
                vec![framed(0, &[0u8; LIMIT + 1])],
                Some(trailers("0", None)),
            ),
            "not-protobuf" => (ok(), vec![framed(0, &[0xff; 8])], Some(trailers("0", None))),
            "no-trailers" => (ok(), vec![framed(0, &encoded)], None),
            "two-messages" => (
                ok(),
                vec![framed(0, &encoded), framed(0, &encoded)],
                Some(trailers("0", None)),
            ),
            // A message far over the limit, in many frames: the clients stop at its prefix.
            "oversized-large" => {
                let whole = framed(0, &vec![7u8; 1 << 20]);
                let chunks = (0..whole.len())
                    .step_by(16 * 1024)
                    .map(|start| whole.slice(start..(start + 16 * 1024).min(whole.len())))
                    .collect();
                (ok(), chunks, Some(trailers("0", None)))
            }
            "cut-short" => (
                ok(),
                vec![framed(0, &encoded).slice(..4)],
                Some(trailers("0", None)),
            ),
            // An oversized message whose body never ends: the clients must not wait for its end.
            "oversized-endless" => {
                let mut stream = respond
                    .send_response(ok().body(()).unwrap(), false)
                    .unwrap();
                let mut prefix = BytesMut::new();
                prefix.put_u8(0);
                prefix.put_u32(1 << 30);
                prefix.put_slice(&[7u8; 2 * LIMIT]);
                let _ = stream.send_data(prefix.freeze(), false);
                // Held open until the client resets it.
                let _ = std::future::poll_fn(|cx| stream.poll_reset(cx)).await;
                return;
            }
            "reset" => {
                let mut stream = respond
                    .send_response(ok().body(()).unwrap(), false)
                    .unwrap();
                let _ = stream.send_data(framed(0, &encoded).slice(..4), false);
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            other => panic!("no scenario {other}"),
        };
        let ends_now = data.is_empty() && end.is_none();
        let mut stream = respond
            .send_response(head.body(()).unwrap(), ends_now)
            .unwrap();
        if ends_now {
            return;
        }
        let last = data.len();
        // The client may reset the stream before the end (an oversized message).
        for (index, chunk) in data.into_iter().enumerate() {
            if stream
                .send_data(chunk, index + 1 == last && end.is_none())
                .is_err()
            {
                return;
            }
        }
        if let Some(end) = end {
            let _ = stream.send_trailers(end);
        }
    }

    /// The request heads and bodies a test server received, in order.
    type Received = std::sync::Arc<std::sync::Mutex<Vec<(http::request::Parts, Vec<u8>)>>>;

    /// A server on a loopback port that answers every call as its `x-scenario` header says, and
    /// keeps what it received.
    async fn server() -> (String, Received) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let received = Received::default();
        let keep = std::sync::Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let keep = std::sync::Arc::clone(&keep);
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, send))) = connection.accept().await {
                        let scenario = request.headers()[SCENARIO].to_str().unwrap().to_string();
                        let (head, mut body) = request.into_parts();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            bytes.extend_from_slice(&chunk);
                        }
                        keep.lock().unwrap().push((head, bytes));
                        tokio::spawn(async move { respond(&scenario, send).await });
                    }
                });
            }
        });
        (address, received)
    }

    fn request(scenario: &str) -> tonic::Request<GetPeerRateLimitsReq> {
        let mut request = tonic::Request::new(GetPeerRateLimitsReq {
            requests: vec![proto::RateLimitReq {
                unique_key: "k".into(),
                ..Default::default()
            }],
        });
        request
            .metadata_mut()
            .insert(SCENARIO, scenario.parse().unwrap());
        request.set_timeout(Duration::from_secs(5));
        request
    }

    /// What a call's result shows of itself: the answer, or the status's code and message.
    fn outcome(
        result: Result<tonic::Response<GetPeerRateLimitsResp>, Status>,
    ) -> Result<GetPeerRateLimitsResp, (Code, String)> {
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| (status.code(), status.message().to_string()))
    }

    #[tokio::test]
    async fn every_kind_of_answer_gives_what_tonic_client_gives() {
        let (address, received) = server().await;
        let secret = PeerSecret::new("s3cret-s3cret-s3cret", "GUBER_PEER_SECRET").unwrap();
        let transport =
            PeerTransport::new(&address, TransportOptions::new(PATIENCE, None)).unwrap();
        let lean = PeerUnaryClient::new(
            transport.clone(),
            AttachSecret::new(Some(secret.clone())),
            LIMIT,
        );
        let mut tonic_client =
            proto::peers_v1_client::PeersV1Client::new(transport.with_secret(Some(secret)))
                .max_decoding_message_size(LIMIT);
        for scenario in [
            "ordinary",
            "split",
            "trailers-only",
            "status-after-data",
            "http-503",
            "no-message",
            "compressed",
            "oversized",
            "not-protobuf",
            "no-trailers",
            "two-messages",
            "oversized-large",
            "oversized-endless",
            "cut-short",
            "reset",
        ] {
            let expected = tokio::time::timeout(
                PATIENCE,
                tonic_client.get_peer_rate_limits(request(scenario)),
            )
            .await
            .expect("tonic's client answered in time");
            let got = tokio::time::timeout(PATIENCE, lean.call(request(scenario), PATH))
                .await
                .expect("the one-piece call answered in time");
            assert_eq!(outcome(got), outcome(expected), "scenario {scenario}");
        }
        // The two sent the same requests: method, path, headers (the secret, `te`,
        // `content-type`, `grpc-timeout` within a millisecond of each other) and body.
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 30);
        for pair in received.chunks(2) {
            let [(tonic_head, tonic_body), (lean_head, lean_body)] = pair else {
                unreachable!("chunks of two");
            };
            assert_eq!(lean_head.method, tonic_head.method);
            assert_eq!(lean_head.uri, tonic_head.uri);
            assert_eq!(lean_body, tonic_body);
            let names = |head: &http::request::Parts| {
                let mut names: Vec<_> = head.headers.keys().map(|name| name.to_string()).collect();
                names.sort();
                names
            };
            assert_eq!(names(lean_head), names(tonic_head));
            for (name, value) in &tonic_head.headers {
                if name != "grpc-timeout" {
                    assert_eq!(lean_head.headers.get(name), Some(value), "header {name}");
                }
            }
            let timeout = |head: &http::request::Parts| {
                let value = head.headers["grpc-timeout"].to_str().unwrap().to_string();
                crate::limits::deadline::parse_grpc_timeout(&value).unwrap()
            };
            assert!(timeout(tonic_head).abs_diff(timeout(lean_head)) < Duration::from_millis(1));
        }
    }

    #[tokio::test]
    async fn the_ordinary_answer_is_decoded() {
        let (address, _received) = server().await;
        let transport =
            PeerTransport::new(&address, TransportOptions::new(PATIENCE, None)).unwrap();
        let lean = PeerUnaryClient::new(transport, AttachSecret::new(None), LIMIT);
        let got = lean.call(request("ordinary"), PATH).await;
        assert_eq!(outcome(got), Ok(answer()));
    }
}
