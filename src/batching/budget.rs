//! Byte budgets of node-to-node messages.
//!
//! Every message one node sends another (a forwarded batch, a chunk of owed GLOBAL or fallback
//! hits, a handoff batch) must fit in the receiver's message limit (`GUBER_MAX_REQUEST_SIZE`;
//! peers are assumed to share it). A count of items is not enough: 1000 items with long keys are
//! larger than 1 MiB, and a receiver refuses a message above its limit, so a sender that only
//! counts items would retry a chunk that can never be delivered. The pure helpers here measure an
//! item as it will be framed inside the message (prost `encoded_len`), keep headroom for the
//! message's other fields and the gRPC frame, and cut lists into chunks that fit. An item that
//! cannot fit even alone is handed back separately, so its caller drops it (and counts it) instead
//! of retrying forever.

/// Bytes kept free below the receiver's limit for the message's own fields (a sender address, a
/// flag) and rounding; the gRPC frame header is not counted by the receiver's limit.
pub const HEADROOM_BYTES: usize = 1024;

/// The most bytes the repeated items of one peer message may take together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageBudget {
    max_bytes: usize,
}

impl MessageBudget {
    /// The budget of messages to a receiver that accepts at most `max_message_size` bytes:
    /// the limit less [`HEADROOM_BYTES`] (less half of it, for limits below twice the headroom).
    pub fn for_limit(max_message_size: usize) -> Self {
        let headroom = HEADROOM_BYTES.min(max_message_size / 2);
        Self {
            max_bytes: max_message_size - headroom,
        }
    }

    /// A budget of exactly `max_bytes` for the items (tests, or callers that did their own
    /// accounting).
    pub fn exact(max_bytes: usize) -> Self {
        Self { max_bytes }
    }

    /// No bound (a receiver without a message limit).
    pub fn unbounded() -> Self {
        Self {
            max_bytes: usize::MAX,
        }
    }

    /// The most bytes the items may take together.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Whether an item of `item_bytes` (as [`framed_len`] measures it) can be sent at all.
    pub fn fits(&self, item_bytes: usize) -> bool {
        item_bytes <= self.max_bytes
    }
}

/// The bytes a message of `encoded_len` bytes takes as one element of a repeated field with a
/// field number below 16: a one-byte tag, the length as a varint, and the message.
pub fn framed_len(encoded_len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(encoded_len as u64) + encoded_len
}

/// `items` cut into chunks of at most `max_items` items whose framed sizes (`size`) sum to at most
/// the budget, in order, and the items too large to be sent even alone.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunks<T> {
    /// Chunks that each fit in one message.
    pub chunks: Vec<Vec<T>>,
    /// Items that exceed the budget alone: they can never be delivered.
    pub oversized: Vec<T>,
}

/// Cuts `items` into [`Chunks`]: greedy, in order, each chunk at most `max_items` long (at
/// least one) and at most `budget` bytes as measured by `size` (use [`framed_len`] of the
/// item's `encoded_len`).
pub fn chunk<T>(
    items: impl IntoIterator<Item = T>,
    max_items: usize,
    budget: MessageBudget,
    size: impl Fn(&T) -> usize,
) -> Chunks<T> {
    let max_items = max_items.max(1);
    let mut chunks = Vec::new();
    let mut oversized = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut current_bytes = 0usize;
    for item in items {
        let bytes = size(&item);
        if !budget.fits(bytes) {
            oversized.push(item);
            continue;
        }
        if !current.is_empty()
            && (current.len() >= max_items
                || current_bytes.saturating_add(bytes) > budget.max_bytes)
        {
            chunks.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes = current_bytes.saturating_add(bytes);
        current.push(item);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Chunks { chunks, oversized }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_budget_keeps_headroom_below_the_limit() {
        assert_eq!(
            MessageBudget::for_limit(1024 * 1024).max_bytes(),
            1024 * 1024 - 1024
        );
        assert_eq!(MessageBudget::for_limit(1500).max_bytes(), 750);
        assert_eq!(MessageBudget::for_limit(0).max_bytes(), 0);
    }

    #[test]
    fn framed_len_matches_prost_for_a_repeated_field() {
        for key_len in [0, 10, 100, 200, 20_000] {
            let item = crate::proto::RateLimitReq {
                name: "n".into(),
                unique_key: "k".repeat(key_len),
                hits: 1,
                limit: 10,
                duration: 1000,
                created_at: Some(1_700_000_000_000),
                ..Default::default()
            };
            let one = crate::proto::GetPeerRateLimitsReq {
                requests: vec![item.clone()],
            };
            assert_eq!(one.encoded_len(), framed_len(item.encoded_len()));
            let three = crate::proto::GetPeerRateLimitsReq {
                requests: vec![item.clone(), item.clone(), item.clone()],
            };
            assert_eq!(three.encoded_len(), 3 * framed_len(item.encoded_len()));
        }
    }

    #[test]
    fn chunks_respect_both_bounds_and_keep_order() {
        let sizes = [4usize, 4, 4, 9, 1, 1, 1, 1, 1, 10];
        let result = chunk(
            sizes.iter().copied().enumerate(),
            3,
            MessageBudget::exact(10),
            |(_, s)| *s,
        );
        let chunks: Vec<Vec<usize>> = result
            .chunks
            .iter()
            .map(|chunk| chunk.iter().map(|(i, _)| *i).collect())
            .collect();
        assert_eq!(
            chunks,
            vec![
                vec![0, 1],
                vec![2],
                vec![3, 4],
                vec![5, 6, 7],
                vec![8],
                vec![9]
            ]
        );
        assert!(result.oversized.is_empty());
        for chunk in &result.chunks {
            assert!(chunk.len() <= 3);
            assert!(chunk.iter().map(|(_, s)| s).sum::<usize>() <= 10);
        }
    }

    #[test]
    fn an_item_above_the_budget_is_set_apart_and_the_rest_still_goes() {
        let result = chunk([3usize, 11, 3, 50], 10, MessageBudget::exact(10), |s| *s);
        assert_eq!(result.chunks, vec![vec![3, 3]]);
        assert_eq!(result.oversized, vec![11, 50]);
    }

    #[test]
    fn empty_input_gives_no_chunk_and_zero_max_items_means_one() {
        let result = chunk(Vec::<usize>::new(), 5, MessageBudget::exact(10), |s| *s);
        assert!(result.chunks.is_empty() && result.oversized.is_empty());
        let result = chunk([1usize, 1], 0, MessageBudget::exact(10), |s| *s);
        assert_eq!(result.chunks, vec![vec![1], vec![1]]);
    }

    #[test]
    fn an_unbounded_budget_only_counts_items() {
        let result = chunk(
            [usize::MAX / 2, usize::MAX / 2, 7],
            2,
            MessageBudget::unbounded(),
            |s| *s,
        );
        assert_eq!(result.chunks.len(), 2);
        assert!(result.oversized.is_empty());
    }
}
