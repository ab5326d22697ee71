//! The API's one error shape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::auth::Unauthenticated;
use crate::stats::Stats;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a sentence for people.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case (`invalid_query`, `trace_not_found`, ...).
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The HTTP answer to a request [`crate::auth::Guard`] refused: 401 with
/// `WWW-Authenticate: Bearer` and the API's error body (the OTLP/HTTP
/// receiver answers the same).
pub fn unauthenticated(e: &Unauthenticated) -> Response {
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthenticated",
        message: e.to_string(),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no such endpoint: {}", uri.path()))
}

/// Answers 413 to a request whose declared body is over [`super::MAX_BODY_BYTES`].
pub async fn limit_body(State(stats): State<Arc<Stats>>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
        Stats::add(&stats.api_too_large, 1);
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!(
                "request bodies are limited to {} bytes",
                super::MAX_BODY_BYTES
            ),
        }
        .into_response();
    }
    next.run(request).await
}

/// Answers 503 (`request_timeout`, counted) to a request not answered within
/// the configured time, so a slow query cannot hold a connection for ever.
pub async fn time_limit(
    State((limit, stats)): State<(Duration, Arc<Stats>)>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            Stats::add(&stats.api_request_timeouts, 1);
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "request_timeout",
                message: format!("no answer within {limit:?} (request_timeout)"),
            }
            .into_response()
        }
    }
}
