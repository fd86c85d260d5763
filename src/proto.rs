//! The `pb.gubernator` wire types and services, generated from `proto/` at build time.
//!
//! These are the compatibility contract with Gubernator: the core works on them directly at the API
//! edge and converts to the pure types of [`crate::algorithms`] for evaluation.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("pb.gubernator");

/// The encoded `FileDescriptorSet` of `proto/`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gubernator_descriptor");
