//! The server side of the endpoint declarations in [`hushlist_core::api::endpoints`]: the
//! route of each ([`EndpointRoutes::endpoint`]), and extractors that take a request apart
//! as its declaration says, with the same typed errors everywhere: [`Params`] (the caller's
//! token and the path), [`Call`] (and the JSON body or query) and [`Signed`] (a request
//! signed by someone on the list's roster, verified for the endpoint's purpose).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::routing::{get, post};
use hushlist_core::api::endpoints::{
    Caller, Endpoint, Method, OnList, PathError, PathParams, SignedEndpoint, Signer,
};
use hushlist_core::request::{SignedRequest, VerifiedRequest};
use hushlist_core::roster::{Role, Roster};
use hushlist_core::{Address, Cert, Fingerprint};

use crate::rosters::RosterHost;
use crate::{ApiError, bearer, json};

/// Routes declared endpoints.
pub trait EndpointRoutes<S> {
    /// Routes `E`'s method and path to `handler`.
    fn endpoint<E: Endpoint, H: Handler<T, S>, T: 'static>(self, handler: H) -> Self;
}

impl<S: Clone + Send + Sync + 'static> EndpointRoutes<S> for Router<S> {
    fn endpoint<E: Endpoint, H: Handler<T, S>, T: 'static>(self, handler: H) -> Self {
        let method = match E::METHOD {
            Method::Get => get(handler),
            Method::Post => post(handler),
        };
        self.route(E::PATH, method)
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::BadList(_) => ApiError::bad_request("bad_list", e.to_string()),
            PathError::BadKeyId(_) => ApiError::bad_request("bad_key_id", e.to_string()),
            PathError::Missing(_) => ApiError::internal(e.to_string()),
        }
    }
}

/// A call's path parameters, once the caller's token (if the endpoint takes one) checked.
pub struct Params<E: Endpoint>(pub E::Params);

impl<S: RosterHost, E: Endpoint<Params: Send>> FromRequestParts<Arc<S>> for Params<E> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<S>) -> Result<Self, ApiError> {
        if let Caller::Token(token) = E::CALLER {
            state.check_token(token, bearer(&parts.headers))?;
        }
        let Path(values) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::new(rejection.status(), "bad_path", rejection.body_text())
            })?;
        Ok(Params(E::Params::parse(&values)?))
    }
}

/// A call's path parameters and its request: the JSON body of a POST, the query of a GET.
pub struct Call<E: Endpoint> {
    pub params: E::Params,
    pub request: E::Request,
}

impl<S: RosterHost, E: Endpoint<Params: Send, Request: Send>> FromRequest<Arc<S>> for Call<E> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<S>) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let Params(params) = Params::<E>::from_request_parts(&mut parts, state).await?;
        let request = match E::METHOD {
            Method::Get => {
                let Query(query) = Query::<E::Request>::from_request_parts(&mut parts, state)
                    .await
                    .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
                query
            }
            Method::Post => {
                json(Bytes::from_request(Request::from_parts(parts, body), state).await)?
            }
        };
        Ok(Call { params, request })
    }
}

/// A request to a signed endpoint, verified: signed for this endpoint and list by someone
/// the endpoint's [`Signer`] admits, within the clock skew, not replayed, within the
/// signer's rate limit. The signed body is decoded by [`Signed::body`], when the handler
/// needs it.
pub struct Signed<E: SignedEndpoint> {
    pub params: E::Params,
    /// The roster the request was judged against.
    pub roster: Arc<Roster>,
    /// The signer's certificate.
    pub cert: Cert,
    verified: VerifiedRequest,
    endpoint: PhantomData<fn() -> E>,
}

impl<E: SignedEndpoint> Signed<E> {
    pub fn list(&self) -> &Address {
        self.params.list()
    }

    pub fn signer(&self) -> &Fingerprint {
        &self.verified.signer
    }

    /// The body the signature covers.
    pub fn body(&self) -> Result<E::Request, ApiError> {
        serde_json::from_slice(&self.verified.body).map_err(ApiError::malformed)
    }
}

impl<S: RosterHost, E: SignedEndpoint<Params: Send>> FromRequest<Arc<S>> for Signed<E> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<S>) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let Params(params) = Params::<E>::from_request_parts(&mut parts, state).await?;
        let request: SignedRequest =
            json(Bytes::from_request(Request::from_parts(parts, body), state).await)?;
        let list = params.list();
        let roster = state.rosters().get(list).await?;
        let (verified, cert) = state
            .verifier()
            .verify(state.store(), &roster, &request, &E::purpose(&params))
            .await?;
        let member = roster.member_by_fingerprint(&verified.signer);
        match E::SIGNER {
            Signer::EverOnRoster => {}
            Signer::Member if member.is_none() => {
                return Err(ApiError::forbidden(
                    "not_member",
                    format!("{} is no longer a member of {list}", verified.signer),
                ));
            }
            Signer::Member => {}
            Signer::Owner if !member.is_some_and(|m| m.role == Role::Owner) => {
                return Err(ApiError::forbidden(
                    "not_owner",
                    format!("only an owner of {} may do this", roster.list()),
                ));
            }
            Signer::Owner => {}
        }
        Ok(Signed {
            params,
            roster,
            cert,
            verified,
            endpoint: PhantomData,
        })
    }
}
