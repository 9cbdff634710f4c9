//! A container's output, read from the log file containerd's CRI plugin writes for it (the format kubelet
//! reads: one record per line, `<RFC 3339 time> <stream> <P|F> <text>`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imaged::proto::runtime::v1 as cri;

use super::Containerd;

/// How long containerd may keep an exited container's log open (copying what is left of its output).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// One line of a CRI container log (`<RFC 3339 time> <stream> <P|F> <text>`), partial lines joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line without its newline.
    pub text: String,
}

/// Parses a CRI log file: each record is `<time> <stream> <tag> <text>`, where tag `P` marks a partial line
/// continued by the next record of the same stream and `F` a full one.
pub fn parse_cri_log(log: &str) -> Vec<LogLine> {
    let mut out = Vec::new();
    let mut partial: Vec<(String, String)> = Vec::new();
    for record in log.lines() {
        let mut parts = record.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("malformed CRI log record {record:?}");
        };
        let text = parts.next().unwrap_or("");
        let pos = partial.iter().position(|(s, _)| s == stream);
        let mut line = pos.map(|i| partial.remove(i).1).unwrap_or_default();
        line.push_str(text);
        match tag {
            "P" => partial.push((stream.to_string(), line)),
            "F" => out.push(LogLine {
                stream: stream.to_string(),
                text: line,
            }),
            other => panic!("unknown CRI log tag {other:?} in {record:?}"),
        }
    }
    out.extend(partial.into_iter().map(|(stream, text)| LogLine { stream, text }));
    out
}

impl Containerd {
    /// The log records of container `id`. After it exited, waits until containerd has closed the log file,
    /// so the output is complete (containerd reports the exit before its copy of the output ends).
    pub async fn logs(&self, id: &str) -> Vec<LogLine> {
        let status = self.container_status(id).await;
        let path = PathBuf::from(&status.log_path);
        if status.state == cri::ContainerState::ContainerExited as i32 {
            let started = Instant::now();
            while self.has_open(&path) {
                assert!(
                    started.elapsed() < CLOSE_TIMEOUT,
                    "containerd keeps {} open",
                    path.display()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        parse_cri_log(&text)
    }

    /// The stdout of container `id`, each line ended by `\n`.
    pub async fn output(&self, id: &str) -> String {
        self.logs(id)
            .await
            .into_iter()
            .filter(|l| l.stream == "stdout")
            .map(|l| l.text + "\n")
            .collect()
    }

    /// Whether the running containerd has `path` open.
    fn has_open(&self, path: &Path) -> bool {
        let Some(pid) = self.pid() else { return false };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
    }
}
