//! One soak client: a loop of random CRI and imaged.v1 calls over its own connection to the real socket,
//! each answer checked against what the client knows (the catalog) and what the ledger says others did.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use imaged::proto::imaged::v1::images_client::ImagesClient;
use imaged::proto::runtime::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

use super::Shared;
use super::catalog::Tag;
use super::classify::{Class, Failure, Rpc, classify};

/// A call that has not answered after this long is a finding (`hung`), not a slow call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(240);

/// The operations and their relative frequencies.
const MIX: [(Op, u64); 7] = [
    (Op::Pull, 30),
    (Op::Remove, 14),
    (Op::Status, 22),
    (Op::List, 14),
    (Op::FsInfo, 10),
    (Op::Gc, 6),
    (Op::Prune, 4),
];

#[derive(Clone, Copy, Debug)]
enum Op {
    Pull,
    Remove,
    Status,
    List,
    FsInfo,
    Gc,
    Prune,
}

/// A small deterministic PRNG (xorshift64*), one per client.
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One client.
pub struct Client {
    pub(super) n: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) rng: Rng,
    cri: Option<ImageServiceClient<Channel>>,
    imaged: Option<ImagesClient<Channel>>,
    epoch: u64,
}

/// What a call gave: its interval and its result.
pub(super) struct Answer<T> {
    pub(super) issued: f64,
    pub(super) answered: f64,
    pub(super) result: Result<T, tonic::Status>,
}

impl Client {
    /// Client number `n`.
    pub fn new(n: usize, shared: Arc<Shared>) -> Client {
        let seed = shared.seed ^ (n as u64 + 1);
        Client {
            n,
            shared,
            rng: Rng::new(seed),
            cri: None,
            imaged: None,
            epoch: u64::MAX,
        }
    }

    /// Runs until the run is told to stop.
    pub async fn run(mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            if !self.wait_for_daemon().await {
                break;
            }
            let pick = self.rng.next() % MIX.iter().map(|(_, w)| w).sum::<u64>();
            let mut acc = 0;
            let op = MIX
                .iter()
                .find(|(_, w)| {
                    acc += w;
                    pick < acc
                })
                .map(|(op, _)| *op)
                .unwrap();
            let tag = self
                .shared
                .catalog
                .tag(self.shared.catalog.pick(self.rng.next()))
                .clone();
            match op {
                Op::Pull => self.pull(&tag).await,
                Op::Remove => self.remove(&tag).await,
                Op::Status => {
                    let verbose = self.rng.chance(50);
                    self.status(&tag, verbose).await;
                }
                Op::List => {
                    self.list().await;
                }
                Op::FsInfo => self.fs_info().await,
                Op::Gc => self.gc().await,
                Op::Prune => self.prune().await,
            }
        }
    }

    /// Waits while the daemon is down (restart); reconnects after it. `false` when the run stops meanwhile.
    async fn wait_for_daemon(&mut self) -> bool {
        let mut gate = self.shared.gate.subscribe();
        let epoch = loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            let g = *gate.borrow_and_update();
            if let Some(epoch) = g {
                break epoch;
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), gate.changed()).await;
        };
        if epoch != self.epoch || self.cri.is_none() {
            match imaged::cli::channel(&self.shared.socket).await {
                Ok(ch) => {
                    self.cri = Some(ImageServiceClient::new(ch.clone()));
                    self.imaged = Some(ImagesClient::new(ch));
                    self.epoch = epoch;
                }
                Err(e) => {
                    self.violation("connect", format!("cannot connect to the daemon's socket: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return !self.shared.stop.load(Ordering::SeqCst);
                }
            }
        }
        true
    }

    /// Issues one call: counts it in flight, times it, records its latency and classifies its failure.
    pub(super) async fn call<T, F, Fut>(&mut self, rpc: Rpc, id: Option<&str>, what: &str, f: F) -> Answer<T>
    where
        F: FnOnce(ImageServiceClient<Channel>, ImagesClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let s = self.shared.clone();
        let (c, i) = (self.cri.clone().unwrap(), self.imaged.clone().unwrap());
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        let issued = s.clock.now();
        if *s.gate.borrow() != Some(self.epoch) {
            // The daemon went down (or came back) since this client's last call: a follow-up check is not
            // issued to a dead or new daemon; the client reconnects at its next operation.
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Answer {
                issued,
                answered: issued,
                result: Err(tonic::Status::aborted("soak: not issued, the daemon restarts")),
            };
        }
        let result = match tokio::time::timeout(CALL_TIMEOUT, f(c, i)).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "soak: no answer within {CALL_TIMEOUT:?} (hung call)"
            ))),
        };
        let answered = s.clock.now();
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        let d = *s.disturbances.lock().unwrap();
        s.latencies
            .record(rpc, answered - issued, result.is_ok(), d.steady(issued, answered));
        if let Err(st) = &result {
            let f = Failure {
                rpc,
                id,
                issued,
                answered,
                code: st.code(),
                message: st.message(),
            };
            let class = classify(&f, &d, &s.ledger);
            let detail = format!(
                "t={issued:.3}..{answered:.3}s client {} {} {what}: {:?}: {}",
                self.n,
                rpc.name(),
                st.code(),
                st.message()
            );
            s.failures.add(&class, detail);
        }
        Answer {
            issued,
            answered,
            result,
        }
    }

    /// Records a broken invariant.
    pub(super) fn violation(&self, check: &str, detail: String) {
        let t = self.shared.clock.now();
        let class = Class {
            name: format!("invariant: {check}"),
            expected: false,
        };
        self.shared
            .failures
            .add(&class, format!("t={t:.3}s client {}: {detail}", self.n));
    }

    pub(super) fn reference(&self, tag: &Tag) -> String {
        format!("{}/{}", self.shared.registry_host, tag.path)
    }
}
