//! Who may call an endpoint, as extractors: a handler names what it needs in its signature
//! (`Allowed<Operate>`, `Readable`) and the token is checked before the handler runs, before
//! its body is read. Writes need a token with the scope (when tokens are set); the dashboard's
//! cookie counts only with its header `X-Lanes-Dashboard` (no cross-site form can send one).
//! Reads need the `read` scope when `LANES_PROTECT_READS` is on.

use super::{check, may_read, tokens::Scope, ApiError, ApiState, Caller};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use std::{
    future::{ready, Ready},
    marker::PhantomData,
};

/// A scope a handler needs.
pub trait Needs {
    const SCOPE: Scope;
}

/// Submitting jobs.
pub struct Submit;
/// Steering jobs, limits and schedules, draining workers.
pub struct Operate;
/// Reporting as an external executor.
pub struct Execute;

impl Needs for Submit {
    const SCOPE: Scope = Scope::Submit;
}
impl Needs for Operate {
    const SCOPE: Scope = Scope::Operate;
}
impl Needs for Execute {
    const SCOPE: Scope = Scope::Execute;
}

/// The caller of a write, allowed the scope `S`.
pub struct Allowed<S>(pub Caller, pub PhantomData<S>);

fn state(req: &HttpRequest) -> &ApiState {
    req.app_data::<web::Data<ApiState>>()
        .expect("the API's state is registered")
}

impl<S: Needs> FromRequest for Allowed<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let from_page = req.headers().contains_key("x-lanes-dashboard");
        ready(check(state(req), req, S::SCOPE, from_page).map(|c| Allowed(c, PhantomData)))
    }
}

/// A read, allowed (anyone may read unless reads are protected).
pub struct Readable;

impl FromRequest for Readable {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(may_read(state(req), req).map(|()| Readable))
    }
}
