//! What the pipeline may ask about the connection, beyond the request headers. The host reads
//! Envoy's attributes; `explain` answers from its flags. Each is asked for at most once per
//! request, and only when the compiled rules read it.

use std::net::{IpAddr, SocketAddr};

/// The connection a request came on.
pub trait Connection {
    /// Envoy's `source.address` as it gives it (`ip:port`; port 0 when Envoy took the
    /// address from X-Forwarded-For).
    fn source_address(&self) -> Option<String>;
    /// Envoy's `destination.address`: the local address; on a sidecar the original
    /// destination, whose port is the service port istiod names clusters with.
    fn destination_address(&self) -> Option<Address>;
    /// The TLS server name the client asked for (`connection.requested_server_name`).
    fn requested_server_name(&self) -> Option<String>;
    /// The peer's certificate on an mTLS connection.
    fn peer_certificate(&self) -> Option<PeerCertificate>;
}

/// An IP address and port, either of which may be unknown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl Address {
    /// `ip:port` or a bare IP, as Envoy's address attributes give them; anything else (a pipe
    /// path) is an address with neither.
    pub fn parse(text: &str) -> Address {
        match text.parse::<SocketAddr>() {
            Ok(sa) => Address {
                ip: Some(sa.ip()),
                port: Some(sa.port()),
            },
            Err(_) => Address {
                ip: text.parse().ok(),
                port: None,
            },
        }
    }
}

/// A peer certificate, as Envoy hands it over or as a reviewer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCertificate {
    /// `connection.peer_certificate`: the URL-encoded PEM (Envoy's
    /// `connection.uri_san_peer_certificate` would hold only the first URI SAN).
    UrlEncodedPem(String),
    /// The certificate's names already read, in Envoy's order.
    Names(Vec<String>),
}

/// A connection nothing is known about (a Unix socket, or a test).
pub struct NoConnection;

impl Connection for NoConnection {
    fn source_address(&self) -> Option<String> {
        None
    }
    fn destination_address(&self) -> Option<Address> {
        None
    }
    fn requested_server_name(&self) -> Option<String> {
        None
    }
    fn peer_certificate(&self) -> Option<PeerCertificate> {
        None
    }
}
