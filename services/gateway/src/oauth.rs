//! OAuth 2.0 over HTTP, executed by identity's RPCs: the token endpoint (RFC 6749 form
//! encoding; `client_credentials`, `refresh_token`, `authorization_code` with PKCE, and RFC
//! 8693 token exchange; the client authenticated by HTTP Basic or in the body), a minimal
//! sign-in page for the code flow, revocation (RFC 7009), introspection (RFC 7662), the JWKS and
//! the RFC 8414 metadata. Errors are RFC 6749's JSON (`error`, `error_description`).

// The refusals are finished responses handed straight back by the handlers; boxing them would
// only add an allocation on the error path.
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::Query;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use crm_proto::identity_v1::auth_service_client::AuthServiceClient;
use crm_proto::identity_v1::key_service_client::KeyServiceClient;
use crm_proto::identity_v1::o_auth_service_client::OAuthServiceClient;
use crm_proto::identity_v1::{
    ClientCredentialsRequest, CreateAuthorizationCodeRequest, ExchangeAuthorizationCodeRequest,
    ExchangeTokenRequest, GetJwksRequest, IntrospectTokenRequest, LoginRequest,
    RefreshTokenRequest, RevokeTokenRequest, TokenResponse,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

/// RFC 8693's grant type.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The routes of this module, for the gateway's router.
pub(crate) fn routes(router: axum::Router<crate::Gateway>) -> axum::Router<crate::Gateway> {
    use axum::routing::{get, post};
    router
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/authorize", get(authorize_page).post(authorize))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

/// An RFC 6749 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response();
    if error == "invalid_client" {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"crm\""),
        );
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn no_store_json(value: &Value) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        value.to_string(),
    )
        .into_response()
}

/// The form parameters of a body (each name once: a repeated parameter is refused).
fn form(body: &[u8]) -> Result<Vec<(String, String)>, Response> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (n, (k, _)) in pairs.iter().enumerate() {
        if pairs[..n].iter().any(|(j, _)| j == k) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{k} is given more than once"),
            ));
        }
    }
    Ok(pairs)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The client's id and secret, from HTTP Basic (RFC 6749 2.3.1: form-encoded parts) or the
/// body; both at once is refused.
fn client(headers: &HeaderMap, form: &[(String, String)]) -> Result<(String, String), Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let in_body = (param(form, "client_id"), param(form, "client_secret"));
    let Some(encoded) = basic else {
        return Ok((in_body.0.to_owned(), in_body.1.to_owned()));
    };
    if !in_body.1.is_empty() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "authenticate the client one way: HTTP Basic or the body",
        ));
    }
    let invalid = || {
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "malformed Basic credentials",
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok((unescape(id), unescape(secret)))
}

fn tokens(t: &TokenResponse) -> Response {
    let mut body = json!({
        "access_token": t.access_token,
        "token_type": if t.token_type.is_empty() { "Bearer" } else { t.token_type.as_str() },
        "expires_in": t.expires_in,
    });
    if !t.refresh_token.is_empty() {
        body["refresh_token"] = json!(t.refresh_token);
    }
    if !t.scope.is_empty() {
        body["scope"] = json!(t.scope);
    }
    no_store_json(&body)
}

/// An identity error as RFC 6749's: a refused client is `invalid_client`, a refused grant
/// `invalid_grant`.
fn grant_error(status: &tonic::Status, client_grant: bool) -> Response {
    let text = status.message();
    match status.code() {
        Code::Unauthenticated if client_grant => {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", text)
        }
        Code::InvalidArgument => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", text),
        Code::PermissionDenied => oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", text),
        Code::ResourceExhausted => oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            text,
        ),
        Code::Unavailable | Code::DeadlineExceeded => oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            text,
        ),
        Code::Internal | Code::Unknown | Code::DataLoss => {
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", text)
        }
        Code::Ok
        | Code::Cancelled
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", text),
    }
}

/// Identity as one HTTP request reaches it: the channel, and what each call carries besides
/// its message (the client's address chain, the gateway's service credential).
pub(crate) struct Identity {
    channel: Channel,
    passed: crate::Passed,
}

impl Identity {
    /// A call of identity for this request, with `token` as its Bearer credential when given.
    fn request<T>(&self, message: T, token: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        self.passed.apply(r.metadata_mut());
        if let Some(v) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
}

impl axum::extract::FromRequestParts<crate::Gateway> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        gw: &crate::Gateway,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            channel: gw.upstreams.identity.clone(),
            passed: gw.passed(parts, true),
        })
    }
}

