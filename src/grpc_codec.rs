//! The codec of every generated gRPC service and client of the crate: prost's, except that a
//! message is decoded from one contiguous slice.
//!
//! Why: tonic hands a decoder a `DecodeBuf`, a view of the frame buffer that prost reads through
//! the generic `Buf` trait, so every varint and every length takes prost's general path. Taken
//! as one `Bytes` first (no copy when the message is contiguous, which is the rule for a message in
//! one HTTP/2 DATA frame), the message decodes from a `&[u8]`, where prost's varints take their
//! fast path. Encoding is prost's own (`tonic_prost::ProstEncoder`). The difference is measured in
//! bench/analysis.md (instructions per decision of a 100-item call, callgrind). Messages that span
//! several DATA frames are copied into one first (`tests/it/hostile_bounds.rs` sends such calls).

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// A [`Codec`] that encodes `T` with prost and decodes `U` from one contiguous slice.
#[derive(Debug)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes `U` from the whole message taken as one slice.
#[derive(Debug)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode(message.as_ref())
            .map(Some)
            // As tonic-prost reports a message that does not decode.
            .map_err(|error| Status::internal(error.to_string()))
    }
}
