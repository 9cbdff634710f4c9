#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Pins the protobuf wire format of the CRI messages imaged serves.
//!
//! kubelet and crictl only agree with us on field numbers and wire types, never on names. A renumbered or
//! retyped field in `proto/runtime/v1/api.proto` still compiles and still round-trips through our own types,
//! but would silently drop or garble what a real client sends. So the expected bytes below are written by
//! hand from the upstream field numbers and wire types, not produced by the code under test.
//!
//! Tag byte = (field number << 3) | wire type; wire types: 0 VARINT, 1 I64, 2 LEN, 5 I32.

use std::collections::HashMap;
use std::fmt::Debug;

use imaged::proto::runtime::v1::{
    AuthConfig, FilesystemIdentifier, FilesystemUsage, Image, ImageFilter, ImageFsInfoResponse, ImageSpec, Int64Value,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PullImageRequest, PullImageResponse, StreamImagesRequest, StreamImagesResponse, UInt64Value,
    WindowsPodSandboxConfig, WindowsSandboxSecurityContext,
};
use prost::Message;

/// Asserts that `msg` encodes to exactly `wire` and that `wire` decodes back to `msg`.
fn assert_wire<M: Message + Default + PartialEq + Debug>(msg: &M, wire: &[u8]) {
    assert_eq!(msg.encode_to_vec(), wire, "encoding of {msg:?}");
    assert_eq!(&M::decode(wire).expect("decode"), msg);
}

fn image_spec() -> ImageSpec {
    ImageSpec {
        image: "busybox".into(),
        // A single entry: map entries are encoded in hash order.
        annotations: HashMap::from([("k".into(), "v".into())]),
        user_specified_image: "bb".into(),
        runtime_handler: "runc".into(),
        image_ref: "sha".into(),
    }
}

#[rustfmt::skip]
const IMAGE_SPEC_WIRE: &[u8] = &[
    0x0a, 0x07, b'b', b'u', b's', b'y', b'b', b'o', b'x', // field 1 (image), LEN, 7 bytes
    0x12, 0x06,                                           // field 2 (annotations), LEN, 6 bytes: one map entry
        0x0a, 0x01, b'k',                                 //   entry field 1 (key), LEN, 1 byte
        0x12, 0x01, b'v',                                 //   entry field 2 (value), LEN, 1 byte
    0x92, 0x01, 0x02, b'b', b'b',                         // field 18 (user_specified_image), LEN (tag 146 = varint 0x92 0x01), 2 bytes
    0x9a, 0x01, 0x04, b'r', b'u', b'n', b'c',             // field 19 (runtime_handler), LEN (tag 154), 4 bytes
    0xa2, 0x01, 0x03, b's', b'h', b'a',                   // field 20 (image_ref), LEN (tag 162), 3 bytes
];

#[test]
fn image_spec_wire_format() {
    assert_wire(&image_spec(), IMAGE_SPEC_WIRE);
}

#[test]
fn pull_image_request_wire_format() {
    let req = PullImageRequest {
        image: Some(ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        auth: Some(AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        }),
        sandbox_config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "pod".into(),
                uid: "1".into(),
                namespace: "ns".into(),
                attempt: 2,
            }),
            ..Default::default()
        }),
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x09,                                               // field 1 (image: ImageSpec), LEN, 9 bytes
            0x0a, 0x07, b'b', b'u', b's', b'y', b'b', b'o', b'x', //   field 1 (image), LEN, 7 bytes
        0x12, 0x06,                                               // field 2 (auth: AuthConfig), LEN, 6 bytes
            0x0a, 0x01, b'u',                                     //   field 1 (username), LEN, 1 byte
            0x12, 0x01, b'p',                                     //   field 2 (password), LEN, 1 byte
        0x1a, 0x10,                                               // field 3 (sandbox_config: PodSandboxConfig), LEN, 16 bytes
            0x0a, 0x0e,                                           //   field 1 (metadata: PodSandboxMetadata), LEN, 14 bytes
                0x0a, 0x03, b'p', b'o', b'd',                     //     field 1 (name), LEN, 3 bytes
                0x12, 0x01, b'1',                                 //     field 2 (uid), LEN, 1 byte
                0x1a, 0x02, b'n', b's',                           //     field 3 (namespace), LEN, 2 bytes
                0x20, 0x02,                                       //     field 4 (attempt), VARINT 2
    ];
    assert_wire(&req, wire);
}

