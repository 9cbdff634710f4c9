//! StreamImages (Kubernetes 1.36, KEP-5825) through the real socket: with 5,000 images it answers the same
//! set as ListImages, in several messages of whole images, honouring the filter as ListImages does, and
//! follows changes. (The messages' wire format is pinned against upstream's field numbers in
//! `proto_wire.rs`.)
//!
//! The daemon's memory while it streams is a benchmark: `hack/bench-pull --api` reports it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::daemon::tmpfs::{MIB, Tmpfs};
use common::daemon::{Daemon, DaemonOptions};
use cri::image_service_client::ImageServiceClient;
use imaged::proto::runtime::v1 as cri;
use tonic::Code;
use tonic::transport::Channel;

const IMAGES: usize = 5_000;
const NAME: &str = "registry.example:5000/stream/app";

async fn client(d: &Daemon) -> ImageServiceClient<Channel> {
    let channel = imaged::uds::channel(&d.socket).await.expect("connect");
    ImageServiceClient::new(channel).max_decoding_message_size(16 << 20)
}

fn filter(image: &str) -> Option<cri::ImageFilter> {
    Some(cri::ImageFilter {
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
    })
}

async fn listed(c: &mut ImageServiceClient<Channel>, image: Option<&str>) -> Result<Vec<cri::Image>, tonic::Status> {
    let req = cri::ListImagesRequest {
        filter: image.and_then(filter),
    };
    Ok(c.list_images(req).await?.into_inner().images)
}

/// Every message of a StreamImages call, as received.
async fn streamed(
    c: &mut ImageServiceClient<Channel>,
    image: Option<&str>,
) -> Result<Vec<Vec<cri::Image>>, tonic::Status> {
    let req = cri::StreamImagesRequest {
        filter: image.and_then(filter),
    };
    let mut stream = c.stream_images(req).await?.into_inner();
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await? {
        messages.push(m.images);
    }
    Ok(messages)
}

fn by_id(mut images: Vec<cri::Image>) -> Vec<cri::Image> {
    images.sort_by(|a, b| a.id.cmp(&b.id));
    images
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_images_answers_what_list_images_does_with_5000_images() {
    let mut d = Daemon::start(DaemonOptions::default()).await;
    d.stop();
    // On a tmpfs: 5,000 durable commits cost a minute on a busy disk, and this test is not about the disk.
    let fs = Tmpfs::mount_at(&d.root, 256 * MIB);
    let tags = common::images::many_images::fill(&d.root, NAME, IMAGES);
    d.start_again().await;
    let mut c = client(&d).await;

    let list = listed(&mut c, None).await.unwrap();
    assert_eq!(list.len(), IMAGES);
    let messages = streamed(&mut c, None).await.unwrap();
    assert!(
        messages.len() > 1,
        "5,000 images come in several messages, not {}",
        messages.len()
    );
    assert!(messages.iter().all(|m| !m.is_empty()), "every message holds an image");
    let stream: Vec<cri::Image> = messages.into_iter().flatten().collect();
    assert_eq!(stream.len(), IMAGES, "each image exactly once");
    assert_eq!(by_id(stream), by_id(list.clone()), "the same images, field for field");
    let sample = &list[17];
    assert!(sample.size > 0 && !sample.repo_tags.is_empty() && !sample.repo_digests.is_empty());

    // The filter, as ListImages reads it: one image by tag, by id, none for an absent one; a bad name is
    // the same error.
    for image in [tags[4321].as_str(), sample.id.as_str()] {
        let one = listed(&mut c, Some(image)).await.unwrap();
        assert_eq!(one.len(), 1, "{image}");
        assert_eq!(streamed(&mut c, Some(image)).await.unwrap(), [one], "{image}");
    }
    let absent = format!("{NAME}:absent");
    assert!(listed(&mut c, Some(&absent)).await.unwrap().is_empty());
    assert!(
        streamed(&mut c, Some(&absent)).await.unwrap().is_empty(),
        "no image, no message"
    );
    let (list_err, stream_err) = (
        listed(&mut c, Some("Not/A Name")).await.unwrap_err(),
        streamed(&mut c, Some("Not/A Name")).await.unwrap_err(),
    );
    assert_eq!(
        (list_err.code(), stream_err.code()),
        (Code::InvalidArgument, Code::InvalidArgument)
    );
    assert_eq!(list_err.message(), stream_err.message());

    // A removal shows in the next stream (the cached list both RPCs share follows the metadata).
    c.remove_image(cri::RemoveImageRequest {
        image: filter(&tags[0]).and_then(|f| f.image),
    })
    .await
    .unwrap();
    let after: Vec<cri::Image> = streamed(&mut c, None).await.unwrap().into_iter().flatten().collect();
    assert_eq!(after.len(), IMAGES - 1);
    assert!(after.iter().all(|i| !i.repo_tags.contains(&tags[0])));
    assert_eq!(by_id(after), by_id(listed(&mut c, None).await.unwrap()));
    d.stop(); // Before the tmpfs under it goes.
    drop(fs);
}
