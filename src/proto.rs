//! The `pb.gubernator` wire types and services, generated from `proto/` at build time.
//!
//! These are the compatibility contract with Gubernator: the core works on them directly at the API
//! edge and converts to the pure types of [`crate::algorithms`] for evaluation.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("pb.gubernator");

/// ringlimit's own services, package `ringlimit.v1` (`proto/allow.proto`, `proto/handoff.proto`,
/// `proto/admin.proto`): generated once here, so the three features share one set of types.
pub mod ringlimit_v1 {
    tonic::include_proto!("ringlimit.v1");
}

/// The encoded `FileDescriptorSet` of `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gubernator_descriptor");

/// `answers` when the call answered one per item sent (`sent` of them), as every batched call of
/// this API does, in order; otherwise `mismatch(sent, answered)`.
pub fn one_answer_per_item<T, E>(
    answers: Vec<T>,
    sent: usize,
    mismatch: impl FnOnce(usize, usize) -> E,
) -> Result<Vec<T>, E> {
    if answers.len() == sent {
        Ok(answers)
    } else {
        Err(mismatch(sent, answers.len()))
    }
}
