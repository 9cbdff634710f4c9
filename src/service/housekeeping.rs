//! The daemon's background work: persisting last-use times, the periodic image GC and the orphan sweep.
//! Owned by a guard that stops it when dropped (at shutdown, after which a final flush runs).

use std::sync::Arc;
use std::time::Duration;

use super::ImageService;

/// How often last-use times reach the disk.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// The background loop; stopped when dropped.
pub struct Housekeeping {
    task: tokio::task::JoinHandle<()>,
    service: Arc<ImageService>,
}

impl Housekeeping {
    /// Starts the loop: flush every 10 s, GC and sweep every `period`.
    pub fn start(service: Arc<ImageService>, period: Duration) -> Housekeeping {
        let s = service.clone();
        let task = tokio::spawn(async move {
            let mut flush = tokio::time::interval(FLUSH_EVERY);
            let mut gc = tokio::time::interval(period.max(Duration::from_secs(1)));
            gc.tick().await; // The first tick is immediate; let the daemon settle first.
            loop {
                tokio::select! {
                    _ = flush.tick() => s.flush_last_use(),
                    _ = gc.tick() => {
                        s.flush_last_use();
                        match s.gc(false).await {
                            Ok(out) if !out.removed.is_empty() => tracing::info!(images = out.removed.len(), freed_bytes = out.freed_bytes, "image garbage collection"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
                        }
                        let (removed, freed, ingests) = s.collector.sweep().await;
                        if removed + ingests > 0 {
                            tracing::info!(removed, freed_bytes = freed, ingests, "swept unreferenced content");
                        }
                    }
                }
            }
        });
        Housekeeping { task, service }
    }
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.task.abort();
        self.service.flush_last_use();
    }
}

impl ImageService {
    /// Persists last-use times (cheap when nothing changed).
    pub fn flush_last_use(&self) {
        if let Err(e) = self.stores.metadata.flush() {
            tracing::warn!(error = %e, "could not persist image last-use times");
        }
    }
}
