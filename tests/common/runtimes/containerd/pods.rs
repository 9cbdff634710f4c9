//! Running pods on a test [`Containerd`] through its CRI socket, as kubelet would: host-network pod
//! sandboxes (no CNI), containers from an image reference with a command, their exit, ExecSync, and
//! listing (their output is read in `logs.rs`). Every helper panics with containerd's log on failure,
//! except [`Containerd::create_container`] and [`Containerd::start_container`], which return the status
//! for tests that expect a refusal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imaged::proto::runtime::v1 as cri;
use tonic::Status;

use super::Containerd;
use crate::common::images::busybox::BUSYBOX;

/// How long a container may take to exit in [`Containerd::wait_exit`].
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where [`ContainerSpec::probe`] mounts the host's static busybox in a container.
pub const PROBE_BUSYBOX: &str = "/.imaged-probe/busybox";

/// A pod sandbox: its id and the config it was created with (CreateContainer needs it again).
#[derive(Clone, Debug)]
pub struct Pod {
    /// The sandbox id.
    pub id: String,
    /// Its config.
    pub config: cri::PodSandboxConfig,
}

impl Pod {
    /// The directory its containers' logs are written to.
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }
}

/// What container to create.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// Its name in the pod (unique there); also its log file name, `<name>.log`.
    pub name: String,
    /// `ImageSpec.image`: an image id (`sha256:…`, kubelet passes PullImage's `image_ref`) or a reference.
    pub image: String,
    /// `ImageSpec.user_specified_image`: the name the user asked for.
    pub user_specified_image: String,
    /// `command` (the image's entrypoint when empty).
    pub command: Vec<String>,
    /// `args` (the image's cmd when empty).
    pub args: Vec<String>,
    /// Whether the host's `/bin/busybox` is bind-mounted read-only at [`PROBE_BUSYBOX`].
    pub probe: bool,
}

impl ContainerSpec {
    /// A container `name` from `image`, with the image's own entrypoint and cmd.
    pub fn new(name: &str, image: &str) -> Self {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    /// Sets `user_specified_image`.
    pub fn user_specified_image(mut self, name: &str) -> Self {
        self.user_specified_image = name.into();
        self
    }

    /// Sets `command`.
    pub fn command(mut self, command: &[&str]) -> Self {
        self.command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets `args`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs `script` with the image's `/bin/sh -c`.
    pub fn shell(self, script: &str) -> Self {
        self.command(&["/bin/sh", "-c", script])
    }

    /// Mounts the host's static busybox at [`PROBE_BUSYBOX`], so that any image, even one without a shell,
    /// can be inspected from inside (see `inside.rs`).
    pub fn probe(mut self) -> Self {
        self.probe = true;
        self
    }
}

fn namespaces() -> Option<cri::NamespaceOption> {
    Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    })
}

impl Containerd {
    /// Runs a host-network pod sandbox `name` (unique in this instance) in this instance's cgroup parent,
    /// logging to `<temp dir>/pods/<name>`; containerd pulls its `sandbox_image` if it lacks it.
    pub async fn run_pod(&self, name: &str) -> Pod {
        self.run_pod_with(name, None).await
    }

