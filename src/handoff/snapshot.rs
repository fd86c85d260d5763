//! The optional snapshot of the store (`GUBER_SNAPSHOT_PATH`), for restarts of a single node.
//!
//! Format: the 4-byte magic `RLSN`, a big-endian `u32` format version (1), then one prost-encoded
//! `ringlimit.v1.Snapshot` (the same bucket messages the handoff service carries). It is written to
//! a temporary file beside the target, synced, then renamed over it, so a crash mid-write leaves
//! the previous snapshot intact. On start, buckets that expired meanwhile are skipped; a missing,
//! truncated or corrupt file is a warning and the node starts empty: a snapshot is an optimisation,
//! never a reason not to serve.
//!
//! The snapshot also keeps the hits the node still owed other nodes when it stopped ([`OwedHit`]:
//! GLOBAL hits not yet synced, hits taken while an owner was unreachable): they are queued again
//! on start and sent to the current owners, so a restart loses nothing that was admitted.

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::algorithms::Bucket;
use crate::request::LimitKey;

use super::{pb, wire};

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 4] = b"RLSN";
/// The format version written.
pub const VERSION: u32 = 1;

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not start with the snapshot header.
    #[error("not a ringlimit snapshot (bad header)")]
    BadHeader,
    /// The file was written by an unknown format version.
    #[error("unsupported snapshot version {0} (this build reads version {VERSION})")]
    Version(u32),
    /// The body does not decode.
    #[error("corrupt snapshot: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Hits owed to another node, as kept in a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct OwedHit {
    /// The summed hits, with the key and the limit (as the owner will be sent them).
    pub item: crate::proto::RateLimitReq,
    /// Owed as GLOBAL hits (else: hits taken under the `local` owner-failure policy).
    pub global: bool,
}

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contents {
    /// The stored buckets.
    pub buckets: Vec<(LimitKey, Bucket)>,
    /// The hits owed to other nodes.
    pub owed: Vec<OwedHit>,
}

/// The bytes of a snapshot of `entries`, taken at `now_ms`.
pub fn encode(entries: &[(LimitKey, Bucket)], now_ms: i64) -> Vec<u8> {
    encode_with_owed(entries, &[], now_ms)
}

/// The bytes of a snapshot of `entries` and `owed`, taken at `now_ms`.
pub fn encode_with_owed(entries: &[(LimitKey, Bucket)], owed: &[OwedHit], now_ms: i64) -> Vec<u8> {
    let snapshot = pb::Snapshot {
        written_at: now_ms,
        buckets: entries
            .iter()
            .map(|(key, bucket)| wire::to_wire(key, bucket, None))
            .collect(),
        owed: owed
            .iter()
            .map(|hit| pb::OwedHits {
                request: hit.item.encode_to_vec(),
                global: hit.global,
            })
            .collect(),
    };
    let mut bytes = Vec::with_capacity(8 + snapshot.encoded_len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    snapshot.encode(&mut bytes).unwrap_or_default();
    bytes
}

/// The live buckets of a snapshot's `bytes` at `now_ms` (expired ones are skipped).
pub fn decode(bytes: &[u8], now_ms: i64) -> Result<Vec<(LimitKey, Bucket)>, SnapshotError> {
    decode_contents(bytes, now_ms).map(|contents| contents.buckets)
}

/// The live buckets and the owed hits of a snapshot's `bytes` at `now_ms`; owed entries that do
/// not decode are skipped.
pub fn decode_contents(bytes: &[u8], now_ms: i64) -> Result<Contents, SnapshotError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(SnapshotError::BadHeader);
    }
    let version = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let snapshot = pb::Snapshot::decode(&bytes[8..])?;
    let buckets = snapshot
        .buckets
        .iter()
        .filter_map(wire::from_wire)
        .filter(|(_, bucket, _)| !bucket.is_expired(now_ms))
        .map(|(key, bucket, _)| (key, bucket))
        .collect();
    let owed = snapshot
        .owed
        .iter()
        .filter_map(|owed| {
            let item = crate::proto::RateLimitReq::decode(owed.request.as_slice()).ok()?;
            Some(OwedHit {
                item,
                global: owed.global,
            })
        })
        .collect();
    Ok(Contents { buckets, owed })
}

