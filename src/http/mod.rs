//! The HTTP surface: the grpc-gateway-compatible JSON API, health endpoints and `/metrics`.

pub mod gateway;
pub mod json;
pub mod probes;
