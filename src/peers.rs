//! The other replicas of a deployment and one parallel fetch from all of
//! them: a static list of API base URLs (`--peers`) and the addresses of a
//! headless Service's DNS name (`--peers-dns`, resolved again every
//! [`RESOLVE_EVERY`]). Every daemon draws a random node id at start and
//! sends it with every peer answer ([`NODE_HEADER`]); a peer that answers
//! with our own id is ourselves (a replica finds itself in the DNS answer)
//! and is left out from then on. See docs/FEDERATION.md.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The response header a peer answer carries its node id in.
pub const NODE_HEADER: &str = "x-hopscope-node";
/// How often `--peers-dns` is resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);
/// Largest body read from a peer; a larger one is that peer's error.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Why one peer's answer is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {} MiB", MAX_BODY_BYTES >> 20)]
    TooLarge,
    #[error("answer is not the expected JSON: {0}")]
    Decode(String),
}

/// One peer's answer to [`Peers::fetch_all`].
#[derive(Debug)]
pub struct Fetched<T> {
    /// The peer's API base URL.
    pub peer: String,
    /// The node id it answered with, if it answered.
    pub node: Option<String>,
    pub result: Result<T, PeerError>,
}

/// The peers of this replica and the client that asks them.
pub struct Peers {
    node: String,
    fixed: Vec<String>,
    /// `HOST:PORT` of a headless Service, if discovery is on.
    dns: Option<String>,
    /// What `dns` last resolved to, as base URLs.
    resolved: RwLock<Vec<String>>,
    /// URLs that turned out to be this replica.
    selves: RwLock<BTreeSet<String>>,
    client: reqwest::Client,
    token: Option<String>,
    timeout: Duration,
}

/// A random node id: 16 hex digits from the standard library's randomly
/// keyed hasher, fed the time and the process id.
fn random_node_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl Peers {
    /// The peers `config` names (none: [`Peers::is_empty`]), with a new node id.
    pub fn new(config: &Config) -> Result<Peers, PeerError> {
        // The deadline is the whole fetch's, in `fetch_all`.
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| PeerError::Request(e.to_string()))?;
        Ok(Peers {
            node: random_node_id(),
            fixed: config.peers.clone(),
            dns: config.peers_dns.clone(),
            resolved: RwLock::default(),
            selves: RwLock::default(),
            client,
            token: config.api_token.clone(),
            timeout: config.peer_timeout,
        })
    }

    /// This replica's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether no peer is configured (every answer is local).
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.dns.is_none()
    }

    /// The peers' base URLs now: the static ones and the last resolution,
    /// without this replica's own.
    pub fn urls(&self) -> Vec<String> {
        let selves = self.selves.read();
        let mut urls: Vec<String> = self.fixed.clone();
        for u in self.resolved.read().iter() {
            if !urls.contains(u) {
                urls.push(u.clone());
            }
        }
        urls.retain(|u| !selves.contains(u));
        urls
    }

    /// Resolves `--peers-dns` now (a failure keeps the last answer).
    pub async fn resolve(&self) {
        let Some(name) = &self.dns else { return };
        let port = name.rsplit(':').next().unwrap_or_default();
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => {
                let mut urls: Vec<String> = addrs
                    .map(|a| match a {
                        std::net::SocketAddr::V4(v4) => format!("http://{}:{port}", v4.ip()),
                        std::net::SocketAddr::V6(v6) => format!("http://[{}]:{port}", v6.ip()),
                    })
                    .collect();
                urls.sort();
                urls.dedup();
                *self.resolved.write() = urls;
            }
            Err(e) => {
                tracing::warn!(peers_dns = %name, error = %e, "peer discovery: cannot resolve")
            }
        }
    }

    /// Resolves `--peers-dns` now and every [`RESOLVE_EVERY`] until `stop`.
    pub fn discover(self: &Arc<Self>, stop: CancellationToken) {
        if self.dns.is_none() {
            return;
        }
        let peers = self.clone();
        tokio::spawn(async move {
            loop {
                peers.resolve().await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RESOLVE_EVERY) => {}
                }
            }
        });
    }

    /// `GET {peer}{path}` of every peer at once, each within the peer
    /// timeout, as JSON `T`: one entry per peer in [`Peers::urls`] order (a
    /// peer that turns out to be this replica is left out), the answer or
    /// why it is missing. Sends the API's bearer token (replicas share it).
    pub async fn fetch_all<T: DeserializeOwned + Send + 'static>(
        &self,
        path: &str,
    ) -> Vec<Fetched<T>> {
        let tasks: Vec<_> = self
            .urls()
            .into_iter()
            .map(|peer| {
                let request = self.client.get(format!("{peer}{path}"));
                let request = match &self.token {
                    Some(t) => request.bearer_auth(t),
                    None => request,
                };
                let timeout = self.timeout;
                let task = tokio::spawn(async move {
                    tokio::time::timeout(timeout, fetch::<T>(request))
                        .await
                        .unwrap_or(Err((None, PeerError::Timeout(timeout))))
                });
                (peer, task)
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for (peer, task) in tasks {
            let answer = task
                .await
                .unwrap_or_else(|e| Err((None, PeerError::Request(e.to_string()))));
            let (node, result) = match answer {
                Ok((node, body)) => (node, Ok(body)),
                Err((node, e)) => (node, Err(e)),
            };
            if node.as_deref() == Some(self.node.as_str()) {
                self.selves.write().insert(peer);
                continue;
            }
            out.push(Fetched { peer, node, result });
        }
        out
    }
}

/// A failed fetch, with the node id if the peer answered.
type Failed = (Option<String>, PeerError);

/// One request: the node id the answer carries and its body as `T`.
async fn fetch<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<(Option<String>, T), Failed> {
    let mut response = request
        .send()
        .await
        .map_err(|e| (None, PeerError::Request(e.to_string())))?;
    let node = response
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fail = |e| (node.clone(), e);
    if !response.status().is_success() {
        return Err(fail(PeerError::Status(response.status().as_u16())));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(fail(PeerError::TooLarge));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(PeerError::Request(e.to_string())))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(fail(PeerError::TooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    let value =
        serde_json::from_slice(&body).map_err(|e| fail(PeerError::Decode(e.to_string())))?;
    Ok((node, value))
}
