//! The HTTP interface: routes, tokens, Range answers, image uploads, one
//! log line per request.

use crate::digest::Digest;
use crate::jobs::{Answer, Pair};
use crate::store::{DeltaRef, Store};
use crate::Service;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, ObjectStoreExt, WriteMultipart};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Seconds a client is told to wait before asking again for a delta
/// being made, or when the queue is full; 1 s for a job younger than
/// [`QUICK_JOB`] (a small delta is ready soon).
const RETRY_AFTER: u64 = 5;
const QUICK_JOB: f64 = 10.0;

/// Who may do what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Fetch deltas and full payloads.
    Device,
    /// Also push images.
    Admin,
}

pub(crate) fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/deltas/{from}/{to}", get(delta))
        .route("/v1/full/{to}", get(full))
        .route("/v1/images/{digest}", get(image_info).put(push_image))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&service),
            log_and_guard,
        ))
        .with_state(service)
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": message.into()})),
    )
        .into_response()
}

/// A request refused: its status and message, answered as [`error`].
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = error(self.0, self.1);
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Refuses requests with a body where none belongs, counts and logs each
/// request in one JSON line on stderr.
async fn log_and_guard(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    service.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let response = if has_body && method != Method::PUT {
        error(StatusCode::BAD_REQUEST, format!("{method} takes no body"))
    } else {
        next.run(request).await
    };
    let status = response.status();
    let class = match status.as_u16() {
        200..=399 => &service.metrics.responses_2xx,
        400..=499 => &service.metrics.responses_4xx,
        _ => &service.metrics.responses_5xx,
    };
    class.fetch_add(1, Ordering::Relaxed);
    if service.log_requests {
        eprintln!(
            "{}",
            serde_json::json!({
                "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "method": method.as_str(),
                "path": path,
                "status": status.as_u16(),
                "ms": started.elapsed().as_secs_f64() * 1000.0,
                "length": response.headers().get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()),
            })
        );
    }
    response
}

/// The role of the request's bearer token, or the answer refusing it.
fn authorize(service: &Service, headers: &HeaderMap, needed: Role) -> Result<(), Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| blake3::hash(t.trim().as_bytes()));
    let role = token.and_then(|t| {
        if service.admin_tokens.contains(&t) {
            Some(Role::Admin)
        } else if service.device_tokens.contains(&t) {
            Some(Role::Device)
        } else {
            None
        }
    });
    let open = needed == Role::Device && service.device_tokens.is_empty();
    match (role, needed) {
        (Some(Role::Admin), _) | (Some(Role::Device), Role::Device) => Ok(()),
        _ if open => Ok(()),
        (Some(Role::Device), Role::Admin) => Err(Refusal(
            StatusCode::FORBIDDEN,
            "this token may fetch deltas, not push images".into(),
        )),
        (None, _) if token.is_some() => {
            Err(Refusal(StatusCode::UNAUTHORIZED, "unknown token".into()))
        }
        (None, _) => Err(Refusal(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer token is required".into(),
        )),
    }
}

fn parse_digest(what: &str, text: &str) -> Result<Digest, Refusal> {
    Digest::parse(text).map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such route (see /v1/deltas/FROM/TO)",
    )
}

