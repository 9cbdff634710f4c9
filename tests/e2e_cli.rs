//! The client subcommands of the binary against a real daemon and registry: what an operator types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::daemon::setup::{Setup, small_image};

fn imaged(args: &[&str], socket: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imaged"))
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run imaged");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_images_inspect_rmi_fsinfo() {
    let s = Setup::start().await;
    let img = small_image(7, Some("1002"));
    s.push("tools", "v1", &img).await;
    let image = s.image("tools", "v1");
    let sock = s.daemon.socket.clone();

    let (ok, out, err) = imaged(&["pull", &image], &sock);
    assert!(ok, "{err}");
    assert!(out.contains(&img.config_digest), "{out}");

    let (ok, out, err) = imaged(&["images"], &sock);
    assert!(ok, "{err}");
    let hex = img.config_digest.trim_start_matches("sha256:");
    assert!(out.lines().next().unwrap().contains("IMAGE ID"), "{out}");
    assert!(
        out.contains(&s.name("tools")) && out.contains("v1") && out.contains(&hex[..13]),
        "{out}"
    );

    let (ok, out, _) = imaged(&["images", "-q"], &sock);
    assert!(ok);
    assert_eq!(out.trim(), img.config_digest);

    let (ok, out, err) = imaged(&["images", "-o", "json"], &sock);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["images"][0]["id"], img.config_digest.as_str(), "{v}");

    let (ok, out, err) = imaged(&["inspect", &image], &sock);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["id"], img.config_digest.as_str(), "{v}");
    assert_eq!(v["info"]["imageSpec"]["config"]["User"], "1002", "{v}");

    let (ok, out, err) = imaged(&["fsinfo"], &sock);
    assert!(ok, "{err}");
    assert!(out.contains(&s.daemon.root.display().to_string()), "{out}");

    let (ok, out, err) = imaged(&["rmi", &image, "nothing:here"], &sock);
    assert!(!ok, "one of two removals failed: the exit status says so");
    assert!(out.contains("Deleted"), "{out}");
    assert!(err.contains("nothing:here"), "{err}");
    let (_, out, _) = imaged(&["images", "-q"], &sock);
    assert!(out.trim().is_empty(), "{out}");

    let (ok, _, err) = imaged(&["images"], &s.daemon.dir().join("absent.sock"));
    assert!(!ok);
    assert!(err.contains("cannot connect") && err.contains("absent.sock"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_shows_bars_on_a_terminal_and_plain_lines_otherwise() {
    let s = Setup::start().await;
    let big = common::daemon::setup::image_of(
        common::images::image::MediaStyle::Oci,
        vec![common::images::image::Layer::build(
            &[common::images::image::Entry::file(
                "big",
                common::images::image::random_bytes(9, 4 << 20),
            )],
            common::images::image::Compression::Gzip,
            common::images::image::MediaStyle::Oci,
        )],
    );
    s.push("bars", "v1", &big).await;
    s.push("lines", "v1", &big).await;
    let sock = s.daemon.socket.clone();

    // Not a terminal: plain lines on stderr, one per layer state at least.
    let (ok, out, err) = imaged(&["pull", &s.image("lines", "v1")], &sock);
    assert!(ok, "{err}");
    assert!(out.contains("Image is up to date for"), "{out}");
    let short = &big.layers[0].digest[..19];
    assert!(
        err.lines()
            .any(|l| l.starts_with(short) && (l.contains("done") || l.contains("already present"))),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "no terminal control codes when not on a terminal: {err:?}"
    );

    // On a terminal (script(1) gives the command a pseudo-terminal): progress bars, drawn with control codes.
    remove_all(&sock).await;
    let cmd = format!(
        "{} pull {} --socket {}",
        env!("CARGO_BIN_EXE_imaged"),
        s.image("bars", "v1"),
        sock.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script(1)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains('\u{1b}'),
        "bars redraw with terminal control codes: {screen:?}"
    );
    assert!(
        screen.contains(&big.layers[0].digest[7..19]),
        "a bar names its layer: {screen:?}"
    );
    assert!(screen.contains("Image is up to date for"), "{screen}");
}

async fn remove_all(sock: &std::path::Path) {
    let mut c = imaged::cli::connect(sock).await.unwrap();
    for i in common::daemon::list(&mut c).await {
        common::daemon::remove(&mut c, &i.id).await.unwrap();
    }
}
