//! Routing and forwarding to the upstream: the request path of every exchange.
//!
//! [`handle`] runs the phases in order around one [`Exchange`] (authorize → read the body →
//! choose a target, copy to the shadow → forward → tap). Every phase that fails answers with
//! a gateway error through [`Exchange::fail`], which records it when the request was
//! sampled; a request that reaches the tap is recorded by the tap, exactly once, however its
//! body ends. Nothing here awaits the capture pipeline except in `sync`/`fsync` durability,
//! where the log's acknowledgement is the end of the response.

use crate::admin::{CaptureState, CaptureStateStore, TrafficState, TrafficStateStore};
use crate::auth::{Authenticator, Role};
use crate::error::{GatewayError, UpstreamFailure};
use crate::record::{client_request_id_from_body, encode_body};
use crate::tap::{ExchangeTimer, OversizeAllowance, InFlight, TapBody};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_rustls::HttpsConnector;
use hyper_util::rt::TokioExecutor;
use inferlog_capture::{CaptureHandle, SubmitOutcome};
use inferlog_core::record::{BodyEncoding, MAX_REQUEST_SIZE_EXCEEDED};
use inferlog_core::config::{ShadowSettings, TargetSettings};
use inferlog_core::{EndpointSettings, Record};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const CLIENT_REQUEST_ID_HEADER: &str = "x-client-request-id";

/// Headers meaningful only for one connection (RFC 9110 §7.6.1); never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// One configured endpoint with its live capture state.
pub struct Endpoint {
    pub settings: EndpointSettings,
    pub(crate) state: RwLock<CaptureState>,
    pub(crate) traffic: RwLock<TrafficState>,
    sampler: Option<Mutex<SmallRng>>,
    capture: Option<CaptureHandle>,
    /// Metric handles, looked up once instead of per request.
    requests_by_status: RwLock<HashMap<u16, metrics::Counter>>,
    upstream_duration: metrics::Histogram,
    exchange_duration: metrics::Histogram,
    time_to_first_token: metrics::Histogram,
}

impl Endpoint {
    pub fn new(settings: EndpointSettings, state: CaptureState, traffic: TrafficState, capture: Option<CaptureHandle>) -> Self {
        let sampler = settings
            .capture
            .sampling_seed
            .map(|seed| Mutex::new(SmallRng::seed_from_u64(seed)));
        let upstream_duration =
            metrics::histogram!("inferlog_upstream_duration_seconds", "endpoint" => settings.name.clone());
        let exchange_duration = metrics::histogram!("inferlog_exchange_duration_seconds", "endpoint" => settings.name.clone());
        let time_to_first_token =
            metrics::histogram!("inferlog_llm_time_to_first_token_seconds", "endpoint" => settings.name.clone());
        Endpoint {
            settings,
            state: RwLock::new(state),
            traffic: RwLock::new(traffic),
            sampler,
            capture,
            requests_by_status: RwLock::new(HashMap::new()),
            upstream_duration,
            exchange_duration,
            time_to_first_token,
        }
    }

    fn count_request(&self, status: u16) {
        if let Some(counter) = self.requests_by_status.read().expect("metrics lock").get(&status) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!("inferlog_requests_total", "endpoint" => self.settings.name.clone(), "status" => status.to_string());
        counter.increment(1);
        self.requests_by_status.write().expect("metrics lock").insert(status, counter);
    }


    /// The target of a request, by weight: the same for every request carrying the same value
    /// of the sticky header (as long as the weights stay), random otherwise.
    fn choose_target(&self, headers: &HeaderMap) -> &TargetSettings {
        let targets = &self.settings.targets;
        if targets.len() == 1 {
            return &targets[0];
        }
        let weights: Vec<u64> = {
            let traffic = self.traffic.read().expect("traffic lock");
            targets.iter().map(|t| u64::from(traffic.weights.get(&t.name).copied().unwrap_or(0))).collect()
        };
        let total: u64 = weights.iter().sum();
        if total == 0 {
            return &targets[0];
        }
        // A point in [0, 1): fixed per sticky value, so a weight change moves only the callers
        // whose point crosses a boundary.
        let sticky = self.settings.sticky_header.as_deref().and_then(|h| headers.get(h));
        let point = match sticky {
            Some(value) => fnv1a(value.as_bytes()) as f64 / 2f64.powi(64),
            None => rand::rng().random::<f64>(),
        };
        let mut cumulative = 0.0;
        for (target, weight) in targets.iter().zip(&weights) {
            cumulative += *weight as f64 / total as f64;
            if point < cumulative {
                return target;
            }
        }
        &targets[targets.len() - 1]
    }

    /// Whether this request is copied to the shadow.
    fn shadow_draw(&self) -> Option<&ShadowSettings> {
        let shadow = self.settings.shadow.as_ref()?;
        let fraction = self.traffic.read().expect("traffic lock").shadow_fraction;
        (fraction >= 1.0 || (fraction > 0.0 && rand::rng().random::<f64>() < fraction)).then_some(shadow)
    }

