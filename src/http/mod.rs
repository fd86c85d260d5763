//! The HTTP gateway: Gubernator's grpc-gateway API (`/v1/...`) served over JSON.

pub mod json;
