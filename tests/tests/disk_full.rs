//! A full disk under Control's store: writes answer 507 and say the disk is full (not a 500
//! that points at the log), Control keeps serving what it has, and once there is room again
//! the same write works. Needs root for the small tmpfs, so it runs with `--ignored` from
//! scripts/test.

use kakuremichi_tests::{curl, Cluster};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted for the test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("kakuremichi-diskfull-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fill the file system at `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    // dd stops at "No space left on device", which is the point.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    filler
}

#[test]
#[ignore = "needs root for a tmpfs; scripts/test runs it"]
fn a_full_disk_says_so_and_changes_nothing() {
    let disk = SmallDisk::mount("16m");
    let cluster = Cluster::storing_in("diskfull", &disk.0.join("control-data"));
    let enrol = || cluster.api("POST", "/api/v1/agents", Some("{}"));
    let agents = || cluster.api("GET", "/api/v1/agents", None);
    let healthz = || curl(&[&cluster.control_url("/healthz")]).status;
    assert_eq!(enrol().status, 201);
    let agents_before = agents().json();

    let filler = fill(&disk.0);
    // The store reuses pages it freed, so a few writes may still fit; one that needs a new
    // page meets the full disk.
    let refused = (0..200)
        .map(|_| enrol())
        .find(|answer| answer.status != 201);
    let refused = refused.expect("every write fitted on a full disk");
    assert_eq!(refused.status, 507, "{refused:?}");
    assert!(refused.body.contains("disk is full"), "{}", refused.body);
    println!("disk full: {} {}", refused.status, refused.body.trim());
    // Still serving what it has.
    assert_eq!(healthz(), 200);
    let listed = agents();
    assert_eq!(listed.status, 200, "{listed:?}");

    std::fs::remove_file(&filler).expect("remove the filler");
    assert_eq!(enrol().status, 201, "a write after space came back");
    let agents_after = agents().json();
    assert!(
        agents_after.as_array().map(Vec::len) > agents_before.as_array().map(Vec::len),
        "{agents_after}"
    );
}