async fn token(id: Identity, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (client_id, secret) = match client(&headers, &form) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let required = |name: &str| {
        let v = param(&form, name);
        if v.is_empty() {
            Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{name} is required"),
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let grant = param(&form, "grant_type").to_owned();
    let answer = match grant.as_str() {
        "client_credentials" => {
            if client_id.is_empty() || secret.is_empty() {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_credentials needs the client's id and secret",
                );
            }
            AuthServiceClient::new(id.channel.clone())
                .client_credentials(id.request(
                    ClientCredentialsRequest {
                        client_id,
                        client_secret: secret,
                    },
                    None,
                ))
                .await
                .map_err(|s| grant_error(&s, true))
        }
        "refresh_token" => {
            let refresh_token = match required("refresh_token") {
                Ok(v) => v,
                Err(r) => return r,
            };
            AuthServiceClient::new(id.channel.clone())
                .refresh_token(id.request(
                    RefreshTokenRequest {
                        refresh_token,
                        client_id,
                    },
                    None,
                ))
                .await
                .map_err(|s| grant_error(&s, false))
        }
        "authorization_code" => {
            let (code, redirect_uri, code_verifier) = match (
                required("code"),
                required("redirect_uri"),
                required("code_verifier"),
            ) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
            };
            if client_id.is_empty() {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_id is required",
                );
            }
            OAuthServiceClient::new(id.channel.clone())
                .exchange_authorization_code(id.request(
                    ExchangeAuthorizationCodeRequest {
                        code,
                        client_id,
                        redirect_uri,
                        code_verifier,
                    },
                    None,
                ))
                .await
                .map_err(|s| grant_error(&s, false))
        }
        TOKEN_EXCHANGE => {
            // The actor: its own token, or the client's, got with its credentials.
            let actor = match actor_token(&id, &headers, &form, (&client_id, &secret)).await {
                Ok(t) => t,
                Err(r) => return r,
            };
            let subject = param(&form, "subject_token").to_owned();
            let kind = param(&form, "subject_token_type");
            if !subject.is_empty()
                && !kind.is_empty()
                && kind != "urn:ietf:params:oauth:token-type:access_token"
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
                );
            }
            OAuthServiceClient::new(id.channel.clone())
                .exchange_token(id.request(
                    ExchangeTokenRequest {
                        requested_organization: param(&form, "resource").to_owned(),
                        subject_token: subject,
                        scope: param(&form, "scope").to_owned(),
                        audience: param(&form, "audience").to_owned(),
                    },
                    Some(&actor),
                ))
                .await
                .map_err(|s| grant_error(&s, false))
        }
        "" => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("{other} is not supported"),
            );
        }
    };
    match answer {
        Ok(t) => tokens(&t.into_inner()),
        Err(r) => r,
    }
}

/// The caller's access token for the endpoints that need one: `actor_token`, a Bearer
/// `Authorization`, or one issued now for the client's credentials.
async fn actor_token(
    id: &Identity,
    headers: &HeaderMap,
    form: &[(String, String)],
    (client_id, secret): (&str, &str),
) -> Result<String, Response> {
    let given = param(form, "actor_token");
    if !given.is_empty() {
        return Ok(given.to_owned());
    }
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Ok(t.trim().to_owned());
    }
    if client_id.is_empty() || secret.is_empty() {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authenticate the client (HTTP Basic or client_id and client_secret)",
        ));
    }
    AuthServiceClient::new(id.channel.clone())
        .client_credentials(id.request(
            ClientCredentialsRequest {
                client_id: client_id.to_owned(),
                client_secret: secret.to_owned(),
            },
            None,
        ))
        .await
        .map(|r| r.into_inner().access_token)
        .map_err(|s| grant_error(&s, true))
}

async fn revoke(id: Identity, headers: HeaderMap, body: Bytes) -> Response {
    let (token, caller) = match authenticated(&id, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    // RFC 7009: an invalid or unknown token is no error.
    match OAuthServiceClient::new(id.channel.clone())
        .revoke_token(id.request(RevokeTokenRequest { token }, Some(&caller)))
        .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(s) if matches!(s.code(), Code::InvalidArgument | Code::NotFound) => {
            StatusCode::OK.into_response()
        }
        Err(s) => grant_error(&s, true),
    }
}

async fn introspect(id: Identity, headers: HeaderMap, body: Bytes) -> Response {
    let (token, caller) = match authenticated(&id, &headers, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match OAuthServiceClient::new(id.channel.clone())
        .introspect_token(id.request(IntrospectTokenRequest { token }, Some(&caller)))
        .await
    {
        Ok(r) => {
            let i = r.into_inner();
            if !i.active {
                return no_store_json(&json!({"active": false}));
            }
            let mut body = json!({"active": true, "sub": i.sub, "client_id": i.client_id,
                "scope": i.scope, "exp": i.exp, "token_type": "Bearer",
                "organization": i.organization, "roles": i.roles});
            if !i.sid.is_empty() {
                body["sid"] = json!(i.sid);
            }
            if !i.actor.is_empty() {
                body["act"] = json!({"sub": i.actor});
            }
            no_store_json(&body)
        }
        Err(s) => grant_error(&s, true),
    }
}

/// The `token` parameter and the caller's token of an endpoint that needs an authenticated
/// client (revocation, introspection).
async fn authenticated(
    identity: &Identity,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, String), Response> {
    let form = form(body)?;
    let token = param(&form, "token").to_owned();
    if token.is_empty() {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        ));
    }
    let (id, secret) = client(headers, &form)?;
    let caller = actor_token(identity, headers, &[], (&id, &secret)).await?;
    Ok((token, caller))
}

