//! Sending one request to the target and timing it from its due time.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use super::outcome::{ErrorKind, Outcome};

const DONE: &[u8] = b"data: [DONE]";

/// A chat completions endpoint and the fixed request sent to it.
pub struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    stream: bool,
}

/// Parses `name: value` as given to `--header`.
pub fn parse_header(s: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = s
        .split_once(':')
        .with_context(|| format!("header {s:?} is not `name: value`"))?;
    let name =
        HeaderName::try_from(name.trim()).with_context(|| format!("header name in {s:?}"))?;
    let value =
        HeaderValue::try_from(value.trim()).with_context(|| format!("header value in {s:?}"))?;
    Ok((name, value))
}

/// Accepts only plain-HTTP URLs on loopback: this tool must never load anyone else.
pub fn loopback_uri(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url.parse().with_context(|| format!("bad url {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("url {url:?} must be http://");
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("url {url:?} is not on a loopback address");
    }
    Ok(uri)
}

impl Target {
    /// A target with a connection pool sized for `max_in_flight`.
    pub fn new(
        uri: Uri,
        headers: &[(HeaderName, HeaderValue)],
        model: &str,
        stream: bool,
        max_in_flight: usize,
    ) -> Target {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_in_flight)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            map.append(name.clone(), value.clone());
        }
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello to the load generator."}],
            "stream": stream,
        });
        Target {
            client,
            uri,
            headers: map,
            body: Bytes::from(body.to_string()),
            stream,
        }
    }

    /// Sends the request once; times are measured from `due`, not from sending.
    pub async fn send(&self, due: Instant) -> Outcome {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let response = match self.client.request(request).await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Outcome::Err(ErrorKind::Connect),
            Err(_) => return Outcome::Err(ErrorKind::Connection),
        };
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            // Read it anyway so the connection can go back to the pool.
            let _ = body.collect().await;
            return Outcome::Err(ErrorKind::Status(status.as_u16()));
        }
        if !self.stream {
            return match body.collect().await {
                Ok(_) => Outcome::Ok {
                    total: due.elapsed(),
                    ttfb: None,
                },
                Err(_) => Outcome::Err(ErrorKind::Body),
            };
        }
        let mut ttfb = None;
        let mut tail = Vec::with_capacity(64);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Outcome::Err(ErrorKind::Body);
            };
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    ttfb.get_or_insert_with(|| due.elapsed());
                    keep_tail(&mut tail, &data);
                }
            }
        }
        if ends_with_done(&tail) {
            Outcome::Ok {
                total: due.elapsed(),
                ttfb,
            }
        } else {
            Outcome::Err(ErrorKind::NoDone)
        }
    }
}

// Only the end of the stream matters for spotting `[DONE]`; keep a few bytes of it.
fn keep_tail(tail: &mut Vec<u8>, data: &[u8]) {
    const KEEP: usize = 32;
    tail.extend_from_slice(&data[data.len().saturating_sub(KEEP)..]);
    let excess = tail.len().saturating_sub(KEEP);
    tail.drain(..excess);
}

fn ends_with_done(tail: &[u8]) -> bool {
    let end = tail
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    tail[..end].ends_with(DONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spots_done_across_frames() {
        let mut tail = Vec::new();
        keep_tail(&mut tail, &[b'x'; 100]);
        keep_tail(&mut tail, b"data: {}\n\ndata: [DO");
        assert!(!ends_with_done(&tail));
        keep_tail(&mut tail, b"NE]\n\n");
        assert!(ends_with_done(&tail));
        assert!(tail.len() <= 32);
    }

    #[test]
    fn only_loopback_http() {
        assert!(loopback_uri("http://127.0.0.1:8080/v1/chat/completions").is_ok());
        assert!(loopback_uri("http://localhost/v1").is_ok());
        assert!(loopback_uri("http://[::1]:9/").is_ok());
        assert!(loopback_uri("http://10.0.0.1/").is_err());
        assert!(loopback_uri("https://127.0.0.1/").is_err());
    }

    #[test]
    fn parses_headers() {
        let (n, v) = parse_header("Authorization: Bearer X").expect("header");
        assert_eq!(
            (n.as_str(), v.to_str().ok()),
            ("authorization", Some("Bearer X"))
        );
        assert!(parse_header("nocolon").is_err());
    }
}
