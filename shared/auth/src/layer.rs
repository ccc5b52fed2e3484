//! The authentication layer: verifies the bearer token of every call, enforces the permission
//! the RPC declares, and hands the [`Principal`] to the handler in the request extensions.
//!
//! Each service declares its RPCs' requirements in one table ([`MethodPolicy`]); a method missing
//! from every table is refused (fail closed). Health and reflection are exempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{AuthError, Principal, TokenVerifier};

/// What an RPC needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: anyone may call.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token whose roles grant this permission.
    Permission(&'static str),
}

/// The requirements of a set of RPCs, keyed by full method path (`/pkg.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct MethodPolicy {
    methods: HashMap<String, Requirement>,
}

const EXEMPT_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

impl MethodPolicy {
    /// An empty policy.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares the requirement of `Method` of `service` (`pkg.Service`).
    #[must_use]
    pub fn with(mut self, service: &str, method: &str, requirement: Requirement) -> Self {
        self.methods
            .insert(format!("/{service}/{method}"), requirement);
        self
    }

    /// Merges another policy into this one.
    #[must_use]
    pub fn merge(mut self, other: &Self) -> Self {
        self.methods
            .extend(other.methods.iter().map(|(k, v)| (k.clone(), *v)));
        self
    }

    /// The requirement of a method path; `None` when undeclared.
    #[must_use]
    pub fn requirement(&self, path: &str) -> Option<Requirement> {
        if EXEMPT_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Some(Requirement::Public);
        }
        self.methods.get(path).copied()
    }
}

/// Tower layer applying [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    policy: Arc<MethodPolicy>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// A layer verifying with `verifier` and enforcing `policy`.
    #[must_use]
    pub fn new(verifier: Arc<TokenVerifier>, policy: MethodPolicy) -> Self {
        Self {
            verifier,
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: Arc::clone(&self.verifier),
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service produced by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
    policy: Arc<MethodPolicy>,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

const DOMAIN: &str = "auth.crm";

/// The status for a refused token: UNAUTHENTICATED, except UNAVAILABLE while this service's
/// revocation feed is not current (the token may be fine; retry).
#[must_use]
pub fn unauthenticated(error: AuthError) -> Status {
    let code = if error == AuthError::RevocationsStale {
        Code::Unavailable
    } else {
        Code::Unauthenticated
    };
    Status::with_error_details(
        code,
        error.to_string(),
        ErrorDetails::with_error_info(error.reason(), DOMAIN, HashMap::new()),
    )
}

fn permission_denied(reason: &str, message: &str, permission: Option<&str>) -> Status {
    let mut metadata = HashMap::new();
    if let Some(p) = permission {
        metadata.insert("permission".to_owned(), p.to_owned());
    }
    Status::with_error_details(
        Code::PermissionDenied,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, metadata),
    )
}

fn bearer<B>(req: &http::Request<B>) -> Result<&str, AuthError> {
    let value = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Ok(token.trim())
    } else {
        Err(AuthError::Malformed)
    }
}

impl<S> AuthService<S> {
    /// Decides a call: `Ok(Some(principal))` to proceed authenticated, `Ok(None)` for a public
    /// call without a token, `Err(status)` to refuse.
    fn authorize<B>(&self, req: &http::Request<B>) -> Result<Option<Arc<Principal>>, Status> {
        let path = req.uri().path();
        let Some(requirement) = self.policy.requirement(path) else {
            return Err(permission_denied(
                "METHOD_NOT_DECLARED",
                "this method has no declared permission",
                None,
            ));
        };
        if requirement == Requirement::Public {
            return Ok(bearer(req).ok().and_then(|t| self.verifier.verify(t).ok()));
        }
        #[cfg(feature = "bench-skip-auth")]
        if let Some(p) = SKIPPED.get() {
            return Ok(Some(Arc::clone(p)));
        }
        let principal = bearer(req)
            .and_then(|t| self.verifier.verify(t))
            .map_err(unauthenticated)?;
        if !principal.may_call(self.verifier.audience(), path) {
            return Err(unauthenticated(AuthError::Audience));
        }
        if let Requirement::Permission(permission) = requirement
            && !principal.has_permission(permission)
        {
            return Err(permission_denied(
                "PERMISSION_MISSING",
                "the caller's roles do not grant the permission this method needs",
                Some(permission),
            ));
        }
        #[cfg(feature = "bench-skip-auth")]
        let _ = SKIPPED.set(Arc::clone(&principal));
        Ok(Some(principal))
    }
}

/// Benchmark builds only (`bench-skip-auth`, for the authentication-cost target T4): the first
/// principal that passed the checks, reused for every later authenticated call without reading
/// its token. Never part of a production build: the feature is off by default and no binary
/// the project ships enables it.
#[cfg(feature = "bench-skip-auth")]
static SKIPPED: std::sync::OnceLock<Arc<Principal>> = std::sync::OnceLock::new();

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.authorize(&req) {
            Ok(principal) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                // Take the service that was driven to readiness; leave a clone in its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await })
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

/// The principal of a call that passed the layer.
///
/// # Errors
/// UNAUTHENTICATED when the call carries no principal (a public call without a token).
pub fn principal_of<T>(request: &tonic::Request<T>) -> Result<Arc<Principal>, Status> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| unauthenticated(AuthError::Missing))
}