async fn delta(
    State(service): State<Arc<Service>>,
    Path((from, to)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let pair = match (parse_digest("source", &from), parse_digest("target", &to)) {
        (Ok(from), Ok(to)) => Pair {
            from: Some(from),
            to,
        },
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    answer(&service, pair, &headers).await
}

async fn full(
    State(service): State<Arc<Service>>,
    Path(to): Path<String>,
    headers: HeaderMap,
) -> Response {
    match parse_digest("target", &to) {
        Ok(to) => answer(&service, Pair { from: None, to }, &headers).await,
        Err(e) => e.into_response(),
    }
}

/// The delta of `pair`: 200/206 from the store, else 202 while it is
/// made, 404 for an unknown image, 503 when the queue is full.
async fn answer(service: &Arc<Service>, pair: Pair, headers: &HeaderMap) -> Response {
    if let Err(refused) = authorize(service, headers, Role::Device) {
        return refused.into_response();
    }
    let key = service.key(&pair);
    match service.store.delta_ref(&key).await {
        Ok(Some(r)) => {
            service.metrics.hits.fetch_add(1, Ordering::Relaxed);
            service.touch(&key);
            return send_blob(service, &r, headers).await;
        }
        Ok(None) => {}
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
    let images = [("source", pair.from), ("target", Some(pair.to))];
    for (what, image) in images {
        let Some(image) = image else { continue };
        match service.store.image_len(&image).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("{what} image {image} is not in the store"),
                )
            }
            Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
    service.metrics.misses.fetch_add(1, Ordering::Relaxed);
    let answer = service.jobs.request(&key, pair);
    let after = match &answer {
        Answer::Pending(status) if status.seconds < QUICK_JOB => 1,
        _ => RETRY_AFTER,
    };
    let retry = [(header::RETRY_AFTER, after.to_string())];
    match answer {
        Answer::Pending(status) if status.state == "failed" => {
            let message = status.error.unwrap_or_default();
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                retry,
                axum::Json(serde_json::json!({"error": message, "status": status.state})),
            )
                .into_response()
        }
        Answer::Pending(status) => {
            (StatusCode::ACCEPTED, retry, axum::Json(status)).into_response()
        }
        Answer::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            retry,
            axum::Json(serde_json::json!({"error": "the generation queue is full"})),
        )
            .into_response(),
    }
}

/// The single byte range a `Range` header asks of `len` bytes: None for
/// the whole (no header, or one this server does not split: several
/// ranges), Err for a range past the end.
fn asked_range(value: &str, len: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(suffix)) => len.saturating_sub(suffix)..len,
        (false, Some(a), None) if last.trim().is_empty() => a..len,
        (false, Some(a), Some(b)) if b >= a => a..b.saturating_add(1).min(len),
        _ => return Ok(None),
    };
    if range.start >= len || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