/// Writes a snapshot of `entries` to `path` atomically (temporary file, sync, rename).
pub fn write(
    path: &Path,
    entries: &[(LimitKey, Bucket)],
    now_ms: i64,
) -> Result<(), SnapshotError> {
    write_with_owed(path, entries, &[], now_ms)
}

/// Writes a snapshot of `entries` and `owed` to `path` atomically (temporary file, sync, rename).
pub fn write_with_owed(
    path: &Path,
    entries: &[(LimitKey, Bucket)],
    owed: &[OwedHit],
    now_ms: i64,
) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&encode_with_owed(entries, owed, now_ms))?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(io)
}

/// Reads the live buckets of the snapshot at `path`.
pub fn read(path: &Path, now_ms: i64) -> Result<Vec<(LimitKey, Bucket)>, SnapshotError> {
    read_contents(path, now_ms).map(|contents| contents.buckets)
}

/// Reads the live buckets and the owed hits of the snapshot at `path`.
pub fn read_contents(path: &Path, now_ms: i64) -> Result<Contents, SnapshotError> {
    let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_contents(&bytes, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{LeakyBucket, Status, TokenBucket};

    #[test]
    fn owed_hits_round_trip_and_older_snapshots_have_none() {
        let owed = vec![
            OwedHit {
                item: crate::proto::RateLimitReq {
                    name: "n".into(),
                    unique_key: "k".into(),
                    hits: 7,
                    limit: 10,
                    duration: 60_000,
                    created_at: Some(5),
                    ..Default::default()
                },
                global: false,
            },
            OwedHit {
                item: crate::proto::RateLimitReq {
                    name: "g".into(),
                    unique_key: "k".into(),
                    hits: 2,
                    ..Default::default()
                },
                global: true,
            },
        ];
        let bytes = encode_with_owed(&[], &owed, 1);
        assert_eq!(decode_contents(&bytes, 1).unwrap().owed, owed);
        assert!(decode_contents(&encode(&[], 1), 1).unwrap().owed.is_empty());
    }

    fn token(expire_at: i64) -> Bucket {
        Bucket::Token(TokenBucket {
            status: Status::UnderLimit,
            limit: 5,
            duration: 1000,
            remaining: 3,
            created_at: expire_at - 1000,
            expire_at,
        })
    }

    #[test]
    fn live_buckets_round_trip_and_expired_ones_are_skipped() {
        let leaky = Bucket::Leaky(LeakyBucket {
            limit: 5,
            duration: 1000,
            remaining: 1.5,
            updated_at: 100,
            burst: 5,
            expire_at: 5000,
        });
        let entries = vec![
            (LimitKey::new("n", "live"), token(5000)),
            (LimitKey::new("n", "gone"), token(500)),
            (LimitKey::new("n", "leaky"), leaky),
        ];
        let decoded = decode(&encode(&entries, 100), 1000).unwrap();
        assert_eq!(decoded, vec![entries[0].clone(), entries[2].clone()]);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        assert!(matches!(decode(b"", 0), Err(SnapshotError::BadHeader)));
        assert!(matches!(
            decode(b"XXXX\0\0\0\x01", 0),
            Err(SnapshotError::BadHeader)
        ));
        assert!(matches!(
            decode(b"RLSN\0\0\0\x09", 0),
            Err(SnapshotError::Version(9))
        ));
        let mut bytes = encode(&[(LimitKey::new("n", "k"), token(5000))], 0);
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(decode(&bytes, 0), Err(SnapshotError::Decode(_))));
    }

    #[test]
    fn write_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.bin");
        write(&path, &[(LimitKey::new("n", "a"), token(5000))], 0).unwrap();
        write(&path, &[(LimitKey::new("n", "b"), token(5000))], 0).unwrap();
        let read_back = read(&path, 0).unwrap();
        assert_eq!(read_back.len(), 1);
        assert_eq!(read_back[0].0, LimitKey::new("n", "b"));
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
        assert!(matches!(
            read(&dir.path().join("missing"), 0),
            Err(SnapshotError::Io { .. })
        ));
    }
}
