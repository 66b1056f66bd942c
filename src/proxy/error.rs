//! Every way a proxied request can fail, and the one exhaustive mapping from a failure to an HTTP
//! status, an OpenAI error `type`/`code` and a metric label.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use crate::config::UnguardedRoute;
use crate::hooks::GuardError;
use crate::metrics::UpstreamErrorKind;

/// A boxed error from a body or a connection.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure on the request path.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request body is larger than `[proxy] max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request body could not be read from the client.
    #[error("could not read the request body")]
    BodyRead(#[source] BoxError),
    /// The request body is not JSON.
    #[error("request body is not valid JSON")]
    InvalidJson(#[source] serde_json::Error),
    /// The chat request has no `messages` array.
    #[error("request body must be a JSON object with a `messages` array")]
    MissingMessages,
    /// A conversation route careguard does not guard yet, not allowed by config.
    #[error("careguard does not guard /v1/{} yet; to let it through unguarded set `[proxy] allow_unguarded_routes = [\"{}\"]`", route.as_str(), route.as_str())]
    UnguardedRoute {
        /// Which route.
        route: UnguardedRoute,
    },
    /// Not a `/v1/*` path.
    #[error("no such route; careguard serves /v1/*")]
    NotFound,
    /// The upstream could not be reached.
    #[error("upstream unreachable")]
    UpstreamUnreachable(#[source] BoxError),
    /// Connecting to the upstream took longer than `[upstream] connect_timeout_ms`.
    #[error("timed out connecting to the upstream")]
    ConnectTimeout(#[source] BoxError),
    /// No response from the upstream within `[upstream] first_byte_timeout_ms`.
    #[error("upstream did not respond within the first-byte timeout")]
    FirstByteTimeout,
    /// The upstream went silent longer than `[upstream] chunk_timeout_ms`.
    #[error("upstream stalled longer than the chunk timeout")]
    ChunkTimeout,
    /// The upstream connection broke or spoke bad HTTP.
    #[error("upstream connection failed")]
    UpstreamProtocol(#[source] BoxError),
    /// The upstream's SSE stream could not be parsed.
    #[error("upstream sent a malformed event stream: {detail}")]
    MalformedStream {
        /// What was wrong.
        detail: &'static str,
    },
    /// The upstream's JSON reply could not be parsed.
    #[error("upstream sent a malformed JSON reply")]
    MalformedReply(#[source] serde_json::Error),
    /// The upstream stream ended without `data: [DONE]`.
    #[error("upstream stream ended before [DONE]")]
    TruncatedStream,
    /// The guard asked for more re-asks than `[proxy] max_reasks` allows.
    #[error("the guard asked for more re-asks than allowed")]
    ReaskLimit,
    /// The guard answered with an error.
    #[error("{}", .0.message)]
    Guard(GuardError),
    /// The upstream request could not be built (bad path or header).
    #[error("could not build the upstream request")]
    BuildRequest(#[source] http::Error),
}

/// How a [`ProxyError`] is presented: status, OpenAI `type` and `code`, upstream metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    /// HTTP status (non-streaming).
    pub status: StatusCode,
    /// `error.type`.
    pub kind: String,
    /// `error.code`.
    pub code: Option<String>,
    /// Counted in `careguard_upstream_errors_total{kind}` when set.
    pub upstream: Option<UpstreamErrorKind>,
}

impl ProxyError {
    /// The single place deciding status, type, code and metric label for every failure.
    pub fn presentation(&self) -> Presentation {
        use UpstreamErrorKind as K;
        let (status, kind, code, upstream): (StatusCode, &str, &str, Option<K>) = match self {
            ProxyError::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                None,
            ),
            ProxyError::BodyRead(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "body_read_error",
                None,
            ),
            ProxyError::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                None,
            ),
            ProxyError::MissingMessages => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "missing_messages",
                None,
            ),
            // 403, not 501: a policy refusal the operator can lift, and SDKs do not retry 403.
            ProxyError::UnguardedRoute { .. } => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "unguarded_route",
                None,
            ),
            ProxyError::NotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                None,
            ),
            ProxyError::UpstreamUnreachable(_) => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_unreachable",
                Some(K::Unreachable),
            ),
            ProxyError::ConnectTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "upstream_connect_timeout",
                Some(K::ConnectTimeout),
            ),
            ProxyError::FirstByteTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "upstream_first_byte_timeout",
                Some(K::FirstByteTimeout),
            ),
            ProxyError::ChunkTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "upstream_chunk_timeout",
                Some(K::ChunkTimeout),
            ),
            ProxyError::UpstreamProtocol(_) => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_protocol_error",
                Some(K::Protocol),
            ),
            ProxyError::MalformedStream { .. } => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_malformed_stream",
                Some(K::Malformed),
            ),
            ProxyError::MalformedReply(_) => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_malformed_reply",
                Some(K::Malformed),
            ),
            ProxyError::TruncatedStream => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_truncated_stream",
                Some(K::Truncated),
            ),
            ProxyError::ReaskLimit => (
                StatusCode::BAD_GATEWAY,
                "api_error",
                "guard_reask_limit",
                None,
            ),
            ProxyError::Guard(g) => {
                return Presentation {
                    status: g.status,
                    kind: g.kind.clone(),
                    code: g.code.clone(),
                    upstream: None,
                }
            }
            ProxyError::BuildRequest(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "upstream_request_build",
                None,
            ),
        };
        Presentation {
            status,
            kind: kind.to_owned(),
            code: Some(code.to_owned()),
            upstream,
        }
    }

    /// The OpenAI-shaped JSON body `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Bytes {
        let p = self.presentation();
        let v = json!({"error": {
            "message": self.to_string(),
            "type": p.kind,
            "param": null,
            "code": p.code,
        }});
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// The same body as an SSE event, for failures after a stream started.
    pub fn sse_event(&self) -> Bytes {
        let body = self.body();
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    /// The error for an upstream failure kind seen mid-stream.
    pub fn from_stream_failure(kind: UpstreamErrorKind) -> Self {
        match kind {
            UpstreamErrorKind::ChunkTimeout | UpstreamErrorKind::FirstByteTimeout => {
                ProxyError::ChunkTimeout
            }
            UpstreamErrorKind::Malformed => ProxyError::MalformedStream {
                detail: "an event is not valid JSON",
            },
            UpstreamErrorKind::Truncated => ProxyError::TruncatedStream,
            UpstreamErrorKind::Unreachable
            | UpstreamErrorKind::ConnectTimeout
            | UpstreamErrorKind::Protocol
            | UpstreamErrorKind::Status => {
                ProxyError::UpstreamProtocol("upstream stream failed".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped() {
        let e = ProxyError::BodyTooLarge { limit: 10 };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "request_too_large");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("10 bytes"));
        assert!(e.sse_event().starts_with(b"data: {\"error\""));
    }
}
