//! The API described: an OpenAPI 3.1 document generated from the handlers' `#[utoipa::path]`
//! annotations and the types they take and answer (`utoipa`), served at
//! `/api/v1/openapi.json` and committed as `docs/openapi.json` (a test fails when they differ:
//! `UPDATE_OPENAPI=1 cargo test -p provision --lib openapi` writes it anew).
//!
//! Every operation of `/api/v1` is in it; a new handler must be added to `paths` below (the
//! schemathesis test fuzzes what is listed).

use axum::Json;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::ErrorBody;
use super::{desired, v1};

#[derive(OpenApi)]
#[openapi(
    info(title = "provision", description = "The provisioning policy host's API: orders, reviews, manual provisioning, jobs, plugins, notifications, desired state in and audit history out."),
    paths(
        v1::me,
        v1::orders,
        v1::order,
        v1::retry,
        v1::reviews,
        v1::review,
        v1::manual,
        v1::confirm,
        v1::report_error,
        v1::jobs,
        v1::run_job,
        v1::job,
        v1::resume,
        v1::cancel,
        v1::plugins,
        v1::enable,
        v1::reload,
        v1::notifications,
        desired::search,
        desired::identity,
        desired::put_identity,
        desired::remove_identity,
        desired::assignments,
        desired::assignment,
        desired::put_assignment,
        desired::withdraw_assignment,
        desired::history,
        desired::bulk,
        super::export::history,
    ),
    components(schemas(ErrorBody, crate::store::AuditRow)),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Every operation takes `Authorization: Bearer TOKEN`.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API token (`provision tokens create --user LOGIN`)"))
                    .build(),
            ),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    // The package's version, not the build's: the committed file must not change per build.
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document
}

/// `GET /api/v1/openapi.json` (no token: the description is public).
pub(super) async fn serve() -> impl IntoResponse {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let generated = super::document().to_pretty_json().expect("the document serialises") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the API's document: run `UPDATE_OPENAPI=1 cargo test -p provision --lib openapi` and commit it"
        );
        let parsed: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(parsed["openapi"], "3.1.0");
    }
}
