//! One instrumentation layer for every RPC, as containerd's instrumented CRI service has: a span per call
//! naming the method, the image and the pod, an entry and an exit log in it at the RPC's level (info for
//! the RPCs that change state, debug or trace for reads), and the error on exit.
//!
//! Everything logged while the call runs is in its span, so the pod and the image are named once, in the
//! span, rather than on each line; work that outlives the call or runs elsewhere (a coalesced pull's task,
//! `ensure::flight`) logs with the caller's span as its parent. Only the image reference and the pod's
//! metadata are recorded: never a request's credentials (`PullImageRequest.auth`).

use std::future::Future;
use std::time::Instant;

use tonic::Status;
use tracing::field::{Empty, display};
use tracing::{Instrument, Level, Span};

use crate::proto::imaged::v1 as pb;
use crate::proto::runtime::v1 as cri;

/// What a request tells about itself for its span: the image it names and the pod it is for.
pub(super) trait Fields {
    /// The image reference the request names, if any.
    fn image(&self) -> Option<&str> {
        None
    }

    /// The metadata of the pod the request is for, if it says.
    fn pod(&self) -> Option<&cri::PodSandboxMetadata> {
        None
    }
}

/// The image of an `ImageSpec`, when it names one.
fn spec_image(spec: Option<&cri::ImageSpec>) -> Option<&str> {
    spec.map(|s| s.image.as_str()).filter(|s| !s.is_empty())
}

impl Fields for cri::PullImageRequest {
    fn image(&self) -> Option<&str> {
        spec_image(self.image.as_ref())
    }

    fn pod(&self) -> Option<&cri::PodSandboxMetadata> {
        self.sandbox_config.as_ref().and_then(|c| c.metadata.as_ref())
    }
}

impl Fields for cri::ImageStatusRequest {
    fn image(&self) -> Option<&str> {
        spec_image(self.image.as_ref())
    }
}

impl Fields for cri::RemoveImageRequest {
    fn image(&self) -> Option<&str> {
        spec_image(self.image.as_ref())
    }
}

impl Fields for cri::ListImagesRequest {}
impl Fields for cri::StreamImagesRequest {}
impl Fields for cri::ImageFsInfoRequest {}
impl Fields for pb::GarbageCollectRequest {}
impl Fields for pb::PruneRequest {}
/// A request that names no image and no pod (containerd's snapshot API names snapshots by key).
impl Fields for () {}

/// One call of an RPC: its span, opened with the request's fields, and its level.
pub(super) struct Rpc {
    span: Span,
    level: Level,
}

impl Rpc {
    /// A call of `method`, which changes state: its span and logs at info.
    pub fn info(method: &'static str, req: &impl Fields) -> Rpc {
        Rpc::new(method, Level::INFO, req)
    }

    /// A call of `method`, which reads: its span and logs at debug.
    pub fn debug(method: &'static str, req: &impl Fields) -> Rpc {
        Rpc::new(method, Level::DEBUG, req)
    }

    /// A call of `method` that kubelet polls: its span and logs at trace.
    pub fn trace(method: &'static str, req: &impl Fields) -> Rpc {
        Rpc::new(method, Level::TRACE, req)
    }

    fn new(method: &'static str, level: Level, req: &impl Fields) -> Rpc {
        // A span's level is part of its static metadata: one macro per level.
        macro_rules! span_at {
            ($mac:ident) => {
                tracing::$mac!(
                    "rpc",
                    method,
                    image = Empty,
                    pod = Empty,
                    namespace = Empty,
                    pod_uid = Empty
                )
            };
        }
        let span = match level {
            Level::INFO => span_at!(info_span),
            Level::DEBUG => span_at!(debug_span),
            _ => span_at!(trace_span),
        };
        if let Some(image) = req.image() {
            span.record("image", display(image));
        }
        if let Some(m) = req.pod() {
            span.record("pod", display(&m.name));
            span.record("namespace", display(&m.namespace));
            span.record("pod_uid", display(&m.uid));
        }
        Rpc { span, level }
    }

    /// Logs the entry; the returned guard logs the exit ([`Exit::done`]), or that the call was dropped
    /// before it answered (the caller went away or its deadline passed).
    pub fn enter(self) -> Exit {
        log(&self.span, self.level, Line::Entry);
        Exit {
            rpc: self,
            started: Instant::now(),
            done: false,
        }
    }

    /// Runs `call` in the span, between the entry and the exit log.
    pub async fn run<T>(self, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let span = self.span.clone();
        let mut exit = self.enter();
        let result = call.instrument(span).await;
        exit.done(result.as_ref().err());
        result
    }
}

/// The exit log of a call in progress (see [`Rpc::enter`]).
pub(super) struct Exit {
    rpc: Rpc,
    started: Instant,
    done: bool,
}

impl Exit {
    /// The call's span, for work it hands to another task.
    pub fn span(&self) -> &Span {
        &self.rpc.span
    }

    /// Logs the call's answer: its duration, and the code and message of its `error` if it failed.
    pub fn done(&mut self, error: Option<&Status>) {
        self.done = true;
        let line = Line::Exit(self.started.elapsed(), error);
        log(&self.rpc.span, self.rpc.level, line);
    }
}

impl Drop for Exit {
    fn drop(&mut self) {
        if !self.done {
            log(&self.rpc.span, self.rpc.level, Line::Dropped);
        }
    }
}

/// A line an [`Rpc`] logs.
enum Line<'a> {
    /// The call came in.
    Entry,
    /// The call answered, after this long, with this error if it failed.
    Exit(std::time::Duration, Option<&'a Status>),
    /// The call was dropped before it answered.
    Dropped,
}

/// Logs `line` in `span` at `level`.
fn log(span: &Span, level: Level, line: Line<'_>) {
    // An event's level is static too: one macro per level, each for every line.
    macro_rules! event_at {
        ($mac:ident) => {
            match line {
                Line::Entry => tracing::$mac!(parent: span, "request received"),
                Line::Exit(took, None) => tracing::$mac!(parent: span, seconds = took.as_secs_f64(), "request answered"),
                Line::Exit(took, Some(s)) => tracing::$mac!(
                    parent: span,
                    seconds = took.as_secs_f64(),
                    code = ?s.code(),
                    error = s.message(),
                    "request failed"
                ),
                Line::Dropped => tracing::$mac!(parent: span, "request dropped before it was answered"),
            }
        };
    }
    match level {
        Level::INFO => event_at!(info),
        Level::DEBUG => event_at!(debug),
        _ => event_at!(trace),
    }
}

#[cfg(test)]
#[path = "instrument_tests.rs"]
mod tests;