    /// Decides once per request whether it is captured, and at which fraction.
    fn sample(&self) -> Option<f64> {
        let state = *self.state.read().expect("capture state lock");
        if !state.enabled || self.capture.is_none() || state.sampling_fraction <= 0.0 {
            return None;
        }
        if state.sampling_fraction >= 1.0 {
            return Some(1.0);
        }
        let draw: f64 = match &self.sampler {
            Some(rng) => rng.lock().expect("sampler lock").random(),
            None => rand::rng().random(),
        };
        (draw < state.sampling_fraction).then_some(state.sampling_fraction)
    }
}

pub struct GatewayOptions {
    pub upstream_timeout: Duration,
    /// A request body must have arrived by then (a slow sender cannot hold a request open).
    pub request_body_timeout: Duration,
    pub max_request_bytes: usize,
    pub metadata_headers: Vec<String>,
    /// Where administrative actions are reported, for the `_audit` table.
    pub audit: Option<AuditSender>,
    /// Trust for https upstreams and shadows ([`crate::tls::client_config`]).
    pub upstream_tls: rustls::ClientConfig,
    /// Memory the bodies kept for offloading may take over all exchanges in flight.
    pub offload_memory_bytes: usize,
    /// Memory the request bodies being read or forwarded may take at once (503 beyond).
    pub max_request_bytes_in_flight: usize,
}

pub type AuditSender = tokio::sync::mpsc::Sender<inferlog_core::record::AuditEvent>;

/// Most of a request body an audit event keeps.
const AUDIT_DETAIL_BYTES: usize = 4096;

/// Reports an administrative action by `caller`, what it asked (the request body, cut) and how
/// it went. Never waits: a full channel drops the event, logged.
pub fn audit<T>(
    sender: Option<&AuditSender>,
    caller: &crate::auth::Caller,
    action: &str,
    endpoint: Option<&str>,
    body: &[u8],
    result: &Result<T, GatewayError>,
) {
    let Some(sender) = sender else { return };
    let event = inferlog_core::record::AuditEvent::now(
        caller.who(),
        action,
        endpoint,
        String::from_utf8_lossy(&body[..body.len().min(AUDIT_DETAIL_BYTES)]).into_owned(),
        result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    if let Err(e) = sender.try_send(event) {
        tracing::warn!(error = %e, "audit event dropped");
    }
}

pub struct Gateway {
    endpoints: HashMap<String, Arc<Endpoint>>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    options: GatewayOptions,
    metadata_headers: Vec<HeaderName>,
    pub(crate) state_store: CaptureStateStore,
    pub(crate) traffic_store: TrafficStateStore,
    /// Bounds the shadow exchanges in flight, so a slow shadow cannot pile up work.
    shadow_permits: Arc<tokio::sync::Semaphore>,
    pub(crate) auth: Arc<Authenticator>,
    offload_budget: Arc<crate::budget::MemoryBudget>,
    request_memory: Arc<crate::budget::MemoryBudget>,
}

/// Shadow exchanges in flight at most, over all endpoints; more are skipped and counted.
const MAX_SHADOWS_IN_FLIGHT: usize = 256;

impl Gateway {
    pub fn new(
        endpoints: Vec<Endpoint>,
        options: GatewayOptions,
        state_store: CaptureStateStore,
        traffic_store: TrafficStateStore,
        auth: Arc<Authenticator>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        // The TLS layer above decides the scheme; this one only connects.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(options.upstream_tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let metadata_headers = options
            .metadata_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Gateway {
            endpoints: endpoints
                .into_iter()
                .map(|e| (e.settings.name.clone(), Arc::new(e)))
                .collect(),
            client,
            metadata_headers,
            state_store,
            traffic_store,
            shadow_permits: Arc::new(tokio::sync::Semaphore::new(MAX_SHADOWS_IN_FLIGHT)),
            auth,
            offload_budget: crate::budget::MemoryBudget::new(options.offload_memory_bytes),
            request_memory: crate::budget::MemoryBudget::new(options.max_request_bytes_in_flight),
            options,
        }
    }

    pub fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(name)
    }

    /// Every endpoint, in no particular order.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    /// Reports an administrative action by `caller` and its outcome.
    pub(crate) fn audit<T>(&self, caller: &crate::auth::Caller, action: &str, endpoint: Option<&str>, body: &[u8], result: &Result<T, GatewayError>) {
        audit(self.options.audit.as_ref(), caller, action, endpoint, body, result);
    }

}

/// All proxy routes land here. The endpoint name and the rest of the path are taken from
/// the raw (still percent-encoded) path, so the upstream receives exactly what was sent.
pub(crate) async fn proxy(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    // Before authorization, forwarding and recording: an upstream that resolves dot segments
    // would serve another endpoint's model (or its own admin API) under this one's grant.
    if let Some(found) = unsafe_path_segment(req.uri().path()) {
        return GatewayError::UnsafePath(found.to_string()).into_response();
    }
    let (name, rest) = split_endpoint_path(req.uri().path());
    handle(gw, name, rest, req).await
}

