//! Short names for layer directories, so that deep images fit overlay's mount options.
//!
//! overlayfs takes every lower layer in one `lowerdir=` option, and the whole option string must fit in a
//! page (4096 bytes, of which mount tools keep some). A layer's directory is named by its chain id
//! (`<root>/snapshots/<64 hex>/fs`, over 90 bytes with the store root): 40 layers would already overflow.
//! So each layer also gets a link `<root>/snapshots/l/<name>` → `../<hex>/fs` with a random 10-character
//! name (as containers/storage's overlay driver does with its `l/` directory). containerd shortens a long
//! option string by changing into the links' common directory, which leaves 11 bytes per layer: a
//! 128-layer image takes 1.4 KiB.
//!
//! Names are random (50 bits) rather than derived from the chain id, so no registry can make two layers
//! share one; a clash with an existing name is detected by `symlink` itself (`EEXIST`) and retried.

use std::io;
use std::path::{Path, PathBuf};

/// The directory of the links, under the snapshot store's root.
pub const LINK_DIR: &str = "l";

/// Characters of a link name (RFC 4648 base32, lowercase).
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Length of a link name: 50 random bits.
const NAME_LEN: usize = 10;

/// A new random link name.
fn random_name() -> io::Result<String> {
    let mut bytes = [0u8; NAME_LEN];
    let mut filled = 0;
    while filled < bytes.len() {
        filled += rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(bytes.iter().map(|b| ALPHABET[(b & 31) as usize] as char).collect())
}

/// Whether `name` could be a link name (so stray files in `l/` are recognised as such).
pub fn is_link_name(name: &str) -> bool {
    name.len() == NAME_LEN && name.bytes().all(|b| ALPHABET.contains(&b))
}

/// Creates a link in `links` pointing at `target` (relative to `links`) under a new name; returns the name.
pub fn create(links: &Path, target: &Path) -> io::Result<String> {
    for _ in 0..16 {
        let name = random_name()?;
        match std::os::unix::fs::symlink(target, links.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no free link name in {} after 16 tries",
        links.display()
    )))
}

/// Creates the link `name` → `target`, replacing whatever is there under that name.
pub fn restore(links: &Path, name: &str, target: &Path) -> io::Result<()> {
    let path = links.join(name);
    match std::fs::read_link(&path) {
        Ok(t) if t == target => return Ok(()),
        Ok(_) => std::fs::remove_file(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => std::fs::remove_file(&path)?,
    }
    std::os::unix::fs::symlink(target, path)
}

/// Removes the link `name` if it exists.
pub fn remove(links: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(links.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The target a layer's link points at: its `fs` directory, relative to the links directory.
pub fn target_of(hex: &str) -> PathBuf {
    Path::new("..").join(hex).join("fs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_random_and_recognised() {
        let a = random_name().unwrap();
        let b = random_name().unwrap();
        assert_eq!(a.len(), NAME_LEN);
        assert_ne!(a, b);
        assert!(is_link_name(&a));
        assert!(!is_link_name("tmp-1"));
        assert!(!is_link_name("ABCDEFGHIJ"));
    }

    #[test]
    fn create_never_reuses_a_name_and_restore_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let t = target_of("ab");
        let names: std::collections::HashSet<String> = (0..50).map(|_| create(dir.path(), &t).unwrap()).collect();
        assert_eq!(names.len(), 50);
        let n = names.iter().next().unwrap();
        restore(dir.path(), n, &target_of("cd")).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join(n)).unwrap(), target_of("cd"));
        remove(dir.path(), n).unwrap();
        remove(dir.path(), n).unwrap();
        assert!(!dir.path().join(n).exists());
    }
}
