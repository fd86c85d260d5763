//! The `ringlimit.v1.Admin` gRPC service: how one node answers another's admin view.
//!
//! It serves only this node's own share (counters, summaries, stored state); the node that was
//! asked by the operator does the fan-out and the merging. When a token is configured, calls must
//! carry it as `authorization: Bearer <token>` metadata, like the HTTP views.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::cluster;
use crate::admin::proto::{self, admin_server::Admin, admin_server::AdminServer};
use crate::request::LimitKey;
use crate::router::Router;

/// The admin service of `node`, or `None` when admin views are disabled.
pub fn service(router: &Arc<Router>) -> Option<AdminServer<AdminService>> {
    router.evaluator().admin().options().enabled.then(|| {
        AdminServer::new(AdminService {
            router: Arc::clone(router),
        })
    })
}

/// Serves a node's share of admin views to its peers.
#[derive(Clone)]
pub struct AdminService {
    router: Arc<Router>,
}

impl AdminService {
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if self.router.evaluator().admin().authorized(presented) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "a valid admin bearer token is required",
            ))
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn local_stats(
        &self,
        request: Request<proto::LocalStatsReq>,
    ) -> Result<Response<proto::LocalStatsResp>, Status> {
        self.authorize(&request)?;
        let window = cluster::window_from_wire(request.into_inner().window);
        Ok(Response::new(cluster::local_stats(&self.router, window)))
    }

    async fn peek_limit(
        &self,
        request: Request<proto::PeekLimitReq>,
    ) -> Result<Response<proto::PeekLimitResp>, Status> {
        self.authorize(&request)?;
        let request = request.into_inner();
        let key = LimitKey::new(request.name, request.unique_key);
        Ok(Response::new(cluster::peek_local(&self.router, &key)))
    }
}