/// The first segment of a raw path that a server normalising paths could resolve or split:
/// one that reads as `.` or `..` once a `;param` suffix is dropped (Tomcat, Jetty and Spring
/// treat `..;x` as `..`) and percent-decoding is repeated until nothing changes (`%252e` is
/// `%2e` decoded once more), one that becomes a slash, backslash or NUL that way, and one
/// whose percent-encoded bytes are not valid UTF-8 (overlong `%c0%ae` reads as `.` to lax
/// decoders).
fn unsafe_path_segment(path: &str) -> Option<&str> {
    path.split('/').find(|segment| segment_is_unsafe(segment))
}

fn segment_is_unsafe(segment: &str) -> bool {
    let mut current = segment.to_string();
    loop {
        if current.contains(['/', '\\', '\0']) {
            return true;
        }
        let name = current.split(';').next().unwrap_or_default();
        if name == "." || name == ".." {
            return true;
        }
        match percent_decode(&current) {
            None => return true,
            Some(decoded) if decoded == current => return false,
            Some(decoded) => current = decoded,
        }
    }
}

/// `text` with each `%XX` decoded once (a `%` not followed by two hex digits stays as it
/// is); `None` when the decoded bytes are not valid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// `/endpoints/{name}[/{rest}]` or `/serving-endpoints/{name}/invocations` → (name, rest).
fn split_endpoint_path(path: &str) -> (String, String) {
    if let Some(tail) = path.strip_prefix("/serving-endpoints/") {
        let name = tail.split('/').next().unwrap_or_default();
        return (name.to_string(), "invocations".to_string());
    }
    let tail = path.strip_prefix("/endpoints/").unwrap_or_default();
    match tail.split_once('/') {
        Some((name, rest)) => (name.to_string(), rest.to_string()),
        None => (tail.to_string(), String::new()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// The request path, phase by phase, around one [`Exchange`]: authorize, read the body,
/// choose a target (and copy to the shadow), forward, and hand the response to the tap that
/// records it. Any phase that fails answers with a gateway error through [`Exchange::fail`],
/// which records it.
async fn handle(gw: Arc<Gateway>, name: String, rest: String, req: Request) -> Response {
    let arrival = Arrival::of(&req);
    let requester = match authorize(&gw, &name, req.headers(), arrival.peer).await {
        Ok(requester) => requester,
        Err(e) => return with_request_id(e.into_response(), &arrival.request_id),
    };
    let Some(endpoint) = gw.endpoints.get(&name).cloned() else {
        return with_request_id(GatewayError::EndpointNotFound(name).into_response(), &arrival.request_id);
    };
    let (parts, body) = req.into_parts();
    let mut exchange = Exchange::begin(gw, endpoint, arrival, requester, &parts, &rest);
    // Held until the upstream has answered (and by a shadow holding a copy).
    let (body, body_memory) = match exchange.read_body(&parts.headers, body).await {
        Ok(read) => read,
        Err(err) => return exchange.fail(err, None).await,
    };
    let target = exchange.choose_target(&parts.headers);
    exchange.copy_to_shadow(&parts, &rest, &body, &body_memory);
    let forward = UpstreamRequest { method: &parts.method, headers: &parts.headers, rest: &rest, query: parts.uri.query(), body };
    let timeout = exchange.gw.options.upstream_timeout;
    let (response, forwarded_at) = match send_upstream(&exchange.gw, &target.upstream, forward, &exchange.request_id, timeout).await {
        Ok(answered) => answered,
        Err(failed) => return exchange.fail(failed.error, failed.forwarded_at).await,
    };
    exchange.tap(response, forwarded_at).await
}

/// What is known of a request the moment its head arrived.
struct Arrival {
    received_at: Instant,
    timestamp_ms: i64,
    /// The row's id (a UUIDv7), answered to every request, recorded or not.
    request_id: String,
    peer: Option<std::net::SocketAddr>,
}

impl Arrival {
    fn of(req: &Request) -> Arrival {
        Arrival {
            received_at: req.extensions().get::<crate::server::RequestReceived>().map_or_else(Instant::now, |r| r.0),
            timestamp_ms: now_ms(),
            request_id: uuid::Uuid::now_v7().to_string(),
            peer: req.extensions().get::<axum::extract::ConnectInfo<crate::tls::ClientAddr>>().map(|c| c.0 .0),
        }
    }
}

/// The caller's name when it may invoke endpoint `name` (or the endpoint is public). Decided
/// before whether the endpoint exists: a caller without rights learns nothing.
async fn authorize(
    gw: &Gateway,
    name: &str,
    headers: &HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Result<Option<String>, GatewayError> {
    let public = gw.endpoints.get(name).is_some_and(|e| e.settings.public);
    if public || !gw.auth.enabled() {
        return Ok(gw.auth.caller(headers).and_then(|c| c.name));
    }
    let peer = peer.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    Ok(gw.auth.authorize(peer, headers, Some(name), Role::Invoke).await?.name)
}

/// One exchange between a caller and an endpoint, from its authorized head to the response
/// handed to the tap: what every phase reads, and the record they fill in when the request
/// is sampled.
struct Exchange {
    gw: Arc<Gateway>,
    endpoint: Arc<Endpoint>,
    received_at: Instant,
    request_id: String,
    /// The record of a sampled request, request side first.
    record: Option<Record>,
    /// With `oversize = "offload"`: what the record may keep beyond `max_payload_bytes`.
    oversize: Option<OversizeAllowance>,
}

impl Exchange {
    /// The exchange of an authorized request to `endpoint`, sampled or not (decided once here).
    fn begin(
        gw: Arc<Gateway>,
        endpoint: Arc<Endpoint>,
        arrival: Arrival,
        requester: Option<String>,
        head: &axum::http::request::Parts,
        rest: &str,
    ) -> Exchange {
        let record = endpoint.sample().map(|sampling_fraction| {
            let request_metadata = gw
                .metadata_headers
                .iter()
                .filter_map(|name| Some((name.as_str().to_string(), header_string(&head.headers, name.as_str())?)))
                .collect();
            Record {
                request_id: arrival.request_id.clone(),
                timestamp_ms: arrival.timestamp_ms,
                endpoint_name: endpoint.settings.name.clone(),
                model_name: endpoint.settings.model_name.clone(),
                model_version: endpoint.settings.model_version.clone(),
                method: head.method.to_string(),
                path: format!("/{rest}"),
                sampling_fraction,
                request_content_type: header_string(&head.headers, header::CONTENT_TYPE.as_str()),
                requester,
                request_metadata,
                ..Default::default()
            }
        });
        let capture = &endpoint.settings.capture;
        let oversize = (record.is_some() && capture.oversize == inferlog_core::config::Oversize::Offload)
            .then(|| OversizeAllowance::new(capture.max_payload_bytes, gw.offload_budget.clone()));
        Exchange { received_at: arrival.received_at, request_id: arrival.request_id, gw, endpoint, record, oversize }
    }

    /// The request body, bounded in size (`max_request_bytes`), in time (from the head's
    /// arrival, as the connection's own body deadline counts) and, over all requests, in
    /// memory; with the memory it holds. The record gets the request side either way.
    async fn read_body(&mut self, headers: &HeaderMap, body: Body) -> Result<(Bytes, Arc<crate::budget::Reservation>), GatewayError> {
        let limit = self.gw.options.max_request_bytes;
        let declared = declared_length(headers);
        let mut memory = self.gw.request_memory.reserve(0).expect("nothing always fits");
        let read = if declared.is_some_and(|n| n > limit as u64) {
            Err(GatewayError::RequestTooLarge { limit })
        } else {
            let timeout = self.gw.options.request_body_timeout;
            let budgeted = BudgetedBody::new(body, &mut memory, limit);
            match tokio::time::timeout_at((self.received_at + timeout).into(), Limited::new(budgeted, limit).collect()).await {
                Err(_) => Err(GatewayError::RequestBodyTimeout { timeout_ms: timeout.as_millis() }),
                Ok(Ok(collected)) => Ok(collected.to_bytes()),
                Ok(Err(e))
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some()
                        || matches!(e.downcast_ref(), Some(BodyRefused::TooLarge)) =>
                {
                    Err(GatewayError::RequestTooLarge { limit })
                }
                Ok(Err(e)) if matches!(e.downcast_ref(), Some(BodyRefused::MemorySpent)) => Err(request_memory_full(&self.gw)),
                Ok(Err(e)) => Err(GatewayError::BadRequestBody(e.to_string())),
            }
        };
        if let Some(record) = self.record.as_mut() {
            match &read {
                Ok(bytes) => {
                    let capture = &self.endpoint.settings.capture;
                    // The record's text of the body: as long, or a third longer in base64.
                    let over_budget = bytes.len() > capture.max_payload_bytes
                        && self.oversize.as_mut().is_some_and(|allowance| !allowance.grow(bytes.len() / 3 * 4 + 4));
                    let keep = if over_budget { capture.max_payload_bytes } else { capture.kept_body_bytes() };
                    set_request(record, bytes, headers, keep);
                }
                // The body was refused: keep what is known of it.
                Err(_) => {
                    record.request_bytes = declared.unwrap_or(0) as i64;
                    record.client_request_id = client_request_id_from_headers(headers);
                }
            }
        }
        Ok((read?, Arc::new(memory)))
    }

    /// The target that answers this request; the record names it.
    fn choose_target(&mut self, headers: &HeaderMap) -> TargetSettings {
        let target = self.endpoint.choose_target(headers).clone();
        if let Some(record) = self.record.as_mut() {
            record.model_version = target.model_version.clone();
            record.served_target = Some(target.name.clone());
        }
        target
    }

    /// For a recorded request drawn into the shadow share: a copy to the shadow, sent in the
    /// background, never awaited and never seen by the caller.
    fn copy_to_shadow(&self, head: &axum::http::request::Parts, rest: &str, body: &Bytes, body_memory: &Arc<crate::budget::Reservation>) {
        let (Some(primary), Some(shadow)) = (self.record.as_ref(), self.endpoint.shadow_draw()) else { return };
        let Ok(permit) = self.gw.shadow_permits.clone().try_acquire_owned() else {
            metrics::counter!("inferlog_shadow_skipped_total", "endpoint" => self.endpoint.settings.name.clone()).increment(1);
            return;
        };
        let copy = ShadowCopy {
            method: head.method.clone(),
            headers: head.headers.clone(),
            rest: rest.to_string(),
            query: head.uri.query().map(str::to_string),
            body: body.clone(),
            _body_memory: body_memory.clone(),
            primary: primary.clone(),
        };
        tokio::spawn(shadow_exchange(self.gw.clone(), self.endpoint.clone(), shadow.clone(), copy, permit));
    }

    /// Streams the upstream's answer back through the tap, which records it as it ends.
    async fn tap(self, response: hyper::Response<hyper::body::Incoming>, forwarded_at: Instant) -> Response {
        let Exchange { endpoint, received_at, request_id, record, oversize, .. } = self;
        endpoint.upstream_duration.record(forwarded_at.elapsed().as_secs_f64());
        endpoint.count_request(response.status().as_u16());
        let (mut head, incoming) = response.into_parts();
        strip_hop_by_hop(&mut head.headers);
        let inflight = match (record, endpoint.capture.clone()) {
            (Some(mut record), Some(handle)) => {
                record.status_code = head.status.as_u16() as i32;
                record.response_content_type = header_string(&head.headers, header::CONTENT_TYPE.as_str());
                let stream = assembler_for(&head.headers, endpoint.settings.capture.max_payload_bytes);
                Some(InFlight {
                    record,
                    handle,
                    limit: response_limit(&endpoint.settings.capture, stream.is_some()),
                    received_at,
                    forwarded_at,
                    body: Vec::new(),
                    total: 0,
                    stream,
                    cancelled_because: CLIENT_LEFT,
                    oversize,
                    time_to_first_token: Some(endpoint.time_to_first_token.clone()),
                })
            }
            _ => None,
        };
        let hold_back = inflight.as_ref().is_some_and(|i| i.handle.durability() != inferlog_core::Durability::Async);
        let timer = ExchangeTimer { received_at, histogram: endpoint.exchange_duration.clone() };
        if incoming.is_end_stream() {
            // No body (HEAD, 204, 304, `content-length: 0`): the server will never poll one, so
            // the record is completed here.
            if let Some(inflight) = inflight {
                if let SubmitOutcome::AwaitLog(rx) = inflight.finish(crate::tap::BodyEnd::Completed) {
                    let _ = rx.await;
                }
            }
            timer.stop();
            return with_request_id(Response::from_parts(head, Body::empty()), &request_id);
        }
        let body = Body::new(TapBody::new(incoming, inflight, hold_back, Some(timer)));
        with_request_id(Response::from_parts(head, body), &request_id)
    }

    /// Answers with a gateway error, recording it first when the request was sampled.
    async fn fail(self, err: GatewayError, forwarded_at: Option<Instant>) -> Response {
        let Exchange { endpoint, received_at, request_id, record, .. } = self;
        let status = err.status();
        endpoint.count_request(status.as_u16());
        tracing::debug!(endpoint = %endpoint.settings.name, request_id, error = %err, "gateway error");
        if let (Some(mut record), Some(handle)) = (record, endpoint.capture.as_ref()) {
            set_gateway_error(&mut record, &err, received_at, forwarded_at);
            if let SubmitOutcome::AwaitLog(rx) = handle.submit(record) {
                let _ = rx.await;
            }
        }
        let unread_body = matches!(err, GatewayError::RequestTooLarge { .. } | GatewayError::RequestBodyTimeout { .. });
        let mut response = with_request_id(err.into_response(), &request_id);
        // The gateway's own answer is complete once made.
        ExchangeTimer { received_at, histogram: endpoint.exchange_duration.clone() }.stop();
        if unread_body {
            // The rest of the body was never read, so this connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// What is sent upstream: the request as the gateway received it, to `{upstream}/{rest}?{query}`.
struct UpstreamRequest<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    rest: &'a str,
    query: Option<&'a str>,
    body: Bytes,
}

/// Why an upstream did not answer, and when the request had gone out (a timeout only).
struct UpstreamFailed {
    error: GatewayError,
    forwarded_at: Option<Instant>,
}

/// Sends `request` to `upstream` (with `x-request-id: {request_id}`) and waits for the head of
/// its response for up to `timeout`: the response and when the request went out.
async fn send_upstream(
    gw: &Gateway,
    upstream: &url::Url,
    request: UpstreamRequest<'_>,
    request_id: &str,
    timeout: Duration,
) -> Result<(hyper::Response<hyper::body::Incoming>, Instant), UpstreamFailed> {
    let uri = upstream_uri(upstream, request.rest, request.query).map_err(|reason| UpstreamFailed {
        error: GatewayError::UpstreamUnreachable { upstream: upstream.to_string(), reason, kind: UpstreamFailure::Other },
        forwarded_at: None,
    })?;
    let mut outgoing = hyper::Request::builder()
        .method(request.method.clone())
        .uri(uri)
        .body(Full::new(request.body))
        .expect("request parts are valid");
    *outgoing.headers_mut() = upstream_headers(request.headers, request_id);
    let forwarded_at = Instant::now();
    match tokio::time::timeout(timeout, gw.client.request(outgoing)).await {
        Ok(Ok(response)) => Ok((response, forwarded_at)),
        Ok(Err(e)) => Err(UpstreamFailed { error: GatewayError::upstream_unreachable(upstream, &e), forwarded_at: None }),
        Err(_) => Err(UpstreamFailed {
            error: GatewayError::UpstreamTimeout { upstream: upstream.to_string(), timeout_ms: timeout.as_millis() },
            forwarded_at: Some(forwarded_at),
        }),
    }
}

/// The response side of a record whose answer is the gateway's own error.
fn set_gateway_error(record: &mut Record, err: &GatewayError, received_at: Instant, forwarded_at: Option<Instant>) {
    let body = err.body();
    record.status_code = err.status().as_u16() as i32;
    record.error = Some(err.to_string());
    record.response_bytes = body.len() as i64;
    record.response = Some(body);
    record.response_content_type = Some("application/json".into());
    record.response_encoding = Some(BodyEncoding::Utf8);
    record.execution_time_ms = forwarded_at.map(|t| t.elapsed().as_millis() as i64);
    record.latency_ms = received_at.elapsed().as_millis() as i64;
}

fn set_request(record: &mut Record, body: &Bytes, headers: &HeaderMap, limit: usize) {
    let (text, encoding, cut) = encode_body(body, limit);
    record.request = text;
    record.request_encoding = encoding;
    record.request_bytes = body.len() as i64;
    if cut {
        record.logging_error_codes.push(MAX_REQUEST_SIZE_EXCEEDED.to_string());
    }
    record.client_request_id = client_request_id_from_body(body).or_else(|| client_request_id_from_headers(headers));
}

/// The caller's own id from its headers: `x-client-request-id`, else the `x-request-id` it
/// sent (the gateway answers and forwards the row's id in its place).
fn client_request_id_from_headers(headers: &HeaderMap) -> Option<String> {
    header_string(headers, CLIENT_REQUEST_ID_HEADER).or_else(|| header_string(headers, REQUEST_ID_HEADER))
}

/// 64-bit FNV-1a: a hash that stays the same across builds and machines, so every gateway
/// sends a sticky caller to the same target.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// An SSE assembler for an event-stream response whose bytes are the events themselves (a
/// compressed stream is recorded as it is, not assembled).
/// How much of a response body the record keeps. A stream's raw events are never offloaded:
/// its row holds the assembled answer.
fn response_limit(capture: &inferlog_core::CaptureSettings, is_stream: bool) -> usize {
    if is_stream {
        capture.max_payload_bytes
    } else {
        capture.kept_body_bytes()
    }
}

fn assembler_for(headers: &HeaderMap, limit: usize) -> Option<inferlog_core::llm::StreamAssembler> {
    let content_type = header_string(headers, header::CONTENT_TYPE.as_str());
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    (inferlog_core::llm::is_event_stream(content_type.as_deref()) && !encoded)
        .then(|| inferlog_core::llm::StreamAssembler::new(limit))
}

/// Why a record's response ended early when the client went away.
pub(crate) const CLIENT_LEFT: &str = "client disconnected before the response was complete";
const SHADOW_TIMED_OUT: &str = "the shadow's response did not finish within its timeout";

/// What the shadow is sent: the primary request as the gateway received it.
struct ShadowCopy {
    method: Method,
    headers: HeaderMap,
    rest: String,
    query: Option<String>,
    body: Bytes,
    /// `body` shares the primary's bytes: they stay counted until the shadow is done too.
    _body_memory: Arc<crate::budget::Reservation>,
    /// The primary's record so far (request side filled in).
    primary: Record,
}

/// Sends the copy to the shadow and records its answer as an exchange of its own, with
/// `shadow_of` set to the primary's request id. Runs detached from the primary: its time and
/// failures reach no caller.
async fn shadow_exchange(
    gw: Arc<Gateway>,
    endpoint: Arc<Endpoint>,
    shadow: ShadowSettings,
    copy: ShadowCopy,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let Some(handle) = endpoint.capture.clone() else { return };
    let received_at = Instant::now();
    let mut record = copy.primary;
    record.shadow_of = Some(std::mem::take(&mut record.request_id));
    record.request_id = uuid::Uuid::now_v7().to_string();
    record.served_target = Some(shadow.name.clone());
    record.model_version = shadow.model_version.clone();
    // Shadow rows keep prefixes only: the primary's row has the whole request, and the
    // shadows' bodies do not take from the offload budget.
    let inline_max = endpoint.settings.capture.max_payload_bytes;
    if let Some(request) = record.request.as_mut().filter(|r| r.len() > inline_max) {
        let base64 = record.request_encoding == Some(BodyEncoding::Base64);
        inferlog_capture::offload::cut_text(request, inline_max, base64);
        record.logging_error_codes.push(MAX_REQUEST_SIZE_EXCEEDED.to_string());
    }
    let request =
        UpstreamRequest { method: &copy.method, headers: &copy.headers, rest: &copy.rest, query: copy.query.as_deref(), body: copy.body };
    let (response, forwarded_at) = match send_upstream(&gw, &shadow.upstream, request, &record.request_id, shadow.timeout).await {
        Ok(answered) => answered,
        Err(failed) => {
            set_gateway_error(&mut record, &failed.error, received_at, failed.forwarded_at);
            let _ = handle.submit(record);
            return;
        }
    };
    let (parts, incoming) = response.into_parts();
    record.status_code = parts.status.as_u16() as i32;
    record.response_content_type = header_string(&parts.headers, header::CONTENT_TYPE.as_str());
    let stream = assembler_for(&parts.headers, endpoint.settings.capture.max_payload_bytes);
    let inflight = InFlight {
        limit: inline_max,
        stream,
        record,
        handle,
        received_at,
        forwarded_at,
        body: Vec::new(),
        total: 0,
        cancelled_because: SHADOW_TIMED_OUT,
        oversize: None,
        // A shadow is not the endpoint's answer: it stays out of the endpoint's histograms.
        time_to_first_token: None,
    };
    // Reading the body to its end through the tap completes and submits the record; at the
    // deadline (the shadow's timeout covers the whole exchange) the tap is dropped, which
    // records what arrived.
    let mut body = TapBody::new(incoming, Some(inflight), false, None);
    let _ = tokio::time::timeout_at((forwarded_at + shadow.timeout).into(), async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
}

fn request_memory_full(gw: &Gateway) -> GatewayError {
    GatewayError::RequestMemoryFull { limit: gw.options.max_request_bytes_in_flight }
}

/// Why a [`BudgetedBody`] was refused.
#[derive(Debug, thiserror::Error)]
enum BodyRefused {
    #[error("max_request_bytes_in_flight is spent")]
    MemorySpent,
    /// Found while draining (`Limited` sees only the bytes kept).
    #[error("the body is larger than max_request_bytes")]
    TooLarge,
}

/// A request body whose bytes are taken from the request memory budget as they arrive
/// (never on the strength of a declared length, which a caller need not send). Once the
/// budget is spent the reservation is given back and the rest of the body is read and
/// dropped, up to `limit` bytes in all, kept or dropped; its end is the error: the caller,
/// still sending, then gets the 503 instead of a broken connection.
struct BudgetedBody<'a> {
    inner: Body,
    reservation: &'a mut crate::budget::Reservation,
    /// Bytes read so far, kept or dropped.
    read: usize,
    /// Set when the budget is spent: the body is only drained since.
    draining: bool,
    limit: usize,
}

impl<'a> BudgetedBody<'a> {
    fn new(inner: Body, reservation: &'a mut crate::budget::Reservation, limit: usize) -> Self {
        BudgetedBody { inner, reservation, read: 0, draining: false, limit }
    }
}

impl http_body::Body for BudgetedBody<'_> {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let frame = match std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return std::task::Poll::Ready(Some(Err(e.into()))),
                None if this.draining => return std::task::Poll::Ready(Some(Err(BodyRefused::MemorySpent.into()))),
                None => return std::task::Poll::Ready(None),
            };
            let Some(data) = frame.data_ref() else { return std::task::Poll::Ready(Some(Ok(frame))) };
            this.read = this.read.saturating_add(data.len());
            if !this.draining {
                if this.reservation.grow(data.len()) {
                    return std::task::Poll::Ready(Some(Ok(frame)));
                }
                // The request is refused: what it kept is no longer needed.
                this.reservation.release();
                this.draining = true;
            }
            if this.read > this.limit {
                return std::task::Poll::Ready(Some(Err(BodyRefused::TooLarge.into())));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn upstream_uri(upstream: &url::Url, rest: &str, query: Option<&str>) -> Result<Uri, String> {
    let base = upstream.as_str().trim_end_matches('/');
    let mut uri = format!("{base}/{rest}");
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    uri.parse::<Uri>().map_err(|e| format!("cannot build upstream URI `{uri}`: {e}"))
}

/// What the upstream is sent: the client's headers as [`forwarded_headers`] leaves them, with
/// `x-request-id` set to the row's id, so the model server's logs and the row name one id.
fn upstream_headers(incoming: &HeaderMap, request_id: &str) -> HeaderMap {
    let mut headers = forwarded_headers(incoming);
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    headers
}

/// The client's headers minus hop-by-hop ones (and those the `Connection` header names) and
/// `Host`, which the client library sets for the upstream.
fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    // The gateway's own tokens are for the gateway: a model server never sees them.
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().strip_prefix("Bearer ").is_some_and(|t| t.trim_start().starts_with(crate::auth::TOKEN_PREFIX)))
    {
        headers.remove(header::AUTHORIZATION);
    }
    headers
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    for h in named {
        headers.remove(h.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("host", "gateway".parse().unwrap());
        h.insert("x-custom", "kept".parse().unwrap());
        let out = forwarded_headers(&h);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["x-custom"], "kept");
    }

    #[test]
    fn the_upstream_gets_the_rows_request_id_and_the_callers_becomes_the_client_id() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, "caller-chosen".parse().unwrap());
        assert_eq!(upstream_headers(&h, "0193-row")[REQUEST_ID_HEADER], "0193-row");
        assert_eq!(client_request_id_from_headers(&h).as_deref(), Some("caller-chosen"));
        h.insert(CLIENT_REQUEST_ID_HEADER, "explicit".parse().unwrap());
        assert_eq!(client_request_id_from_headers(&h).as_deref(), Some("explicit"));
    }

    #[test]
    fn endpoint_paths_split_into_name_and_raw_rest() {
        let split = |p: &str| split_endpoint_path(p);
        assert_eq!(split("/endpoints/iris/invocations"), ("iris".into(), "invocations".into()));
        assert_eq!(split("/endpoints/iris/v1/a%20b%3F"), ("iris".into(), "v1/a%20b%3F".into()));
        assert_eq!(split("/endpoints/iris"), ("iris".into(), String::new()));
        assert_eq!(split("/serving-endpoints/iris/invocations"), ("iris".into(), "invocations".into()));
    }

    #[test]
    fn dot_segments_and_encoded_slashes_are_found_raw_or_encoded() {
        for path in [
            "/endpoints/a/../b/predict",
            "/endpoints/a/%2e%2e/b/predict",
            "/endpoints/a/%2E%2e/b",
            "/endpoints/a/.%2e/b",
            "/endpoints/a/%2e./b",
            "/endpoints/a/./predict",
            "/endpoints/a/%2E/predict",
            "/endpoints/a/..",
            "/endpoints/a/x%2fy",
            "/endpoints/a/x%2F..",
            "/endpoints/a/x%5cy",
            "/endpoints/a/x\\y",
            "/endpoints/a/..;/b/predict",
            "/endpoints/a/.;x/predict",
            "/endpoints/a/..%3b/b",
            "/endpoints/a/%252e%252e/b",
            "/endpoints/a/%25252e%25252E/b",
            "/endpoints/a/x%252fy",
            "/endpoints/a/%c0%ae%c0%ae/b",
            "/endpoints/a/%e0%80%ae/b",
            "/endpoints/a/..%00/b",
            "/endpoints/a/x%2500y",
        ] {
            assert!(unsafe_path_segment(path).is_some(), "{path}");
        }
        for path in ["/endpoints/a/predict", "/endpoints/a/v1/models/m.onnx:predict", "/endpoints/a/...", "/endpoints/a/a..b", "/endpoints/a/%2e%2e%2e", "/endpoints/a/x%20y", "/endpoints/a/x;v=1", "/endpoints/a/100%", "/endpoints/a/%zz", "/endpoints/a/caf%c3%a9"] {
            assert_eq!(unsafe_path_segment(path), None, "{path}");
        }
    }

    #[tokio::test]
    async fn a_body_takes_its_bytes_from_the_request_memory_as_they_arrive() {
        use futures::StreamExt;
        let chunks = || futures::stream::iter([b"123456", b"789012"].map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))));
        let budget = crate::budget::MemoryBudget::new(10);
        let mut reservation = budget.reserve(0).unwrap();
        let body = BudgetedBody::new(Body::from_stream(chunks()), &mut reservation, 100);
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err.downcast_ref(), Some(BodyRefused::MemorySpent)), "{err}");
        assert_eq!(budget.used(), 0, "a refused body gives back what it kept");
        let body = BudgetedBody::new(Body::from_stream(chunks().take(1)), &mut reservation, 100);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "123456");
        assert_eq!(budget.used(), 6);
        drop(reservation);
        // Kept and dropped bytes both count against the size limit.
        let mut reservation = budget.reserve(0).unwrap();
        let body = BudgetedBody::new(Body::from_stream(chunks()), &mut reservation, 11);
        assert!(matches!(body.collect().await.unwrap_err().downcast_ref(), Some(BodyRefused::TooLarge)));
    }

    #[test]
    fn upstream_uri_keeps_base_path_and_query() {
        let base: url::Url = "http://127.0.0.1:9/base/".parse().unwrap();
        assert_eq!(upstream_uri(&base, "invocations", Some("a=1")).unwrap(), "http://127.0.0.1:9/base/invocations?a=1");
        let root: url::Url = "http://127.0.0.1:9".parse().unwrap();
        assert_eq!(upstream_uri(&root, "v1/models/x:predict", None).unwrap(), "http://127.0.0.1:9/v1/models/x:predict");
    }
}
