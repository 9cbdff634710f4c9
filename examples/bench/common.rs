//! The test fixtures of `tests/common/` that a benchmark can use: the deterministic image builder, the
//! pusher and the real `docker-registry`.
//!
//! `tests/common/mod.rs` itself cannot be included: its `daemon` module names the imaged binary through
//! `CARGO_BIN_EXE_imaged`, which Cargo sets for integration tests only, not for examples. So the modules
//! needed here are included one by one; they refer to each other as `super::…`, which resolves to this
//! module. The attributes are the ones `tests/common/mod.rs` puts on them (test code: panics are the error
//! report, and not every helper is used).

#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]
#[path = "../../tests/common/image.rs"]
pub mod image;
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]
#[path = "../../tests/common/layer.rs"]
pub mod layer;
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]
#[path = "../../tests/common/push.rs"]
pub mod push;
#[allow(clippy::unwrap_used, clippy::expect_used, dead_code, unused_imports)]
#[path = "../../tests/common/registry.rs"]
pub mod registry;
