//! `GetRateLimitsReq` and `GetPeerRateLimitsReq` decoded into [`Item`]s whose name and unique key
//! share the request's bytes, and their answers encoded ([`encode_answers`]).
//!
//! Why: prost decodes each item's two strings into two `String`s: two allocations, two copies and
//! two frees per item. In a 100-item call that was about a fifth of the node's instructions per
//! decision (callgrind: malloc and free about 850 of 4,288, the strings' copies about 90;
//! bench/analysis.md, change 12). Here a string is a slice of the request's `Bytes` (a reference
//! count, no copy), checked to be UTF-8 once.
//!
//! Both requests are `repeated RateLimitReq requests = 1`, so one decoder serves both. It reads
//! the messages well-formed clients send; anything else (a malformed message, a wire type a field
//! does not have, groups) is left to prost: [`decode_items`] then answers exactly what prost
//! answers, the same items or the same error. The tests hold the two to that on generated input.
//!
//! One exception, for hostile input: a message with more items than a call may carry is refused
//! as too many ([`Decoded::TooMany`]) as soon as its items are counted, before any is read, even
//! where prost would have found a malformed item further on. Prost reads every item first: an
//! empty item is two bytes of message and about 180 bytes of memory, so a 1 MiB message of them
//! took about 90 MB on each thread decoding one (measured: 16 such calls at once raised a node's
//! peak RSS from 16 to 190 MB; 48 MB since). Counting skips fields, groups included, without
//! reading them.
//!
//! The answers (`GetRateLimitsResp` and `GetPeerRateLimitsResp`, both `repeated RateLimitResp = 1`)
//! are written as prost writes them, byte for byte, in one pass (prost's encoder computes every
//! answer's length twice before writing it).

use std::collections::HashMap;

use bytes::Bytes;
use bytestring::ByteString;
use prost::Message;

use crate::grpc_unary::PREFIX_LEN;
use crate::proto;
use crate::request::Item;

/// What a `GetRateLimitsReq` or `GetPeerRateLimitsReq` message holds.
#[derive(Debug)]
pub enum Decoded {
    /// Its items.
    Items(Vec<Item>),
    /// More than the most a call may carry: refused before they are read.
    TooMany,
}

/// The items of a `GetRateLimitsReq` or `GetPeerRateLimitsReq` message (the message's bytes,
/// without the gRPC prefix), [`Decoded::TooMany`] past `max_items`, or prost's error for a
/// message that does not decode.
pub fn decode_items(message: &Bytes, max_items: usize) -> Result<Decoded, prost::DecodeError> {
    let reader = Reader::new(message);
    match reader.count_items(max_items) {
        Count::TooMany => return Ok(Decoded::TooMany),
        Count::Items(count) => {
            if let Some(items) = reader.items(count) {
                return Ok(Decoded::Items(items));
            }
        }
        // Malformed where prost also stops: prost has read no more items than were counted.
        Count::NotPlain => {}
    }
    let request = proto::GetRateLimitsReq::decode(message.as_ref())?;
    Ok(Decoded::Items(
        request.requests.into_iter().map(Item::from).collect(),
    ))
}

/// A part of a protobuf message, for counting what it holds before it is decoded: the whole
/// message, or one field's bytes within it. Other services' readers bound their repeated
/// fields with it the way [`decode_items`] bounds its items (Envoy's `ShouldRateLimit`, in
/// `rls::service`).
#[derive(Clone, Copy)]
pub struct Part<'a>(Reader<'a>);

impl<'a> Part<'a> {
    /// The whole of `message`.
    pub fn whole(message: &'a Bytes) -> Self {
        Self(Reader::new(message))
    }

    /// Whether this part has no bytes (an empty string, or a message with every field unset).
    pub fn is_empty(&self) -> bool {
        self.0.is_done()
    }

    /// The occurrences of the length-delimited field `field` in this part, in order: keys and
    /// lengths only, other fields (groups included) skipped without being read.
    pub fn occurrences(self, field: u32) -> Occurrences<'a> {
        Occurrences {
            reader: self.0,
            field,
            plain: true,
        }
    }
}

