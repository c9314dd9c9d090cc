//! The gRPC front end (service HubApi): each call converts its typed
//! message into the operation's input (`crate::wire`), calls the hub's
//! operation of the same name (`service.rs`) and converts the answer back;
//! an [`ApiError`] becomes the gRPC code of its kind with the same message
//! the REST API gives.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Hub;
use crate::api::{ApiError, CreateSession, ExecBody, UpdateSession};
use crate::proto::{self, hub_api_server};

/// The HubApi service over the hub.
#[derive(Clone)]
pub(super) struct GrpcApi(pub(super) Hub);

impl std::fmt::Debug for GrpcApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrpcApi")
    }
}

fn status(e: ApiError) -> Status {
    Status::new(e.kind.grpc_code(), e.message)
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> Answer<T> {
    Ok(Response::new(v))
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<proto::RecordBatch, Status>> + Send>>;

#[tonic::async_trait]
impl hub_api_server::HubApi for GrpcApi {
    async fn list_nodes(&self, _: Request<proto::ListNodesRequest>) -> Answer<proto::NodeList> {
        ok(proto::NodeList {
            nodes: self.0.list_nodes().iter().map(Into::into).collect(),
        })
    }

    async fn list_pods(&self, r: Request<proto::PodQuery>) -> Answer<proto::PodList> {
        let pods = self.0.list_pods(r.into_inner().into()).map_err(status)?;
        ok(proto::PodList {
            pods: pods.iter().map(Into::into).collect(),
        })
    }

    async fn list_probes(&self, _: Request<proto::ListProbesRequest>) -> Answer<proto::ProbeList> {
        ok(proto::ProbeList {
            probes: self.0.list_probes().iter().map(Into::into).collect(),
        })
    }

    async fn list_hooks(&self, _: Request<proto::ListHooksRequest>) -> Answer<proto::HookList> {
        ok(proto::HookList {
            hooks: self.0.list_hooks().iter().map(Into::into).collect(),
        })
    }

    async fn create_session(
        &self,
        r: Request<proto::CreateSessionRequest>,
    ) -> Answer<proto::SessionView> {
        let req = CreateSession::from(r.into_inner());
        let v = self.0.create_session(req).map_err(status)?;
        ok((&v).into())
    }

    async fn list_sessions(&self, r: Request<proto::SessionQuery>) -> Answer<proto::SessionList> {
        let q = r.into_inner().into();
        ok(proto::SessionList {
            sessions: self.0.list_sessions(&q).iter().map(Into::into).collect(),
        })
    }

    async fn get_session(&self, r: Request<proto::SessionId>) -> Answer<proto::SessionView> {
        let v = self.0.get_session(&r.into_inner().id).map_err(status)?;
        ok((&v).into())
    }

    async fn update_session(&self, r: Request<proto::SessionUpdate>) -> Answer<proto::SessionView> {
        let u = r.into_inner();
        let v = self
            .0
            .update_session(&u.id, &UpdateSession { state: u.state })
            .map_err(status)?;
        ok((&v).into())
    }

    async fn delete_session(&self, r: Request<proto::SessionId>) -> Answer<proto::Deleted> {
        let d = self.0.delete_session(&r.into_inner().id).map_err(status)?;
        ok(d.into())
    }

    async fn delete_sessions(&self, r: Request<proto::SessionQuery>) -> Answer<proto::Deleted> {
        ok(self.0.delete_sessions(&r.into_inner().into()).into())
    }

    type StreamEventsStream = RecordStream;

    async fn stream_events(&self, r: Request<proto::SessionId>) -> Answer<RecordStream> {
        let mut sub = self.0.subscribe(&r.into_inner().id).map_err(status)?;
        // One message per batch, as the hub got it from a node.
        let (tx, rx) = mpsc::channel::<Result<proto::RecordBatch, Status>>(64);
        tokio::spawn(async move {
            while let Some(batch) = sub.rx.recv().await {
                let _ = sub
                    .queued
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                        Some(q.saturating_sub(batch.len()))
                    });
                let msg = proto::RecordBatch {
                    records: batch.iter().map(|l| l.rec.clone()).collect(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn exec(&self, r: Request<proto::ExecCall>) -> Answer<proto::ExecView> {
        let v = self
            .0
            .exec(ExecBody::from(r.into_inner()))
            .await
            .map_err(status)?;
        ok(v.into())
    }
}
