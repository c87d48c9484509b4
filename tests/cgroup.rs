//! `-o xid=cgroup` through a real mount: a process's context is its
//! `vx-XID` cgroup, decided afresh the moment the process moves, and only
//! the host (not a guest's root, whatever its capabilities) administers.

mod common;

use std::fs;

use common::{Mount, Scratch, Shell, TestCgroup};

fn tag_of(path: &std::path::Path) -> Option<String> {
    common::backing_xattr(path, "trusted.vxfs.xid")
}

#[test]
fn a_process_is_the_context_of_its_cgroup_from_the_moment_it_moves() {
    let scratch = Scratch::new();
    let index = scratch.path().join("index.db");
    let mount = Mount::scratch(&scratch, &format!("xid=cgroup,index={}", index.display()));
    let m = mount.path();
    fs::create_dir(m.join("pub")).unwrap();
    let mut cg = TestCgroup::new();
    let (g42, g43) = (cg.sub("vx-42"), cg.sub("vx-43"));
    let mut sh = Shell::new();
    let f = |name: &str| m.join("pub").join(name).display().to_string();
    // The test itself is the host.
    fs::write(m.join("pub/host"), b"host").unwrap();
    assert_eq!(sh.run(&format!("echo a > {}", f("a"))), 0);
    cg.enter(Some(&g42), sh.pid());
    assert_eq!(sh.run(&format!("echo b > {}", f("b"))), 0);
    assert_eq!(
        sh.run(&format!("cat {}", f("host"))),
        0,
        "host files are shared"
    );
    cg.enter(Some(&g43), sh.pid());
    assert_eq!(sh.run(&format!("echo c > {}", f("c"))), 0);
    assert_ne!(
        sh.run(&format!("cat {}", f("b"))),
        0,
        "42's file is not 43's"
    );
    // A move back to the host is seen at once too.
    cg.enter(None, sh.pid());
    assert_eq!(sh.run(&format!("echo d > {} && cat {}", f("d"), f("b"))), 0);
    let src = scratch.src().join("pub");
    assert_eq!(tag_of(&src.join("a")), None);
    assert_eq!(tag_of(&src.join("b")).as_deref(), Some("42"));
    assert_eq!(tag_of(&src.join("c")).as_deref(), Some("43"));
    assert_eq!(tag_of(&src.join("d")), None);
    // A nested cgroup a guest could make under its own names it nothing
    // else: the outermost vx-XID wins.
    let nested = cg.sub("vx-42/vx-0");
    cg.enter(Some(&nested), sh.pid());
    assert_eq!(sh.run(&format!("echo e > {}", f("e"))), 0);
    assert_eq!(tag_of(&src.join("e")).as_deref(), Some("42"));
    drop(sh);
}

#[test]
fn only_the_host_administers_a_cgroup_mount() {
    let scratch = Scratch::new();
    let index = scratch.path().join("index.db");
    let mount = Mount::scratch(&scratch, &format!("xid=cgroup,index={}", index.display()));
    let m = mount.path();
    fs::write(m.join("f"), b"f").unwrap();
    let mut cg = TestCgroup::new();
    let g42 = cg.sub("vx-42");
    let mut sh = Shell::new();
    let f = m.join("f").display().to_string();
    // Root with every capability, in the guest's cgroup: not the host.
    cg.enter(Some(&g42), sh.pid());
    assert_ne!(
        sh.run(&format!("setfattr -n trusted.vxfs.xid -v 42 {f}")),
        0
    );
    assert_ne!(
        sh.run(&format!("setfattr -n trusted.vxfs.iattr -v 262144 {f}")),
        0
    );
    assert_eq!(tag_of(&scratch.src().join("f")), None);
    // Back in the host context it is the administrator.
    cg.enter(None, sh.pid());
    assert_eq!(
        sh.run(&format!("setfattr -n trusted.vxfs.xid -v 42 {f}")),
        0
    );
    assert_eq!(tag_of(&scratch.src().join("f")).as_deref(), Some("42"));
    drop(sh);
}