/// The occurrences of one length-delimited field in a [`Part`], each its own part. They end at
/// the part's end, or early at the first field that does not decode or the counted field with
/// another wire type (where prost stops too); [`Occurrences::plain`] tells which.
pub struct Occurrences<'a> {
    reader: Reader<'a>,
    field: u32,
    plain: bool,
}

impl Occurrences<'_> {
    /// Whether the occurrences ended at the part's end rather than at something prost refuses.
    pub fn plain(&self) -> bool {
        self.plain
    }
}

impl<'a> Iterator for Occurrences<'a> {
    type Item = Part<'a>;

    fn next(&mut self) -> Option<Part<'a>> {
        while self.plain && !self.reader.is_done() {
            let skipped = match self.reader.key() {
                Some((field, LENGTH_DELIMITED)) if field == self.field => {
                    match self.reader.delimited() {
                        Some(part) => return Some(Part(part)),
                        None => None,
                    }
                }
                Some((field, _)) if field == self.field => None,
                None => None,
                Some((tag, START_GROUP)) => self.reader.skip_group(tag, 1),
                Some((_, wire_type)) => self.reader.skip(wire_type),
            };
            self.plain = skipped.is_some();
        }
        None
    }
}

/// The items a message holds, counted at its top level.
enum Count {
    /// This many, at most the maximum.
    Items(usize),
    /// More than the maximum.
    TooMany,
    /// A top-level field that does not decode (where prost stops too).
    NotPlain,
}

/// How deep groups are skipped while counting: deeper than prost's recursion limit (100), so that
/// counting never stops where prost would read on.
const MAX_GROUP_DEPTH: u32 = 128;

/// Protobuf's wire types, as the key of a field carries them.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

