//! Registries and what stands between a daemon and them.
//!
//! - [`docker_registry`] (its items re-exported here, so `common::registry::TestRegistry`): a real
//!   `docker-registry` process on a free loopback port, optionally with htpasswd auth, HTTPS (with [`pki`])
//!   or as a pull-through cache (`proxy.remoteurl`), and containerd-style `hosts.toml` files pointing at it.
//! - [`registry_log`]: which user the registry's own log says made each request (htpasswd auth).
//! - [`push`]: pushes blobs, images and indexes to a registry over the distribution API.
//! - [`pki`]: a CA, server and client certificates made with openssl, for HTTPS and mutual-TLS registries.
//! - [`fake_registry`]: a small misbehaving HTTP server for answers a real registry will not give on demand.
//! - [`fault_proxy`]: a proxy in front of the real registry that refuses, answers 500, never answers,
//!   stalls, drips or cuts on demand, can require a header (a P2P mirror routing by it), can stand for a CDN
//!   front (a rate cap per connection, `Range` ignored, every blob response cut at a total of bytes), and logs
//!   every request (its headers, body bytes, when it started and ended); [`proxied`]: a registry, that proxy and a daemon pulling
//!   through it.
//! - [`blackhole`]: a loopback port that swallows connection attempts (a dead peer).

pub mod blackhole;
pub mod docker_registry;
pub mod fake_registry;
pub mod fault_proxy;
pub mod pki;
pub mod proxied;
pub mod push;
pub mod registry_log;

pub use docker_registry::{
    LoggedRequest, REGISTRY_BIN, RegistryOptions, RegistryTls, TestRegistry, plain_hosts_toml, require_tool,
    write_hosts_toml,
};
