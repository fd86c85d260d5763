//! The integration tests, as one test binary.
//!
//! Every file here is a module of this one crate instead of a test target of its own: each test
//! target links the whole of ringlimit and its dependencies again, and with 27 of them linking
//! took most of CI's time. Tests still run in parallel (cargo's test threads), each on its own
//! loopback ports; run one file's tests with `cargo test --test it FILE::`, e.g.
//! `cargo test --test it tls::`. `tests/key_flood.rs` stays a binary of its own: it loads a node
//! process with 5M keys for minutes and would starve every test that ran beside it.

mod common;
mod support_etcd;

mod admin;
mod algorithm_properties;
mod allow;
mod cli;
mod cli_bench;
mod cli_check;
mod cli_healthcheck;
mod cluster;
mod deploy;
mod etcd_discovery;
mod example_config;
mod global;
mod grpc_api;
mod handoff;
mod hostile_bounds;
mod hostile_edges;
mod hostile_input;
mod hostile_peer;
mod http_gateway;
mod k8s_discovery;
mod library;
mod logging;
mod metrics;
mod nagle;
mod openapi;
mod overload;
mod owner_failure;
mod proxy;
mod r8limiter;
mod ring_cli;
mod rls;
mod shutdown;
mod tls;
mod tracing;
mod worked_examples;
