//! Who is calling: a bearer token (API) or a session cookie (pages), resolved to a user with
//! their permissions.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;

use super::{ApiError, AppState};
use crate::permissions::{Action, Capability, authorize, authorize_capability};
use crate::store::User;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "provision_session";

/// The user behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, with their permissions.
    pub user: User,
    /// The session's CSRF token (pages only).
    pub csrf: Option<String>,
}

impl Caller {
    /// The caller as the application layer knows them.
    pub fn principal(&self) -> crate::app::Principal {
        crate::app::Principal::from_user(self.user.clone())
    }

    /// Whether the user holds a capability.
    pub fn may(&self, capability: Capability) -> bool {
        authorize_capability(&self.user.login, &self.user.permissions, capability).is_ok()
    }

    /// The capability, or 403 naming its path.
    pub fn require(&self, capability: Capability) -> Result<(), ApiError> {
        Ok(authorize_capability(&self.user.login, &self.user.permissions, capability)?)
    }

    /// Whether the user may perform `action` on orders of `entity_type`.
    pub fn may_act(&self, action: Action, entity_type: &str) -> bool {
        authorize(&self.user.login, &self.user.permissions, action, entity_type).is_ok()
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer`, `BEARER` and `Bearer` alike.
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim_start();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// API callers: `Authorization: Bearer TOKEN`.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts).map(str::to_string) else {
            return Err(ApiError::unauthorized(
                "an API token is required: Authorization: Bearer TOKEN (create one with `provision tokens create --user LOGIN`)",
            ));
        };
        app.read(move |store| {
            let login = store
                .token_user(&token)?
                .ok_or_else(|| ApiError::unauthorized("the API token is not valid (unknown, revoked or expired)"))?;
            Ok(Caller { user: store.user(&login)?, csrf: None })
        })
        .await
    }
}

/// Page callers: a session cookie; without one, the sign-in page.
pub struct PageCaller(pub Caller);

/// Where an unauthenticated page request goes.
pub struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(id) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
            return Err(SignIn.into_response());
        };
        let found = app
            .read(move |store| {
                let Some(session) = store.session(&id)? else { return Ok(None) };
                Ok(Some(Caller { user: store.user(&session.login)?, csrf: Some(session.csrf) }))
            })
            .await;
        match found {
            Ok(Some(caller)) => Ok(PageCaller(caller)),
            Ok(None) => Err(SignIn.into_response()),
            Err(error) => Err((StatusCode::INTERNAL_SERVER_ERROR, error.message).into_response()),
        }
    }
}