/// Sends the blob of `r`, whole or the range asked (honouring If-Range
/// against its strong ETag), streamed: a slow client holds the
/// transfer's few buffers, never the delta.
async fn send_blob(service: &Arc<Service>, r: &DeltaRef, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", r.digest);
    let len = r.len;
    let if_range_matches = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let asked = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if if_range_matches => asked_range(value, len),
        _ => Ok(None),
    };
    let range = match asked {
        Ok(range) => range,
        Err(()) => {
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "range past the end");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let span = range.clone().unwrap_or(0..len);
    let options = GetOptions {
        range: (len > 0).then(|| GetRange::Bounded(span.clone())),
        ..GetOptions::default()
    };
    let got = match service
        .store
        .inner()
        .get_opts(&Store::blob_path(&r.digest), options)
        .await
    {
        Ok(got) => got,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("blob {}: {e}", r.digest)),
    };
    let served = Arc::clone(service);
    let body = blob_stream(got, span.end - span.start).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            served
                .metrics
                .bytes_served
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::ETAG, etag);
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::CONTENT_TYPE, "application/octet-stream".into());
    set(header::CONTENT_LENGTH, (span.end - span.start).to_string());
    set(
        header::CACHE_CONTROL,
        "public, max-age=31536000, immutable".into(),
    );
    if range.is_some() {
        set(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{len}", span.start, span.end.saturating_sub(1)),
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

/// Bytes a blob in a folder store is read by at a time (object_store's own
/// stream of a file reads 8 KiB at a time, each on a blocking thread:
/// 310 MB/s in all on loopback here).
const FILE_CHUNK: usize = 128 << 10;

/// The bytes of `got`: a folder store's file read [`FILE_CHUNK`] at a time,
/// else the store's own stream.
fn blob_stream(
    got: object_store::GetResult,
    len: u64,
) -> futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    match got.payload {
        object_store::GetResultPayload::File(file, _) => {
            let start = got.range.start;
            let reading = async move {
                let mut file = tokio::fs::File::from_std(file);
                file.seek(std::io::SeekFrom::Start(start)).await?;
                Ok::<_, std::io::Error>(tokio_util::io::ReaderStream::with_capacity(
                    file.take(len),
                    FILE_CHUNK,
                ))
            };
            futures::stream::once(reading).try_flatten().boxed()
        }
        object_store::GetResultPayload::Stream(stream) => stream
            .map(|chunk| chunk.map_err(std::io::Error::other))
            .boxed(),
    }
}

/// The image a `/v1/images/` request names, once its token allows `role`.
fn image_request(
    service: &Service,
    headers: &HeaderMap,
    role: Role,
    digest: &str,
) -> Result<Digest, Refusal> {
    authorize(service, headers, role)?;
    parse_digest("image", digest)
}

async fn image_info(
    State(service): State<Arc<Service>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let digest = match image_request(&service, &headers, Role::Device, &digest) {
        Ok(d) => d,
        Err(refused) => return refused.into_response(),
    };
    match service.store.image_len(&digest).await {
        Ok(Some(len)) => axum::Json(serde_json::json!({"digest": digest.to_string(), "len": len}))
            .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("image {digest} is not in the store"),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// `PUT /v1/images/HEX`: streams the body into the store, hashing it as
/// it arrives; the image appears only when its digest is HEX.
async fn push_image(
    State(service): State<Arc<Service>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let digest = match image_request(&service, &headers, Role::Admin, &digest) {
        Ok(d) => d,
        Err(refused) => return refused.into_response(),
    };
    match service.store.image_len(&digest).await {
        Ok(Some(len)) => {
            return axum::Json(
                serde_json::json!({"digest": digest.to_string(), "len": len, "stored": "already"}),
            )
            .into_response()
        }
        Ok(None) => {}
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
    let limit = service.max_image_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("image of {len} bytes, at most {limit} accepted (--max-image-bytes)"),
            );
        }
    }
    let path = Store::image_path(&digest);
    let upload = match service.store.inner().put_multipart(&path).await {
        Ok(upload) => upload,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("upload {path}: {e}")),
    };
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    let failure = loop {
        let chunk = match stream.next().await {
            None => break None,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => break Some(error(StatusCode::BAD_REQUEST, format!("body: {e}"))),
        };
        received += chunk.len() as u64;
        if received > limit {
            break Some(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("image over {limit} bytes (--max-image-bytes)"),
            ));
        }
        hasher.update(&chunk);
        if let Err(e) = writer.wait_for_capacity(2).await {
            break Some(error(
                StatusCode::BAD_GATEWAY,
                format!("upload {path}: {e}"),
            ));
        }
        writer.write(&chunk);
    };
    let got = Digest::of(hasher.finalize());
    let failure = failure.or_else(|| {
        (got != digest).then(|| {
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the body's BLAKE3 is {got}, not {digest} as the URL names: not stored"),
            )
        })
    });
    if let Some(failure) = failure {
        writer.abort().await.ok();
        return failure;
    }
    if let Err(e) = writer.finish().await {
        return error(StatusCode::BAD_GATEWAY, format!("upload {path}: {e}"));
    }
    service
        .metrics
        .images_pushed
        .fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        axum::Json(
            serde_json::json!({"digest": digest.to_string(), "len": received, "stored": "now"}),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::asked_range;

    #[test]
    fn ranges_are_single_and_bounded() {
        assert_eq!(asked_range("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(asked_range("bytes=90-", 100), Ok(Some(90..100)));
        assert_eq!(asked_range("bytes=90-200", 100), Ok(Some(90..100)));
        assert_eq!(asked_range("bytes=-10", 100), Ok(Some(90..100)));
        assert_eq!(asked_range("bytes=100-", 100), Err(()));
        assert_eq!(asked_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(asked_range("items=0-1", 100), Ok(None));
        assert_eq!(asked_range("bytes=5-1", 100), Ok(None));
        assert_eq!(asked_range("bytes=x-1", 100), Ok(None));
        assert_eq!(
            asked_range(&format!("bytes=0-{}", u64::MAX), 100),
            Ok(Some(0..100))
        );
    }
}