    /// [`Containerd::run_pod`] with CRI `userns_options` (e.g. mode POD and a mapping, as kubelet sends
    /// for `hostUsers: false`), then in a network namespace of its own (start containerd with
    /// `pod_network`); the pod's containers get the same namespace options, as from kubelet.
    pub async fn run_pod_with(&self, name: &str, userns: Option<cri::UserNamespace>) -> Pod {
        let log_dir = self.dir().join("pods").join(name);
        std::fs::create_dir_all(&log_dir).expect("create pod log dir");
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "imaged-test".into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    // containerd pins a pod's user namespace through its network namespace.
                    namespace_options: namespaces().map(|n| cri::NamespaceOption {
                        network: if userns.is_some() {
                            cri::NamespaceMode::Pod as i32
                        } else {
                            n.network
                        },
                        userns_options: userns,
                        ..n
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = match self
            .runtime()
            .await
            .expect("connect to containerd")
            .run_pod_sandbox(req)
            .await
        {
            Ok(r) => r.into_inner().pod_sandbox_id,
            Err(e) => panic!("RunPodSandbox {name}: {e}; containerd log:\n{}", self.log()),
        };
        self.sandboxes.lock().expect("sandbox list").push(id.clone());
        Pod { id, config }
    }

    /// CreateContainer of `spec` in `pod`; returns the container id, or containerd's refusal.
    pub async fn create_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<String, Status> {
        let mounts = spec
            .probe
            .then(|| cri::Mount {
                container_path: PROBE_BUSYBOX.into(),
                host_path: BUSYBOX.into(),
                readonly: true,
                ..Default::default()
            })
            .into_iter()
            .collect();
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: spec.name.clone(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: spec.image.clone(),
                user_specified_image: spec.user_specified_image.clone(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            mounts,
            log_path: format!("{}.log", spec.name),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: pod
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.security_context.as_ref())
                        .and_then(|s| s.namespace_options.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        let mut c = self.runtime().await.expect("connect to containerd");
        Ok(c.create_container(req).await?.into_inner().container_id)
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let req = cri::StartContainerRequest {
            container_id: id.into(),
        };
        self.runtime()
            .await
            .expect("connect to containerd")
            .start_container(req)
            .await?;
        Ok(())
    }

    /// Creates and starts `spec` in `pod`; returns the container id.
    pub async fn run_container(&self, pod: &Pod, spec: &ContainerSpec) -> String {
        let id = match self.create_container(pod, spec).await {
            Ok(id) => id,
            Err(e) => panic!(
                "CreateContainer {} ({}): {e}; containerd log:\n{}",
                spec.name,
                spec.image,
                self.log()
            ),
        };
        if let Err(e) = self.start_container(&id).await {
            panic!(
                "StartContainer {} ({}): {e}; containerd log:\n{}",
                spec.name,
                spec.image,
                self.log()
            );
        }
        id
    }

    /// Runs `spec` in `pod` to its end: returns its exit code and its stdout.
    pub async fn run_to_exit(&self, pod: &Pod, spec: &ContainerSpec) -> (i32, String) {
        let id = self.run_container(pod, spec).await;
        let code = self.wait_exit(&id).await;
        (code, self.output(&id).await)
    }

    /// ContainerStatus of `id`.
    pub async fn container_status(&self, id: &str) -> cri::ContainerStatus {
        let req = cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        match self
            .runtime()
            .await
            .expect("connect to containerd")
            .container_status(req)
            .await
        {
            Ok(r) => r.into_inner().status.expect("ContainerStatus without status"),
            Err(e) => panic!("ContainerStatus {id}: {e}; containerd log:\n{}", self.log()),
        }
    }

    /// Waits (up to 60 s) until container `id` has exited; returns its exit code.
    pub async fn wait_exit(&self, id: &str) -> i32 {
        let started = Instant::now();
        loop {
            let status = self.container_status(id).await;
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status.exit_code;
            }
            assert!(
                started.elapsed() < EXIT_TIMEOUT,
                "container {id} still {:?} after {EXIT_TIMEOUT:?}",
                cri::ContainerState::try_from(status.state)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ExecSync `cmd` in running container `id` (60 s timeout); panics if the call fails, not if the
    /// command does (see `exit_code`).
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        };
        match self
            .runtime()
            .await
            .expect("connect to containerd")
            .exec_sync(req)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => panic!("ExecSync {cmd:?} in {id}: {e}; containerd log:\n{}", self.log()),
        }
    }

    /// Every container (all pods, all states).
    pub async fn list_containers(&self) -> Vec<cri::Container> {
        let req = cri::ListContainersRequest { filter: None };
        let mut c = self.runtime().await.expect("connect to containerd");
        c.list_containers(req)
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
    }

    /// PodSandboxStatus of sandbox `id`.
    pub async fn pod_status(&self, id: &str) -> cri::PodSandboxStatus {
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        match self
            .runtime()
            .await
            .expect("connect to containerd")
            .pod_sandbox_status(req)
            .await
        {
            Ok(r) => r.into_inner().status.expect("PodSandboxStatus without status"),
            Err(e) => panic!("PodSandboxStatus {id}: {e}; containerd log:\n{}", self.log()),
        }
    }

    /// Every pod sandbox.
    pub async fn list_pods(&self) -> Vec<cri::PodSandbox> {
        let req = cri::ListPodSandboxRequest { filter: None };
        let mut c = self.runtime().await.expect("connect to containerd");
        c.list_pod_sandbox(req)
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
    }

    /// StopContainer (`timeout` seconds of grace, then SIGKILL) and RemoveContainer.
    pub async fn remove_container(&self, id: &str, timeout: i64) {
        let mut c = self.runtime().await.expect("connect to containerd");
        let stop = cri::StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        c.stop_container(stop)
            .await
            .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
        let remove = cri::RemoveContainerRequest {
            container_id: id.into(),
        };
        c.remove_container(remove)
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }

    /// StopPodSandbox and RemovePodSandbox of sandbox `id`, which remove its containers too.
    pub async fn remove_pod(&self, id: &str) {
        let mut c = self.runtime().await.expect("connect to containerd");
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        c.stop_pod_sandbox(stop)
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
        let remove = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        c.remove_pod_sandbox(remove)
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
    }

    /// Removes every pod sandbox (and so every container) through CRI.
    pub async fn remove_all_pods(&self) {
        for pod in self.list_pods().await {
            self.remove_pod(&pod.id).await;
        }
    }
}
