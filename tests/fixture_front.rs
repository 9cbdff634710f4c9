//! Proves issue 22's test front right against the real registry: the fault proxy's per-connection rate cap
//! (`common::registry::fault_proxy::pace`), `Range` passed through or dropped, connections cut at a total of
//! blob bytes or after N bytes, the per-request accounting, and the big one-layer images of
//! `common::images::big` as the registry serves them back. The client is plain `reqwest`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::images::big::{Fill, big_layer_image, build_big_image, push_big_image};
use common::images::image::{Compression, random_bytes, sha256_digest};
use common::registry::fault_proxy::pace::{BURST, Pacer, max_piece};
use common::registry::fault_proxy::{Fault, FaultProxy};
use common::registry::push::push_blob;
use common::registry::{RegistryOptions, TestRegistry};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// A registry holding one 2 MiB random blob in `front/blob`, and a proxy in front of it.
async fn front() -> (TestRegistry, FaultProxy, Vec<u8>, String) {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let data = random_bytes(22, 2 * MIB);
    let digest = push_blob(&reg.addr(), "front/blob", &data, None).await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let url = format!("{}/v2/front/blob/blobs/{digest}", proxy.url());
    (reg, proxy, data, url)
}

/// GETs `url` (with `range`), returning the status, the body bytes received and whether the body ended
/// early (an error before `Content-Length` was reached).
async fn get(url: &str, range: Option<&str>) -> (u16, Vec<u8>, bool) {
    let mut req = reqwest::Client::new().get(url).timeout(Duration::from_secs(30));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => return (status, body, false),
            Err(_) => return (status, body, true),
        }
    }
}