/// A cursor over one message, or over one field's bytes within it. Every method answers `None`
/// where the input is not the plain form this module reads, and [`decode_items`] then hands the
/// message to prost.
#[derive(Clone, Copy)]
struct Reader<'a> {
    /// The whole message, which strings are sliced from.
    message: &'a Bytes,
    /// What is left to read of this reader's part of it.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(message: &'a Bytes) -> Self {
        Self {
            message,
            rest: message.as_ref(),
        }
    }

    fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    /// The reader of the `length` bytes that start here, which this one then skips.
    fn sub(&mut self, length: usize) -> Option<Reader<'a>> {
        let (field, rest) = self.rest.split_at_checked(length)?;
        self.rest = rest;
        Some(Reader {
            message: self.message,
            rest: field,
        })
    }

    /// A varint, as prost reads one: at most ten bytes, the tenth at most 1. Most are one byte
    /// (every key here, and small values), read first.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        match *self.rest {
            [byte, ref rest @ ..] if byte < 0x80 => {
                self.rest = rest;
                Some(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (index, &byte) in self.rest.iter().take(10).enumerate() {
            if index == 9 && byte > 1 {
                return None;
            }
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                self.rest = self.rest.get(index + 1..)?;
                return Some(value);
            }
        }
        None
    }

    /// A field's key: its number and wire type. Prost refuses keys above `u32::MAX`, field 0 and
    /// wire types above 5.
    #[inline]
    fn key(&mut self) -> Option<(u32, u64)> {
        let key = u32::try_from(self.varint()?).ok()?;
        let (field, wire_type) = (key >> 3, u64::from(key & 7));
        (field != 0 && wire_type <= FIXED32).then_some((field, wire_type))
    }

    /// The reader of a length-delimited field's bytes.
    fn delimited(&mut self) -> Option<Reader<'a>> {
        let length = usize::try_from(self.varint()?).ok()?;
        self.sub(length)
    }

    /// A string field's value, sharing the message's bytes (`slice_ref` of a part of the
    /// message, which every reader's bytes are).
    fn string(&mut self) -> Option<ByteString> {
        let field = self.delimited()?;
        ByteString::try_from(self.message.slice_ref(field.rest)).ok()
    }

    /// A string field's value, copied (map entries, rare).
    fn owned_string(&mut self) -> Option<String> {
        let field = self.delimited()?;
        String::from_utf8(field.rest.to_vec()).ok()
    }

    /// Skips the value of a field this module does not read (groups are left to prost).
    fn skip(&mut self, wire_type: u64) -> Option<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.sub(8).map(drop),
            LENGTH_DELIMITED => self.delimited().map(drop),
            FIXED32 => self.sub(4).map(drop),
            _ => None,
        }
    }

    /// Skips a group's fields up to its end (`tag`'s END_GROUP), as prost does, `depth` groups
    /// deep.
    fn skip_group(&mut self, tag: u32, depth: u32) -> Option<()> {
        if depth > MAX_GROUP_DEPTH {
            return None;
        }
        loop {
            match self.key()? {
                (inner, END_GROUP) => return (inner == tag).then_some(()),
                (inner, START_GROUP) => self.skip_group(inner, depth + 1)?,
                (_, wire_type) => self.skip(wire_type)?,
            }
        }
    }

    /// The whole message as `repeated RateLimitReq requests = 1`, holding `count` items (by
    /// [`Reader::count_items`]): the vector is allocated once and each item decoded in its place.
    fn items(self, count: usize) -> Option<Vec<Item>> {
        let mut items = Vec::with_capacity(count);
        let mut reader = self;
        while !reader.is_done() {
            match reader.key()? {
                (1, LENGTH_DELIMITED) => {
                    let fields = reader.delimited()?;
                    items.push(Item::default());
                    fields.item(items.last_mut()?)?;
                }
                (1, _) => return None,
                (_, wire_type) => reader.skip(wire_type)?,
            }
        }
        Some(items)
    }

    /// How many items the message holds, up to `max`: keys and lengths only, groups skipped.
    fn count_items(self, max: usize) -> Count {
        let mut items = Part(self).occurrences(1);
        let mut count = 0;
        for _ in &mut items {
            count += 1;
            if count > max {
                return Count::TooMany;
            }
        }
        if items.plain {
            Count::Items(count)
        } else {
            Count::NotPlain
        }
    }

    /// The rest of this reader as one `RateLimitReq`, into `item` (a default one). As protobuf
    /// merges: a field that comes twice keeps its last value, and map entries add up.
    fn item(mut self, item: &mut Item) -> Option<()> {
        while !self.is_done() {
            match self.key()? {
                (1, LENGTH_DELIMITED) => item.name = self.string()?,
                (2, LENGTH_DELIMITED) => item.unique_key = self.string()?,
                (3, VARINT) => item.hits = self.varint()? as i64,
                (4, VARINT) => item.limit = self.varint()? as i64,
                (5, VARINT) => item.duration = self.varint()? as i64,
                // int32 and enums: the varint's low 32 bits, as prost reads them.
                (6, VARINT) => item.algorithm = self.varint()? as i32,
                (7, VARINT) => item.behavior = self.varint()? as i32,
                (8, VARINT) => item.burst = self.varint()? as i64,
                (9, LENGTH_DELIMITED) => self.delimited()?.map_entry(&mut item.metadata)?,
                (10, VARINT) => item.created_at = Some(self.varint()? as i64),
                (1..=10, _) => return None,
                (_, wire_type) => self.skip(wire_type)?,
            }
        }
        Some(())
    }

    /// The rest of this reader as one `map<string, string>` entry, added to `map`.
    fn map_entry(mut self, map: &mut HashMap<String, String>) -> Option<()> {
        let (mut key, mut value) = (String::new(), String::new());
        while !self.is_done() {
            match self.key()? {
                (1, LENGTH_DELIMITED) => key = self.owned_string()?,
                (2, LENGTH_DELIMITED) => value = self.owned_string()?,
                (1 | 2, _) => return None,
                (_, wire_type) => self.skip(wire_type)?,
            }
        }
        map.insert(key, value);
        Some(())
    }
}