async fn jwks(id: Identity) -> Response {
    match KeyServiceClient::new(id.channel.clone())
        .get_jwks(id.request(GetJwksRequest {}, None))
        .await
    {
        Ok(r) => {
            let keys: Vec<Value> = r
                .into_inner()
                .keys
                .into_iter()
                .map(|k| {
                    json!({"kid": k.kid, "kty": k.kty, "crv": k.crv, "x": k.x,
                                "alg": k.alg, "use": k.r#use})
                })
                .collect();
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/jwk-set+json"),
                )],
                json!({"keys": keys}).to_string(),
            )
                .into_response()
        }
        Err(s) => crate::error::response(&s),
    }
}

/// This server's origin, from the `Host` header (the metadata names its own endpoints).
pub(crate) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b))
        })
        .unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

async fn metadata(headers: HeaderMap) -> Response {
    let o = origin(&headers);
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json!({
            "issuer": "crm-identity",
            "token_endpoint": format!("{o}/oauth/token"),
            "authorization_endpoint": format!("{o}/oauth/authorize"),
            "revocation_endpoint": format!("{o}/oauth/revoke"),
            "introspection_endpoint": format!("{o}/oauth/introspect"),
            "jwks_uri": format!("{o}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials", "refresh_token", "authorization_code", TOKEN_EXCHANGE],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })
        .to_string(),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The code flow's parameters, carried through the sign-in form.
const FLOW: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
];

fn page(params: &[(String, String)], problem: &str) -> Response {
    let hidden: String = FLOW
        .iter()
        .map(|k| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape(param(params, k))
            )
        })
        .collect();
    let note = if problem.is_empty() {
        String::new()
    } else {
        format!("<p role=\"alert\">{}</p>", escape(problem))
    };
    let status = if problem.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut r = (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title></head>\
             <body><h1>Sign in to authorize {}</h1>{note}<form method=\"post\" action=\"/oauth/authorize\">{hidden}\
             <label>Email <input name=\"email\" type=\"email\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" required></label>\
             <label>Organization <input name=\"organization\" placeholder=\"organizations/...\" required></label>\
             <button>Sign in</button></form></body></html>",
            escape(param(params, "client_id"))
        )),
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'"),
    );
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

async fn authorize_page(Query(query): Query<Vec<(String, String)>>) -> Response {
    if param(&query, "response_type") != "code" {
        return page(&query, "response_type must be code");
    }
    page(&query, "")
}

/// Signs the person in, asks identity for a code bound to the client, its registered redirect
/// URI and the PKCE challenge, and redirects there with it. A redirect URI identity refuses is
/// never redirected to.
async fn authorize(id: Identity, body: Bytes) -> Response {
    let form = match form(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if param(&form, "response_type") != "code" {
        return page(&form, "response_type must be code");
    }
    let login = AuthServiceClient::new(id.channel.clone())
        .login(id.request(
            LoginRequest {
                email: param(&form, "email").to_owned(),
                password: param(&form, "password").to_owned(),
                organization: param(&form, "organization").to_owned(),
                client_id: param(&form, "client_id").to_owned(),
                ..LoginRequest::default()
            },
            None,
        ))
        .await;
    let session = match login {
        Ok(r) => r.into_inner().access_token,
        Err(s) => return page(&form, s.message()),
    };
    let code = OAuthServiceClient::new(id.channel.clone())
        .create_authorization_code(id.request(
            CreateAuthorizationCodeRequest {
                client_id: param(&form, "client_id").to_owned(),
                redirect_uri: param(&form, "redirect_uri").to_owned(),
                code_challenge: param(&form, "code_challenge").to_owned(),
                code_challenge_method: param(&form, "code_challenge_method").to_owned(),
            },
            Some(&session),
        ))
        .await;
    let code = match code {
        Ok(r) => r.into_inner().code,
        Err(s) => return page(&form, s.message()),
    };
    let Ok(mut target) = url::Url::parse(param(&form, "redirect_uri")) else {
        return page(&form, "redirect_uri is not a URL");
    };
    target.query_pairs_mut().append_pair("code", &code);
    let state = param(&form, "state");
    if !state.is_empty() {
        target.query_pairs_mut().append_pair("state", state);
    }
    let Ok(location) = HeaderValue::from_str(target.as_str()) else {
        return page(&form, "redirect_uri is not a valid header value");
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}
