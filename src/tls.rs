//! TLS for the listeners (rustls with the ring provider), when a certificate
//! chain and key are configured: the OTLP/gRPC server gets a tonic
//! [`ServerTlsConfig`], the HTTP API a [`TlsListener`] for `axum::serve`.
//! With TLS on, a listener speaks nothing else: a plain-text client fails its
//! handshake.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::TlsFiles;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on the API listener; past it, new
/// connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM {what}: {source}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS certificate and key are not usable: {0}")]
    Config(#[from] rustls::Error),
}

/// A loaded certificate chain and key.
#[derive(Clone)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server: Arc<ServerConfig>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Tls {
    /// Reads and checks the PEM files.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
        let pem = |path: &Path, what: &'static str, source| TlsError::Pem {
            path: path.to_owned(),
            what,
            source,
        };
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&files.cert, "certificate", e))?;
        if chain.is_empty() {
            let none = rustls::pki_types::pem::Error::NoItemsFound;
            return Err(pem(&files.cert, "certificate", none));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem(&files.key, "private key", e))?;
        let mut server =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        // axum serves HTTP/1.1 (no http2 feature).
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            cert_pem,
            key_pem,
            server: Arc::new(server),
        })
    }

    /// The OTLP/gRPC server's TLS.
    pub fn grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// A listener that hands `axum::serve` connections whose handshake is
    /// done. Handshakes run in their own tasks (at most 256 at
    /// once, each within 10 s), so a slow client holds up no
    /// other; a failed one is logged at debug and dropped.
    pub fn listener(&self, tcp: TcpListener) -> TlsListener {
        let (done, ready) = mpsc::channel(MAX_HANDSHAKES);
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(self.server.clone()),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            done,
            ready,
        }
    }
}

/// See [`Tls::listener`].
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: Arc<Semaphore>,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let permit = self.handshakes.clone().try_acquire_owned().ok();
            tokio::select! {
                Some(conn) = self.ready.recv() => return conn,
                accepted = self.tcp.accept(), if permit.is_some() => {
                    let (tcp, addr) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // As axum does: running out of descriptors passes.
                            tracing::debug!(error = %e, "API accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an API connection");
                    }
                    let (acceptor, done) = (self.acceptor.clone(), self.done.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                // Only fails once the listener is gone.
                                let _ = done.send((tls, addr)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