/// `answers` as one uncompressed gRPC message of `GetRateLimitsResp { responses: answers }` (or
/// `GetPeerRateLimitsResp`, the same bytes): the flag, the big-endian length, the message, as
/// prost and tonic write it. One pass: each answer's length is written after the answer, in the
/// byte kept for it (an answer is almost always shorter than 128 bytes; a longer one moves its own
/// bytes to make room).
pub fn encode_answers(answers: &[proto::RateLimitResp]) -> Bytes {
    // Most answers are 12 to 20 bytes: four varints, one a millisecond timestamp.
    let mut out = Vec::with_capacity(PREFIX_LEN + 24 * answers.len());
    out.extend_from_slice(&[0; PREFIX_LEN]);
    for answer in answers {
        put_key(&mut out, 1, LENGTH_DELIMITED);
        let at = out.len();
        out.push(0);
        put_answer(&mut out, answer);
        let length = out.len() - at - 1;
        if length < 0x80 {
            out[at] = length as u8;
        } else {
            let mut prefix = Vec::with_capacity(10);
            put_varint(&mut prefix, length as u64);
            out.splice(at..=at, prefix);
        }
    }
    // A message longer than u32::MAX cannot be framed; the batch limit keeps answers far below.
    let length = u32::try_from(out.len() - PREFIX_LEN).unwrap_or(u32::MAX);
    out[1..PREFIX_LEN].copy_from_slice(&length.to_be_bytes());
    Bytes::from(out)
}

fn put_answer(out: &mut Vec<u8>, answer: &proto::RateLimitResp) {
    // Enums are int32: negative values are sign-extended to ten bytes, as prost writes them.
    put_varint_field(out, 1, answer.status as i64 as u64);
    put_varint_field(out, 2, answer.limit as u64);
    put_varint_field(out, 3, answer.remaining as u64);
    put_varint_field(out, 4, answer.reset_time as u64);
    put_string_field(out, 5, &answer.error);
    for (key, value) in &answer.metadata {
        put_key(out, 6, LENGTH_DELIMITED);
        put_varint(
            out,
            (string_field_len(key) + string_field_len(value)) as u64,
        );
        put_string_field(out, 1, key);
        put_string_field(out, 2, value);
    }
}

/// A proto3 string field's length with its key, 0 when empty (left out, as prost does).
fn string_field_len(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(value.len() as u64) + value.len()
    }
}

/// A proto3 varint field, left out when 0.
fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(out, field, VARINT);
        put_varint(out, value);
    }
}