#[test]
fn sandbox_config_platform_trees_wire_format() {
    // Deep fields of the linux and windows subtrees, so a kubelet's full sandbox_config decodes into typed
    // fields rather than unknown bytes.
    let config = PodSandboxConfig {
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: Some(WindowsPodSandboxConfig {
            security_context: Some(WindowsSandboxSecurityContext {
                host_process: true,
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x42, 0x06,             // field 8 (linux: LinuxPodSandboxConfig), LEN, 6 bytes
            0x12, 0x04,         //   field 2 (security_context: LinuxSandboxSecurityContext), LEN, 4 bytes
                0x0a, 0x02,     //     field 1 (namespace_options: NamespaceOption), LEN, 2 bytes
                    0x08, 0x02, //       field 1 (network), VARINT 2 (NODE)
        0x4a, 0x04,             // field 9 (windows: WindowsPodSandboxConfig), LEN, 4 bytes
            0x0a, 0x02,         //   field 1 (security_context: WindowsSandboxSecurityContext), LEN, 2 bytes
                0x18, 0x01,     //     field 3 (host_process), VARINT 1
    ];
    assert_wire(&config, wire);
}

#[test]
fn image_wire_format() {
    let image = Image {
        id: "abc".into(),
        repo_tags: vec!["bb:1".into()],
        repo_digests: vec!["bb@s:0".into()],
        size: 300,
        uid: Some(Int64Value { value: 1000 }),
        // uid and username are exclusive in meaning, but both are pinned on the wire here.
        username: "app".into(),
        spec: Some(ImageSpec {
            image: "abc".into(),
            ..Default::default()
        }),
        pinned: true,
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x03, b'a', b'b', b'c',                        // field 1 (id), LEN, 3 bytes
        0x12, 0x04, b'b', b'b', b':', b'1',                  // field 2 (repo_tags), LEN, 4 bytes
        0x1a, 0x06, b'b', b'b', b'@', b's', b':', b'0',      // field 3 (repo_digests), LEN, 6 bytes
        0x20, 0xac, 0x02,                                    // field 4 (size), VARINT 300
        0x2a, 0x03,                                          // field 5 (uid: Int64Value), LEN, 3 bytes
            0x08, 0xe8, 0x07,                                //   field 1 (value), VARINT 1000
        0x32, 0x03, b'a', b'p', b'p',                        // field 6 (username), LEN, 3 bytes
        0x3a, 0x05,                                          // field 7 (spec: ImageSpec), LEN, 5 bytes
            0x0a, 0x03, b'a', b'b', b'c',                    //   field 1 (image), LEN, 3 bytes
        0x40, 0x01,                                          // field 8 (pinned), VARINT 1
    ];
    assert_wire(&image, wire);
}

#[test]
fn stream_images_wire_format() {
    // Kubernetes 1.36: StreamImagesRequest { ImageFilter filter = 1 }, StreamImagesResponse { repeated Image
    // images = 1 }, the same shapes as ListImages'.
    let req = StreamImagesRequest {
        filter: Some(ImageFilter {
            image: Some(ImageSpec {
                image: "bb".into(),
                ..Default::default()
            }),
        }),
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x06,                     // field 1 (filter: ImageFilter), LEN, 6 bytes
            0x0a, 0x04,                 //   field 1 (image: ImageSpec), LEN, 4 bytes
                0x0a, 0x02, b'b', b'b', //     field 1 (image), LEN, 2 bytes
    ];
    assert_wire(&req, wire);

    let image = |id: &str| Image {
        id: id.into(),
        ..Default::default()
    };
    let resp = StreamImagesResponse {
        images: vec![image("a"), image("b")],
        encoded: None,
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x03,           // field 1 (images: Image), LEN, 3 bytes
            0x0a, 0x01, b'a', //   field 1 (id), LEN, 1 byte
        0x0a, 0x03,           // field 1 (images: Image), LEN, 3 bytes
            0x0a, 0x01, b'b', //   field 1 (id), LEN, 1 byte
    ];
    assert_wire(&resp, wire);
    // What the server sends: a slice of its cached ListImages bytes, the same bytes.
    let encoded = StreamImagesResponse::encode_images(&resp.images);
    let sliced: Vec<_> = imaged::wire::batches(encoded, 5).collect();
    assert_eq!(sliced.len(), 2, "one image per message when each is 5 bytes");
    assert_eq!(
        StreamImagesResponse::pre_encoded(sliced[1].clone()).encode_to_vec(),
        &wire[5..]
    );
}

#[test]
fn image_uid_zero_is_present_not_absent() {
    // uid 0 (root) must stay distinguishable from "no uid": an empty Int64Value, not a missing field.
    let root = Image {
        uid: Some(Int64Value { value: 0 }),
        ..Default::default()
    };
    assert_wire(&root, &[0x2a, 0x00]); // field 5 (uid), LEN, 0 bytes
    assert_wire(&Image::default(), &[]);
}

#[test]
fn image_fs_info_response_wire_format() {
    let resp = ImageFsInfoResponse {
        image_filesystems: vec![FilesystemUsage {
            timestamp: 1_000_000_000,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: "/var/lib/imaged".into(),
            }),
            used_bytes: Some(UInt64Value { value: 4096 }),
            inodes_used: Some(UInt64Value { value: 7 }),
        }],
        container_filesystems: vec![FilesystemUsage {
            timestamp: 1,
            ..Default::default()
        }],
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x22,                                  // field 1 (image_filesystems: FilesystemUsage), LEN, 34 bytes
            0x08, 0x80, 0x94, 0xeb, 0xdc, 0x03,      //   field 1 (timestamp), VARINT 1_000_000_000
            0x12, 0x11,                              //   field 2 (fs_id: FilesystemIdentifier), LEN, 17 bytes
                0x0a, 0x0f,                          //     field 1 (mountpoint), LEN, 15 bytes
                b'/', b'v', b'a', b'r', b'/', b'l', b'i', b'b',
                b'/', b'i', b'm', b'a', b'g', b'e', b'd',
            0x1a, 0x03,                              //   field 3 (used_bytes: UInt64Value), LEN, 3 bytes
                0x08, 0x80, 0x20,                    //     field 1 (value), VARINT 4096
            0x22, 0x02,                              //   field 4 (inodes_used: UInt64Value), LEN, 2 bytes
                0x08, 0x07,                          //     field 1 (value), VARINT 7
        0x12, 0x02,                                  // field 2 (container_filesystems: FilesystemUsage), LEN, 2 bytes
            0x08, 0x01,                              //   field 1 (timestamp), VARINT 1
    ];
    assert_wire(&resp, wire);
}

#[test]
fn pull_image_response_wire_format() {
    let resp = PullImageResponse {
        image_ref: "sha256:0a1b".into(),
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x0b,                                                       // field 1 (image_ref), LEN, 11 bytes
            b's', b'h', b'a', b'2', b'5', b'6', b':', b'0', b'a', b'1', b'b',
    ];
    assert_wire(&resp, wire);
}

#[test]
fn unknown_fields_are_skipped() {
    // A newer kubelet may send fields we do not know yet; decoding must skip them, whatever their wire type.
    #[rustfmt::skip]
    let future: &[u8] = &[
        0x98, 0x06, 0x01,                   // field 99, VARINT 1 (tag 792)
        0xa2, 0x06, 0x02, b'h', b'i',       // field 100, LEN, 2 bytes (tag 802)
        0xad, 0x06, 0x01, 0x02, 0x03, 0x04, // field 101, I32 (tag 813)
        0xb1, 0x06, 0, 0, 0, 0, 0, 0, 0, 1, // field 102, I64 (tag 817)
    ];
    let wire = [IMAGE_SPEC_WIRE, future].concat();
    assert_eq!(ImageSpec::decode(wire.as_slice()).unwrap(), image_spec());

    // Also nested: an unknown field inside sandbox_config must not break the enclosing PullImageRequest.
    #[rustfmt::skip]
    let nested: &[u8] = &[
        0x0a, 0x03,                  // field 1 (image: ImageSpec), LEN, 3 bytes
            0x0a, 0x01, b'x',        //   field 1 (image), LEN, 1 byte
        0x1a, 0x09,                  // field 3 (sandbox_config: PodSandboxConfig), LEN, 9 bytes
            0xf8, 0x06, 0x05,        //   field 111, VARINT 5 (tag 888)
            0x12, 0x04, b'h', b'o', b's', b't', // field 2 (hostname), LEN, 4 bytes
    ];
    let req = PullImageRequest::decode(nested).unwrap();
    assert_eq!(req.image.unwrap().image, "x");
    assert_eq!(req.sandbox_config.unwrap().hostname, "host");
}

#[test]
fn create_container_request_wire_format() {
    // The fields the containerd tests send: an image by id with the name the user typed, a command, a
    // read-only bind mount, a log path and the sandbox's id and config.
    use imaged::proto::runtime::v1::{ContainerConfig, CreateContainerRequest, Mount};
    let req = CreateContainerRequest {
        pod_sandbox_id: "p".into(),
        config: Some(ContainerConfig {
            image: Some(ImageSpec {
                image: "sha".into(),
                user_specified_image: "a".into(),
                ..Default::default()
            }),
            command: vec!["sh".into()],
            args: vec!["x".into()],
            mounts: vec![Mount {
                container_path: "/c".into(),
                readonly: true,
                ..Default::default()
            }],
            log_path: "l".into(),
            ..Default::default()
        }),
        sandbox_config: Some(PodSandboxConfig {
            hostname: "h".into(),
            ..Default::default()
        }),
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x01, b'p',                     // field 1 (pod_sandbox_id), LEN, 1 byte
        0x12, 0x1d,                           // field 2 (config: ContainerConfig), LEN, 29 bytes
            0x12, 0x09,                       //   field 2 (image: ImageSpec), LEN, 9 bytes
                0x0a, 0x03, b's', b'h', b'a', //     field 1 (image), LEN, 3 bytes
                0x92, 0x01, 0x01, b'a',       //     field 18 (user_specified_image), LEN, 1 byte
            0x1a, 0x02, b's', b'h',           //   field 3 (command), LEN, 2 bytes
            0x22, 0x01, b'x',                 //   field 4 (args), LEN, 1 byte
            0x3a, 0x06,                       //   field 7 (mounts: Mount), LEN, 6 bytes
                0x0a, 0x02, b'/', b'c',       //     field 1 (container_path), LEN, 2 bytes
                0x18, 0x01,                   //     field 3 (readonly), VARINT 1
            0x5a, 0x01, b'l',                 //   field 11 (log_path), LEN, 1 byte
        0x1a, 0x03,                           // field 3 (sandbox_config: PodSandboxConfig), LEN, 3 bytes
            0x12, 0x01, b'h',                 //   field 2 (hostname), LEN, 1 byte
    ];
    assert_wire(&req, wire);
}

#[test]
fn exec_sync_and_container_status_wire_format() {
    use imaged::proto::runtime::v1::{ContainerState, ContainerStatus, ExecSyncRequest, ExecSyncResponse};
    let req = ExecSyncRequest {
        container_id: "c".into(),
        cmd: vec!["ls".into()],
        timeout: 60,
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x01, b'c',       // field 1 (container_id), LEN, 1 byte
        0x12, 0x02, b'l', b's', // field 2 (cmd), LEN, 2 bytes
        0x18, 0x3c,             // field 3 (timeout), VARINT 60
    ];
    assert_wire(&req, wire);
    let resp = ExecSyncResponse {
        stdout: b"o".to_vec(),
        stderr: b"e".to_vec(),
        exit_code: 7,
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x01, b'o', // field 1 (stdout), LEN, 1 byte
        0x12, 0x01, b'e', // field 2 (stderr), LEN, 1 byte
        0x18, 0x07,       // field 3 (exit_code), VARINT 7
    ];
    assert_wire(&resp, wire);
    let status = ContainerStatus {
        id: "c".into(),
        state: ContainerState::ContainerExited as i32,
        exit_code: 3,
        image_ref: "r".into(),
        log_path: "/l".into(),
        image_id: "i".into(),
        ..Default::default()
    };
    #[rustfmt::skip]
    let wire: &[u8] = &[
        0x0a, 0x01, b'c',             // field 1 (id), LEN, 1 byte
        0x18, 0x02,                   // field 3 (state), VARINT 2 (CONTAINER_EXITED)
        0x38, 0x03,                   // field 7 (exit_code), VARINT 3
        0x4a, 0x01, b'r',             // field 9 (image_ref), LEN, 1 byte
        0x7a, 0x02, b'/', b'l',       // field 15 (log_path), LEN, 2 bytes
        0x8a, 0x01, 0x01, b'i',       // field 17 (image_id), LEN (tag 138), 1 byte
    ];
    assert_wire(&status, wire);
}
