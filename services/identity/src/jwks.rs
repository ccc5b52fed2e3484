//! `KeyService`: the published key set, once or as a stream of changes.

use std::pin::Pin;
use std::sync::Arc;

use crm_auth::{MethodPolicy, Requirement};
use crm_proto::identity_v1::key_service_server::KeyService;
use crm_proto::identity_v1::{GetJwksRequest, Jwks, WatchJwksRequest};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crm_platform::streams::StreamLimiter;

use crate::keys::KeyStore;

const SERVICE: &str = "crm.identity.v1.KeyService";

/// RPC requirements: public keys are public.
#[must_use]
pub fn policy() -> MethodPolicy {
    MethodPolicy::new()
        .with(SERVICE, "GetJwks", Requirement::Public)
        .with(SERVICE, "WatchJwks", Requirement::Public)
}

/// Key-set streams open at once in this process, and per client address: the stream is
/// public and holds a load-shedding permit for its life, so it must be bounded per caller.
const MAX_STREAMS: usize = 64;
const MAX_STREAMS_PER_ADDRESS: usize = 8;

/// The handlers.
#[derive(Debug, Clone)]
pub struct KeyApi {
    keys: Arc<KeyStore>,
    streams: Arc<StreamLimiter>,
}

impl KeyApi {
    /// Handlers over `keys`.
    #[must_use]
    pub fn new(keys: Arc<KeyStore>) -> Self {
        Self {
            keys,
            streams: StreamLimiter::new(MAX_STREAMS, MAX_STREAMS_PER_ADDRESS),
        }
    }
}

type JwksStream = Pin<Box<dyn Stream<Item = Result<Jwks, Status>> + Send>>;

#[tonic::async_trait]
impl KeyService for KeyApi {
    type WatchJwksStream = JwksStream;

    async fn get_jwks(&self, _req: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        Ok(Response::new(self.keys.jwks()))
    }

    async fn watch_jwks(
        &self,
        req: Request<WatchJwksRequest>,
    ) -> Result<Response<Self::WatchJwksStream>, Status> {
        let guard = self
            .streams
            .open(crm_platform::streams::peer(&req))
            .map_err(crate::status)?;
        let mut rx = self.keys.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                let current = rx.borrow_and_update().clone();
                if tx.send(Ok(current)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }
}