/// A proto3 string field, left out when empty.
fn put_string_field(out: &mut Vec<u8>, field: u32, value: &str) {
    if !value.is_empty() {
        put_key(out, field, LENGTH_DELIMITED);
        put_varint(out, value.len() as u64);
        out.extend_from_slice(value.as_bytes());
    }
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u64) {
    put_varint(out, (u64::from(field) << 3) | wire_type);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(message: &[u8]) -> Result<Vec<proto::RateLimitReq>, String> {
        proto::GetRateLimitsReq::decode(message)
            .map(|request| request.requests)
            .map_err(|error| error.to_string())
    }

    fn ours(message: &[u8]) -> Result<Vec<proto::RateLimitReq>, String> {
        match decode_items(&Bytes::copy_from_slice(message), usize::MAX) {
            Ok(Decoded::Items(items)) => {
                Ok(items.into_iter().map(proto::RateLimitReq::from).collect())
            }
            Ok(Decoded::TooMany) => Err("too many".into()),
            Err(error) => Err(error.to_string()),
        }
    }

    fn fast(message: &[u8]) -> Option<Vec<proto::RateLimitReq>> {
        let bytes = Bytes::copy_from_slice(message);
        let reader = Reader::new(&bytes);
        let Count::Items(count) = reader.count_items(usize::MAX) else {
            return None;
        };
        let items = reader.items(count)?;
        Some(items.into_iter().map(proto::RateLimitReq::from).collect())
    }

    fn empty_items(count: usize) -> Bytes {
        Bytes::from(b"\x0a\x00".repeat(count))
    }

    #[test]
    fn more_items_than_a_call_may_carry_are_refused_before_they_are_read() {
        let at_most = decode_items(&empty_items(1000), 1000).unwrap();
        assert!(matches!(at_most, Decoded::Items(items) if items.len() == 1000));
        assert!(matches!(
            decode_items(&empty_items(1001), 1000),
            Ok(Decoded::TooMany)
        ));
        // A group at the top level, which prost skips, does not hide them.
        let mut grouped = vec![0x1b, 0x08, 0x01, 0x23, 0x24, 0x1c];
        grouped.extend_from_slice(&empty_items(1001));
        assert!(proto::GetRateLimitsReq::decode(grouped.as_slice()).is_ok());
        assert!(matches!(
            decode_items(&Bytes::from(grouped), 1000),
            Ok(Decoded::TooMany)
        ));
        // Refused as too many even with a malformed item among them (prost would have read all
        // 1001 to find it).
        let mut malformed = empty_items(1001).to_vec();
        malformed.extend_from_slice(&[0x0a, 0x02, 0x08, 0x80]);
        assert!(proto::GetRateLimitsReq::decode(malformed.as_slice()).is_err());
        assert!(matches!(
            decode_items(&Bytes::from(malformed), 1000),
            Ok(Decoded::TooMany)
        ));
        // Under the maximum, a malformed message gets prost's error.
        let mut few = empty_items(3).to_vec();
        few.extend_from_slice(&[0x0a, 0x02, 0x08, 0x80]);
        let expected = proto::GetRateLimitsReq::decode(few.as_slice()).unwrap_err();
        let error = decode_items(&Bytes::from(few), 1000).unwrap_err();
        assert_eq!(error.to_string(), expected.to_string());
    }

    fn sample() -> proto::GetRateLimitsReq {
        proto::GetRateLimitsReq {
            requests: vec![
                proto::RateLimitReq {
                    name: "requests_per_sec".into(),
                    unique_key: "account:12345".into(),
                    hits: 1,
                    limit: 100,
                    duration: 1000,
                    algorithm: 1,
                    behavior: 2 | 32,
                    burst: 7,
                    metadata: [("a".to_string(), "b".to_string())].into(),
                    created_at: Some(1_700_000_000_000),
                },
                proto::RateLimitReq {
                    name: "ünïcode".into(),
                    unique_key: "k".into(),
                    hits: -1,
                    limit: i64::MAX,
                    duration: -5,
                    algorithm: -3,
                    behavior: i32::MIN,
                    ..Default::default()
                },
                proto::RateLimitReq::default(),
            ],
        }
    }

    #[test]
    fn a_request_decodes_as_prost_decodes_it_and_shares_its_bytes() {
        let message = Bytes::from(sample().encode_to_vec());
        let Ok(Decoded::Items(items)) = decode_items(&message, 1000) else {
            panic!("the plain form");
        };
        let as_proto: Vec<_> = items
            .iter()
            .cloned()
            .map(proto::RateLimitReq::from)
            .collect();
        assert_eq!(as_proto, sample().requests);
        // The name lies inside the message's bytes: a slice of them, not a copy.
        let range = message.as_ptr_range();
        assert!(range.contains(&items[0].name.as_bytes().as_ptr()));
        assert!(range.contains(&items[0].unique_key.as_bytes().as_ptr()));
    }

    #[test]
    fn peers_requests_have_the_same_shape() {
        let request = proto::GetPeerRateLimitsReq {
            requests: sample().requests,
        };
        let decoded = ours(&request.encode_to_vec()).unwrap();
        assert_eq!(decoded, request.requests);
    }

    #[test]
    fn what_this_reader_does_not_read_gets_prosts_answer() {
        let mut message = sample().encode_to_vec();
        // A string that is not UTF-8.
        let at = message.windows(2).position(|w| w == b"k\x18").unwrap();
        message[at] = 0xff;
        assert!(fast(&message).is_none());
        assert_eq!(ours(&message), reference(&message));
        assert!(ours(&message).is_err());
        // A group in an item (wire types 3 and 4 around field 20): prost skips it.
        let item = [0x0a, 1, b'n', 0xa3, 0x01, 0x08, 5, 0xa4, 0x01];
        let mut grouped = vec![0x0a, item.len() as u8];
        grouped.extend_from_slice(&item);
        assert!(fast(&grouped).is_none());
        assert_eq!(ours(&grouped), reference(&grouped));
        assert_eq!(ours(&grouped).unwrap()[0].name, "n");
        // Cut short.
        let full = sample().encode_to_vec();
        for cut in 0..full.len() {
            assert_eq!(ours(&full[..cut]), reference(&full[..cut]), "cut at {cut}");
        }
    }

    /// Answers as prost would send them: `GetRateLimitsResp` framed as tonic frames it.
    fn prost_answers(answers: &[proto::RateLimitResp]) -> Vec<u8> {
        let message = proto::GetRateLimitsResp {
            responses: answers.to_vec(),
        }
        .encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend(message);
        framed
    }

    fn answer() -> impl Strategy<Value = proto::RateLimitResp> {
        let number = prop_oneof![Just(0i64), -3i64..300, any::<i64>()];
        let text = prop_oneof![Just(String::new()), "[a-zé]{1,3}", "x{120,200}"];
        (
            prop_oneof![Just(0i32), Just(1), any::<i32>()],
            (number.clone(), number.clone(), number),
            text.clone(),
            proptest::collection::hash_map(text.clone(), text, 0..3),
        )
            .prop_map(
                |(status, (limit, remaining, reset_time), error, metadata)| proto::RateLimitResp {
                    status,
                    limit,
                    remaining,
                    reset_time,
                    error,
                    metadata,
                },
            )
    }

    #[test]
    fn answers_are_written_as_prost_writes_them() {
        let none = encode_answers(&[]);
        assert_eq!(none.as_ref(), prost_answers(&[]).as_slice());
        let answers = [
            proto::RateLimitResp {
                status: 1,
                limit: 10,
                remaining: 0,
                reset_time: 1_700_000_060_000,
                error: String::new(),
                metadata: [("owner".to_string(), "10.0.0.1:1051".to_string())].into(),
            },
            proto::RateLimitResp::default(),
            proto::RateLimitResp {
                error: "field 'namespace' cannot be empty".into(),
                status: -1,
                limit: -1,
                ..Default::default()
            },
        ];
        let ours = encode_answers(&answers);
        assert_eq!(ours.as_ref(), prost_answers(&answers).as_slice());
        let peers = proto::GetPeerRateLimitsResp {
            rate_limits: answers.to_vec(),
        };
        assert_eq!(ours[PREFIX_LEN..], peers.encode_to_vec()[..]);
        // An answer of 128 bytes or more takes a longer length than the byte kept for it.
        let long = [proto::RateLimitResp {
            error: "e".repeat(300),
            ..answers[0].clone()
        }];
        let ours = encode_answers(&long);
        assert_eq!(ours.as_ref(), prost_answers(&long).as_slice());
    }

    /// One field of a message: number, wire type, and what follows the key.
    fn field() -> impl Strategy<Value = (u32, u64, Vec<u8>)> {
        let number = prop_oneof![1u32..=11, 12u32..40, Just(0u32), Just(u32::MAX >> 3)];
        let wire_type = prop_oneof![
            4 => Just(0u64),
            4 => Just(2u64),
            1 => Just(1u64),
            1 => Just(5u64),
            1 => Just(3u64),
            1 => Just(6u64),
        ];
        (
            number,
            wire_type,
            proptest::collection::vec(any::<u8>(), 0..12),
        )
    }

    fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// A field encoded: a well-formed value of its wire type most of the time, raw bytes else.
    fn encoded((number, wire_type, payload): (u32, u64, Vec<u8>), well_formed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint((u64::from(number) << 3) | wire_type, &mut out);
        if !well_formed {
            out.extend_from_slice(&payload);
            return out;
        }
        match wire_type {
            0 => encode_varint(
                payload
                    .iter()
                    .fold(0u64, |v, b| v.rotate_left(8) ^ u64::from(*b)),
                &mut out,
            ),
            1 => out.extend(payload.iter().chain([0u8; 8].iter()).take(8)),
            5 => out.extend(payload.iter().chain([0u8; 4].iter()).take(4)),
            _ => {
                encode_varint(payload.len() as u64, &mut out);
                out.extend_from_slice(&payload);
            }
        }
        out
    }

    /// An item of random fields (known and unknown, right and wrong wire types), sometimes with
    /// a map entry of random fields inside.
    fn item() -> impl Strategy<Value = Vec<u8>> {
        let fields = proptest::collection::vec((field(), prop::bool::weighted(0.9)), 0..8);
        let entry = proptest::collection::vec((field(), prop::bool::weighted(0.9)), 0..3);
        (fields, entry, any::<bool>()).prop_map(|(fields, entry, with_entry)| {
            let mut out = Vec::new();
            for (field, well_formed) in fields {
                out.extend(encoded(field, well_formed));
            }
            if with_entry {
                let mut inner = Vec::new();
                for (field, well_formed) in entry {
                    inner.extend(encoded(field, well_formed));
                }
                out.push(0x4a);
                encode_varint(inner.len() as u64, &mut out);
                out.extend(inner);
            }
            out
        })
    }

    /// A message of items and, between them, other top-level fields.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec((item(), field(), any::<bool>()), 0..4).prop_map(|parts| {
            let mut out = Vec::new();
            for (item, other, with_other) in parts {
                out.push(0x0a);
                encode_varint(item.len() as u64, &mut out);
                out.extend(item);
                if with_other {
                    out.extend(encoded(other, true));
                }
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the input, the answer is prost's: the same items or the same error.
        #[test]
        fn answers_as_prost_on_generated_messages(message in message()) {
            prop_assert_eq!(ours(&message), reference(&message));
        }

        /// Every message prost reads without groups, this reader reads itself.
        #[test]
        fn reads_itself_every_message_prost_reads(message in message()) {
            if let Ok(expected) = reference(&message) {
                match fast(&message) {
                    Some(items) => prop_assert_eq!(items, expected),
                    None => prop_assert!(contains_group(&message), "left to prost: {:?}", message),
                }
            }
        }

        /// Answers of every kind are the bytes prost writes.
        #[test]
        fn writes_answers_as_prost(answers in proptest::collection::vec(answer(), 0..5)) {
            let (ours, expected) = (encode_answers(&answers), prost_answers(&answers));
            prop_assert_eq!(ours.as_ref(), expected.as_slice());
        }

        #[test]
        fn answers_as_prost_on_bytes(message in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(ours(&message), reference(&message));
        }
    }

    /// Whether a message prost reads has a group anywhere (wire type 3), which this reader leaves
    /// to prost: walked with prost's own rules.
    fn contains_group(message: &[u8]) -> bool {
        fn walk(bytes: &[u8], depth: u32) -> bool {
            let mut reader = bytes;
            while !reader.is_empty() {
                let Ok(key) = prost::encoding::decode_varint(&mut reader) else {
                    return false;
                };
                let wire_type = key & 7;
                match wire_type {
                    0 => {
                        let _ = prost::encoding::decode_varint(&mut reader);
                    }
                    1 => reader = &reader[8.min(reader.len())..],
                    5 => reader = &reader[4.min(reader.len())..],
                    2 => {
                        let Ok(length) = prost::encoding::decode_varint(&mut reader) else {
                            return false;
                        };
                        let length = (length as usize).min(reader.len());
                        if depth < 3 && walk(&reader[..length], depth + 1) {
                            return true;
                        }
                        reader = &reader[length..];
                    }
                    _ => return true,
                }
            }
            false
        }
        walk(message, 0)
    }
}