#[test]
fn the_pacer_pays_for_bytes_before_they_go() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut p = Pacer::new(1000);
    assert_eq!(p.pay(500, t0), t0 + ms(500));
    assert_eq!(
        p.pay(500, t0 + ms(500)),
        t0 + ms(1000),
        "sent on time: due 500 ms later"
    );
    // Woke 30 ms late: the next bytes are due after the previous ones were, not after the wake-up.
    assert_eq!(p.pay(100, t0 + ms(1030)), t0 + ms(1100));
    // Idle for 10 s: only the bucket's depth of credit is kept.
    let late = t0 + Duration::from_secs(10);
    assert_eq!(p.pay(100, late), late - BURST + ms(100));
    assert_eq!(max_piece(48 << 20), 64 * 1024);
    assert_eq!(max_piece(4 << 20), 52_428);
    assert_eq!(max_piece(1), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_connection_gets_the_cap_and_two_get_it_each() {
    let (_reg, proxy, data, url) = front().await;
    proxy.cap_per_connection(Some(4 * MIB as u64));
    let t = Instant::now();
    let (status, body, cut) = get(&url, None).await;
    let one = t.elapsed().as_secs_f64();
    assert_eq!((status, cut), (200, false));
    assert!(body == data, "the capped body is the blob");
    // The floor is the cap (never faster); the ceiling leaves room for a loaded machine.
    assert!((0.47..0.8).contains(&one), "2 MiB at 4 MiB/s took {one:.3} s");

    let t = Instant::now();
    let (a, b) = tokio::join!(
        async {
            get(&url, None).await;
            t.elapsed().as_secs_f64()
        },
        async {
            get(&url, None).await;
            t.elapsed().as_secs_f64()
        }
    );
    assert!(
        (0.47..0.9).contains(&a) && (0.47..0.9).contains(&b),
        "two connections in parallel, each 2 MiB at 4 MiB/s: {a:.3} s and {b:.3} s"
    );
    assert_eq!(proxy.max_concurrent_blob_gets(), 2, "{:?}", proxy.requests());
    assert_eq!(proxy.blob_body_bytes(), 3 * data.len() as u64);

    proxy.cap_per_connection(None);
    let t = Instant::now();
    get(&url, None).await;
    assert!(t.elapsed().as_secs_f64() < one / 2.0, "uncapped: {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_pass_through_as_206_unless_the_front_ignores_them() {
    let (_reg, proxy, data, url) = front().await;
    let (status, body, _) = get(&url, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206, "docker-registry honours Range on blobs");
    assert!(body == data[1000..2000]);
    let (status, body, _) = get(&url, Some("bytes=2000000-")).await;
    assert_eq!(status, 206);
    assert!(body == data[2_000_000..]);

    proxy.ignore_range(true);
    let (status, body, cut) = get(&url, Some("bytes=1000-1999")).await;
    assert_eq!((status, cut), (200, false), "Range dropped: the whole blob");
    assert!(body == data);

    let log = proxy.requests();
    let ranges: Vec<Vec<&str>> = log.iter().map(|r| r.header("range")).collect();
    assert_eq!(
        ranges,
        [vec!["bytes=1000-1999"], vec!["bytes=2000000-"], vec!["bytes=1000-1999"]],
        "the log shows the Range the client sent"
    );
    let bytes: Vec<u64> = log.iter().map(|r| r.body_bytes).collect();
    assert_eq!(bytes, [1000, data.len() as u64 - 2_000_000, data.len() as u64]);
    assert!(log.iter().all(|r| r.finished.is_some() && !r.cut), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_all_at_closes_every_blob_response_in_flight_at_the_total_once() {
    let (_reg, proxy, data, url) = front().await;
    // Paced, so that both responses are in flight when the total is reached.
    proxy.cap_per_connection(Some(4 * MIB as u64));
    proxy.cut_all_at(MIB as u64);
    assert!(proxy.cut_armed());
    let ((s1, b1, cut1), (s2, b2, cut2)) = tokio::join!(get(&url, None), get(&url, None));
    assert_eq!((s1, s2), (200, 200), "the heads came");
    assert!(
        cut1 && cut2,
        "both bodies end early: {} and {} bytes",
        b1.len(),
        b2.len()
    );
    assert_eq!(b1.len() + b2.len(), MIB, "cut at exactly the total");
    assert!(
        b1 == data[..b1.len()] && b2 == data[..b2.len()],
        "a prefix of the blob each"
    );
    assert!(!proxy.cut_armed(), "fired once");
    assert_eq!(proxy.blob_body_bytes(), MIB as u64);
    assert_eq!(proxy.max_concurrent_blob_gets(), 2);
    let log = proxy.requests();
    assert!(log.iter().all(|r| r.cut && r.finished.is_some()), "{log:?}");
    let logged: Vec<u64> = log.iter().map(|r| r.body_bytes).collect();
    let mut got = vec![b1.len() as u64, b2.len() as u64];
    let mut logged_sorted = logged.clone();
    got.sort();
    logged_sorted.sort();
    assert_eq!(logged_sorted, got, "the log counts what the clients got");

    // Later requests pass.
    proxy.cap_per_connection(None);
    let (status, body, cut) = get(&url, None).await;
    assert_eq!((status, cut), (200, false));
    assert!(body == data);
    assert!(!proxy.requests()[2].cut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_cut_forwards_n_bytes_then_closes() {
    let (_reg, proxy, data, url) = front().await;
    proxy.set_for("/blobs/", Fault::Cut(1000));
    let (status, body, cut) = get(&url, None).await;
    assert_eq!((status, cut, body.len()), (200, true, 1000));
    assert!(body == data[..1000]);
    let r = &proxy.requests()[0];
    assert!(r.cut && r.finished.is_some() && r.body_bytes == 1000, "{r:?}");
}

/// Reads the blob through the proxy, checks its digest, and returns the tar (inflated if need be).
async fn served_tar(proxy: &FaultProxy, repo: &str, digest: &str, compression: Compression) -> Vec<u8> {
    let url = format!("{}/v2/{repo}/blobs/{digest}", proxy.url());
    let (status, blob, cut) = get(&url, None).await;
    assert_eq!((status, cut), (200, false));
    assert_eq!(sha256_digest(&blob), digest, "the served blob has the layer's digest");
    match compression {
        Compression::None => blob,
        Compression::Gzip => {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(blob.as_slice())
                .read_to_end(&mut tar)
                .unwrap();
            tar
        }
        Compression::Zstd => zstd::decode_all(blob.as_slice()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_one_layer_images_are_served_as_built() {
    let reg = TestRegistry::start(RegistryOptions::default()).await;
    let proxy = FaultProxy::start(&reg.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    for (i, (compression, fill)) in [
        (Compression::None, Fill::Random),
        (Compression::Gzip, Fill::Random),
        (Compression::Gzip, Fill::Weights),
    ]
    .into_iter()
    .enumerate()
    {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir(&sub).unwrap();
        // Small: the test binary is a debug build (its SHA-256 and deflate run ~10x slower than release).
        let size = 8 * MIB as u64 + 123;
        let t = Instant::now();
        let big = build_big_image(&sub, size, compression, fill, 5);
        let built = t.elapsed();
        let t = Instant::now();
        push_big_image(&reg.addr(), "front/big", &format!("v{i}"), &big, None).await;
        eprintln!(
            "{compression:?} {fill:?}: {} MiB file, blob {} bytes: built in {built:?}, pushed in {:?}",
            size >> 20,
            big.blob_size,
            t.elapsed()
        );
        assert_eq!(std::fs::metadata(&big.blob_path).unwrap().len(), big.blob_size);
        let ratio = big.blob_size as f64 / big.tar_size as f64;
        match fill {
            Fill::Random => assert!(ratio > 0.99, "incompressible: {ratio:.3}"),
            Fill::Weights => assert!((0.7..0.9).contains(&ratio), "weights-like gzip: {ratio:.3}"),
        }
        let tar = served_tar(&proxy, "front/big", big.layer_digest(), compression).await;
        assert_eq!(tar.len() as u64, big.tar_size);
        assert_eq!(
            sha256_digest(&tar),
            big.image.layers[0].diff_id,
            "the diff id is the tar's"
        );
        let mut archive = tar::Archive::new(tar.as_slice());
        let sizes: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.size())
            })
            .collect();
        assert_eq!(sizes, [("models/".to_string(), 0), (big.file_path.clone(), size)]);
        let manifest: serde_json::Value = serde_json::from_slice(&big.image.manifest).unwrap();
        assert_eq!(manifest["layers"][0]["size"], big.blob_size);
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            compression.media_type(common::images::image::MediaStyle::Oci)
        );
        let url = format!("{}/v2/front/big/manifests/v{i}", proxy.url());
        let served = reqwest::Client::new()
            .get(url)
            .header("accept", common::images::image::OCI_MANIFEST)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&served))),
            big.image.manifest_digest
        );
    }
    // Same seed and size, same bytes; the image's own temp dir goes with it.
    let a = big_layer_image(MIB as u64, Compression::None);
    let b = big_layer_image(MIB as u64, Compression::None);
    assert_eq!(a.layer_digest(), b.layer_digest());
    let path = a.blob_path.clone();
    drop(a);
    assert!(!path.exists());
}
