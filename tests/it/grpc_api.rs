//! The gRPC surface: V1, PeersV1, grpc.health.v1, reflection, message limits and exact counting
//! under concurrency.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::{UNDER, grpc_client, start_node, token};
use ringlimit::proto::{self, peers_v1_client::PeersV1Client};
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn sixty_four_concurrent_tasks_admit_exactly_the_limit() {
    let server = start_node(&[]).await;
    let limit = 1000;
    let admitted = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut client = grpc_client(&server).await;
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let answer = client
                    .get_rate_limits(proto::GetRateLimitsReq {
                        requests: vec![token("contended", 1, limit, 3_600_000)],
                    })
                    .await
                    .expect("call succeeds")
                    .into_inner()
                    .responses
                    .remove(0);
                if answer.status == UNDER {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // 64 × 20 = 1280 hits against a limit of 1000.
    assert_eq!(admitted.load(Ordering::SeqCst), limit);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_that_join_to_the_same_string_are_separate_limits() {
    let server = start_node(&[]).await;
    let mut client = grpc_client(&server).await;
    let item = |name: &str, key: &str| proto::RateLimitReq {
        name: name.into(),
        unique_key: key.into(),
        hits: 1,
        limit: 1,
        duration: 60_000,
        ..Default::default()
    };
    let answers = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![item("a_b", "c"), item("a", "b_c")],
        })
        .await
        .unwrap()
        .into_inner()
        .responses;
    assert!(
        answers
            .iter()
            .all(|a| a.status == UNDER && a.remaining == 0)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn peer_calls_evaluate_locally() {
    let server = start_node(&[]).await;
    let mut peers = PeersV1Client::connect(format!("http://{}", server.grpc_address()))
        .await
        .unwrap();
    let answers = peers
        .get_peer_rate_limits(proto::GetPeerRateLimitsReq {
            requests: vec![token("peer", 3, 10, 60_000), token("", 1, 10, 60_000)],
        })
        .await
        .unwrap()
        .into_inner()
        .rate_limits;
    assert_eq!(answers[0].remaining, 7);
    assert!(answers[0].metadata.is_empty());
    assert_eq!(answers[1].error, "field 'unique_key' cannot be empty");

    // The same limit is visible through V1.
    let mut client = grpc_client(&server).await;
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token("peer", 0, 10, 60_000)],
        })
        .await
        .unwrap()
        .into_inner()
        .responses
        .remove(0);
    assert_eq!(answer.remaining, 7);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_calls_answer_empty_lists() {
    let server = start_node(&[]).await;
    let mut client = grpc_client(&server).await;
    let answers = client
        .get_rate_limits(proto::GetRateLimitsReq { requests: vec![] })
        .await
        .unwrap()
        .into_inner()
        .responses;
    assert!(answers.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let server = start_node(&[]).await;
    let mut client = grpc_client(&server).await;
    let big_key = "k".repeat(1000);
    let requests = (0..1100)
        .map(|i| token(&format!("{big_key}{i}"), 1, 1, 1000))
        .collect();
    let status = client
        .get_rate_limits(proto::GetRateLimitsReq { requests })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_check_and_live_check() {
    let server = start_node(&["--data-center=dc1"]).await;
    let mut client = grpc_client(&server).await;
    let health = client
        .health_check(proto::HealthCheckReq {})
        .await
        .unwrap()
        .into_inner();
    let advertise = server.grpc_address().to_string();
    assert_eq!(health.status, "healthy");
    assert_eq!(health.peer_count, 1);
    assert_eq!(health.advertise_address, advertise);
    assert_eq!(
        health.local_peers,
        vec![proto::PeerHealthResp {
            grpc_address: advertise,
            data_center: "dc1".into()
        }]
    );
    assert!(health.region_peers.is_empty());
    client.live_check(proto::LiveCheckReq {}).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn standard_grpc_health_reports_serving() {
    let server = start_node(&[]).await;
    let mut health = HealthClient::new(common::channel(server.grpc_address()).await);
    for service in ["", "pb.gubernator.V1", "pb.gubernator.PeersV1"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_every_service_in_v1_and_v1alpha() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as ClientV1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as RequestV1;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as ResponseV1;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as ClientAlpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as RequestAlpha;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as ResponseAlpha;

    let server = start_node(&[]).await;
    let endpoint = server.grpc_address();
    let expected = [
        "grpc.health.v1.Health",
        "pb.gubernator.PeersV1",
        "pb.gubernator.V1",
        "envoy.service.ratelimit.v3.RateLimitService",
    ];

    let mut v1 = ClientV1::new(common::channel(endpoint).await);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(RequestV1::ListServices(String::new())),
    };
    let mut stream = v1
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(reply)) = stream.next().await else {
        panic!("no reflection reply")
    };
    let Some(ResponseV1::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in expected {
        assert!(names.contains(&name), "v1 lists {names:?}");
    }

    let mut alpha = ClientAlpha::new(common::channel(endpoint).await);
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(RequestAlpha::ListServices(String::new())),
    };
    let mut stream = alpha
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(reply)) = stream.next().await else {
        panic!("no reflection reply")
    };
    let Some(ResponseAlpha::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in expected {
        assert!(names.contains(&name), "v1alpha lists {names:?}");
    }
    server.shutdown().await.unwrap();
}
