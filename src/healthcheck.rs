//! `hopscope healthcheck`: one HTTP probe of a running daemon's API, for
//! container images without curl (a Dockerfile `HEALTHCHECK`, an exec probe).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Why the daemon is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach hopscope at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("hopscope at {url} answered {status}: {body}")]
    Unhealthy {
        url: String,
        status: u16,
        body: String,
    },
}

/// Where to connect for a listener bound to `addr`: a wildcard address
/// (`0.0.0.0`, `::`, as in containers) is reached on loopback.
pub fn target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `GET http://{addr}{path}`: `Ok` with the body on 200, an error otherwise.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    let url = format!("http://{}{path}", target(addr));
    let unreachable = |e: reqwest::Error| ProbeError::Unreachable {
        url: url.clone(),
        reason: root_cause(&e),
    };
    let response = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?
        .get(&url)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    if status == 200 {
        Ok(body)
    } else {
        Err(ProbeError::Unhealthy { url, status, body })
    }
}

/// The innermost error: "Connection refused (os error 111)" rather than
/// reqwest's "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(inner) = e.source() {
        e = inner;
    }
    e.to_string()
}
