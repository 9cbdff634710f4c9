//! A fake container runtime: CRI `runtime.v1.RuntimeService` serving only `ListContainers`, the one RPC imaged
//! calls to learn which images containers use (every other RPC answers `Unimplemented`).
//!
//! This is the one fake edge of the GC and prune tests, named as such: a real runtime (containerd, CRI-O) would
//! need runc, pod sandboxes and a kubelet-like client to have containers at all. Everything else in those tests
//! is real. The fake is a real tonic server on a real unix socket in a temp dir; it answers with the containers
//! the test sets and counts the calls, so tests can assert that imaged asked.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use imaged::proto::runtime::v1 as cri;
use imaged::proto::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tempfile::TempDir;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    containers: Mutex<Vec<cri::Container>>,
    calls: AtomicUsize,
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl RuntimeService for Service {
    async fn list_containers(
        &self,
        _req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let containers = self.0.containers.lock().unwrap().clone();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    // imaged calls only ListContainers; the rest of the runtime is not faked.

    async fn version(&self, _req: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        Err(unimplemented("version"))
    }

    async fn run_pod_sandbox(
        &self,
        _req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        Err(unimplemented("run_pod_sandbox"))
    }

    async fn stop_pod_sandbox(
        &self,
        _req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        Err(unimplemented("stop_pod_sandbox"))
    }

    async fn remove_pod_sandbox(
        &self,
        _req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        Err(unimplemented("remove_pod_sandbox"))
    }

    async fn pod_sandbox_status(
        &self,
        _req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        Err(unimplemented("pod_sandbox_status"))
    }

    async fn list_pod_sandbox(
        &self,
        _req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        Err(unimplemented("list_pod_sandbox"))
    }

    async fn create_container(
        &self,
        _req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        Err(unimplemented("create_container"))
    }

    async fn start_container(
        &self,
        _req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        Err(unimplemented("start_container"))
    }

    async fn stop_container(
        &self,
        _req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        Err(unimplemented("stop_container"))
    }

    async fn remove_container(
        &self,
        _req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        Err(unimplemented("remove_container"))
    }

    async fn container_status(
        &self,
        _req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        Err(unimplemented("container_status"))
    }

    async fn exec_sync(&self, _req: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        Err(unimplemented("exec_sync"))
    }

    async fn container_stats(
        &self,
        _req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        Err(unimplemented("container_stats"))
    }

    async fn status(&self, _req: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        Err(unimplemented("status"))
    }
}

fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("the fake runtime serves ListContainers only, not {rpc}"))
}

/// A fake runtime serving on `<temp dir>/runtime.sock` until dropped.
pub struct FakeRuntime {
    state: Arc<State>,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl FakeRuntime {
    /// Binds the socket and serves (no containers yet).
    pub async fn start() -> FakeRuntime {
        let dir = tempfile::Builder::new()
            .prefix("imaged-fake-runtime-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("runtime.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake runtime socket");
        let state = Arc::new(State::default());
        let service = RuntimeServiceServer::new(Service(state.clone()));
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .expect("fake runtime server");
        });
        FakeRuntime {
            state,
            socket,
            task,
            _dir: dir,
        }
    }

    /// `unix:///…/runtime.sock`, for `[gc] runtime_endpoint` or `--runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Replaces the containers `ListContainers` returns.
    pub fn set_containers(&self, containers: Vec<cri::Container>) {
        *self.state.containers.lock().unwrap() = containers;
    }

    /// How many times `ListContainers` was called.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A container `id` in `state` whose image is given as imaged's image id (`image_id`, newer runtimes) and
/// as a digested reference (`image_ref`); either may be empty.
pub fn container(id: &str, image_id: &str, image_ref: &str, state: cri::ContainerState) -> cri::Container {
    cri::Container {
        id: id.to_string(),
        pod_sandbox_id: format!("sandbox-{id}"),
        image_id: image_id.to_string(),
        image_ref: image_ref.to_string(),
        state: state as i32,
        ..Default::default()
    }
}

/// A container `id` that names its image only in its `ImageSpec` (older runtimes), e.g. by tag.
pub fn container_by_spec(id: &str, image: &str, state: cri::ContainerState) -> cri::Container {
    cri::Container {
        id: id.to_string(),
        pod_sandbox_id: format!("sandbox-{id}"),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        state: state as i32,
        ..Default::default()
    }
}
