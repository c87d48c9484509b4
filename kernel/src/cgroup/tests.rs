use super::fake::{FakeFs, host};
use super::*;

fn fake_set(mode: Mode) -> (tempfile::TempDir, Layout, CgroupSet, FakeFs) {
    let t = tempfile::tempdir().unwrap();
    let layout = host(t.path(), mode);
    let set = CgroupSet::of(&layout, Xid(42)).unwrap();
    (t, layout, set, FakeFs::default())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn layouts_are_detected() {
    let (t, layout, ..) = fake_set(Mode::Hybrid);
    assert_eq!(layout.mode(), Mode::Hybrid);
    assert_eq!(layout.hierarchies.len(), 9);
    let mem = layout.owner("memory").unwrap();
    assert_eq!(mem.version, Version::V1);
    assert_eq!(
        mem.own_dir(),
        t.path().join("sys/fs/cgroup/memory/process_api/me")
    );
    let v2 = layout
        .hierarchies
        .iter()
        .find(|h| h.version == Version::V2)
        .unwrap();
    assert_eq!(v2.controllers, ["hugetlb"]);
    assert!(layout.owner("cpuacct").is_some());
    assert!(layout.owner("name=systemd").is_some());
    let (_t, unified, ..) = fake_set(Mode::Unified);
    assert_eq!(unified.mode(), Mode::Unified);
    assert_eq!(unified.owner("memory").unwrap().version, Version::V2);
    let (_t, legacy, ..) = fake_set(Mode::Legacy);
    assert_eq!(legacy.mode(), Mode::Legacy);
    // A bind mount of a hierarchy counts once.
    let twice =
        "30 20 0:40 / /a rw - cgroup2 cgroup2 rw\n31 20 0:40 / /b rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        Layout::parse(twice, "0::/\n", t.path()).hierarchies.len(),
        1
    );
}

#[test]
fn a_context_gets_vx_xid_in_every_hierarchy() {
    for mode in [Mode::Hybrid, Mode::Unified, Mode::Legacy] {
        let (t, layout, set, fs) = fake_set(mode);
        set.create(&fs).unwrap();
        assert_eq!(set.members.len(), layout.hierarchies.len());
        for m in &set.members {
            assert!(
                m.dir.ends_with("vxfs/vx-42"),
                "{mode:?} {}",
                m.dir.display()
            );
            assert!(m.dir.join("cgroup.procs").exists());
        }
        assert_eq!(
            set.tracking().hierarchy.version == Version::V2,
            mode != Mode::Legacy
        );
        if mode != Mode::Unified {
            let cpuset = set
                .members
                .iter()
                .find(|m| m.hierarchy.has("cpuset"))
                .unwrap();
            assert_eq!(
                read(&cpuset.dir.join("cpuset.cpus")),
                "0-1",
                "{mode:?}: copied"
            );
            assert_eq!(read(&cpuset.dir.join("cpuset.mems")), "0");
        } else {
            // The controllers were enabled down to vx-42.
            let dir = &set.tracking().dir;
            let mut enabled: Vec<String> = read(&dir.join("cgroup.controllers"))
                .split(' ')
                .map(str::to_string)
                .collect();
            enabled.sort();
            assert_eq!(enabled, ["cpu", "cpuset", "io", "memory", "pids"]);
            assert!(dir.join("memory.max").exists() && dir.join("cpu.max").exists());
        }
        set.join(&fs, 1234, false).unwrap();
        for m in &set.members {
            assert_eq!(read(&m.dir.join("cgroup.procs")), "1234");
        }
        // Removal refuses while tasks are there, then succeeds.
        assert!(set.remove(&fs).is_err());
        for m in &set.members {
            std::fs::write(m.dir.join("cgroup.procs"), "").unwrap();
        }
        set.remove(&fs).unwrap();
        for m in &set.members {
            assert!(
                !m.dir.exists() && !m.dir.parent().unwrap().exists(),
                "{mode:?}"
            );
        }
        drop(t);
    }
}

#[test]
fn knobs_go_to_the_hierarchy_that_has_the_controller() {
    // Hybrid: every controller on v1.
    let (_t, _, set, fs) = fake_set(Mode::Hybrid);
    set.create(&fs).unwrap();
    let dir = |c: &str| {
        set.members
            .iter()
            .find(|m| m.hierarchy.has(c))
            .unwrap()
            .dir
            .clone()
    };
    set.set_pids_max(&fs, Some(20)).unwrap();
    assert_eq!(read(&dir("pids").join("pids.max")), "20");
    set.set_memory(&fs, Some(64 << 20), None).unwrap();
    assert_eq!(
        read(&dir("memory").join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(&dir("memory").join("memory.soft_limit_in_bytes")),
        "-1"
    );
    let cpu = CpuSettings {
        bandwidth: Some((Some(20_000), 100_000)),
        burst: Some(5_000),
        nice: Some(5),
    };
    set.set_cpu(&fs, &cpu).unwrap();
    let quota = dir("cpu").join("cpu.cfs_quota_us");
    assert_eq!(
        fs.written(&quota),
        ["-1", "20000"],
        "unlimited before the period"
    );
    assert_eq!(read(&dir("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&dir("cpu").join("cpu.shares")), "335");
    set.write_raw(&fs, "memory.soft_limit_in_bytes", "1000")
        .unwrap();
    assert_eq!(
        read(&dir("memory").join("memory.soft_limit_in_bytes")),
        "1000"
    );
    assert!(matches!(
        set.write_raw(&fs, "rdma.max", "x"),
        Err(CgroupError::NoController { .. })
    ));
    assert!(!set.counts_writeback(), "blkio on v1");
    // v2's io names on v1's blkio, one rule per write.
    set.write_raw(&fs, "io.max", "254:0 wbps=2097152 riops=max\n8:0 rbps=10")
        .unwrap();
    let blkio = dir("blkio");
    assert_eq!(
        fs.written(&blkio.join("blkio.throttle.write_bps_device")),
        ["254:0 2097152"]
    );
    assert_eq!(
        fs.written(&blkio.join("blkio.throttle.read_iops_device")),
        ["254:0 0"]
    );
    assert_eq!(
        fs.written(&blkio.join("blkio.throttle.read_bps_device")),
        ["8:0 10"]
    );
    set.write_raw(&fs, "io.weight", "default 500").unwrap();
    assert_eq!(read(&blkio.join("blkio.bfq.weight")), "500");
    assert!(matches!(
        set.write_raw(&fs, "io.latency", "8:0 target=5"),
        Err(CgroupError::Io { .. })
    ));
    set.freeze(&fs, true).unwrap();
    assert_eq!(
        read(&set.tracking().dir.join("cgroup.freeze")),
        "1",
        "v2 freezes"
    );

    // Unified: every controller on v2.
    let (_t, _, set, fs) = fake_set(Mode::Unified);
    set.create(&fs).unwrap();
    let d = set.tracking().dir.clone();
    set.set_memory(&fs, Some(1 << 30), Some(1 << 29)).unwrap();
    assert_eq!(read(&d.join("memory.max")), (1u64 << 30).to_string());
    assert_eq!(read(&d.join("memory.high")), (1u64 << 29).to_string());
    set.set_cpu(
        &fs,
        &CpuSettings {
            bandwidth: Some((None, 50_000)),
            burst: None,
            nice: Some(-3),
        },
    )
    .unwrap();
    assert_eq!(read(&d.join("cpu.max")), "max 50000");
    assert_eq!(read(&d.join("cpu.weight.nice")), "-3");
    set.set_pids_max(&fs, None).unwrap();
    assert_eq!(read(&d.join("pids.max")), "max");
    assert!(set.counts_writeback(), "io and memory on v2");
    // v1's blkio names on v2's io.
    set.write_raw(
        &fs,
        "blkio.throttle.write_bps_device",
        "254:0 2097152\n8:0 0",
    )
    .unwrap();
    assert_eq!(
        fs.written(&d.join("io.max")),
        ["254:0 wbps=2097152", "8:0 wbps=max"]
    );
    set.write_raw(&fs, "blkio.bfq.weight", "200").unwrap();
    assert_eq!(read(&d.join("io.bfq.weight")), "200");
    set.write_raw(&fs, "io.max", "254:0 rbps=5").unwrap();
    assert_eq!(read(&d.join("io.max")), "254:0 rbps=5");

    // Legacy: freezing through the freezer controller.
    let (_t, _, set, fs) = fake_set(Mode::Legacy);
    set.create(&fs).unwrap();
    set.freeze(&fs, true).unwrap();
    let f = set
        .members
        .iter()
        .find(|m| m.hierarchy.has("freezer"))
        .unwrap();
    assert_eq!(read(&f.dir.join("freezer.state")), "FROZEN");
}

#[test]
fn a_controller_the_parent_lacks_is_a_clear_error() {
    // A unified host whose cgroup cannot enable memory (no delegation).
    let t = tempfile::tempdir().unwrap();
    let layout = host(t.path(), Mode::Unified);
    let own = layout.hierarchies[0].own_dir();
    std::fs::write(own.join("cgroup.controllers"), "cpu pids").unwrap();
    let mut layout = layout;
    layout.hierarchies[0].controllers = vec!["cpu".into(), "memory".into(), "pids".into()];
    let set = CgroupSet::of(&layout, Xid(7)).unwrap();
    let e = set.create(&FakeFs::default()).unwrap_err().to_string();
    assert!(e.contains("cgroup.subtree_control"), "{e}");
}

#[test]
fn usage_from_the_controllers_counters() {
    let (_t, _, set, fs) = fake_set(Mode::Hybrid);
    set.create(&fs).unwrap();
    let dir = |c: &str| {
        set.members
            .iter()
            .find(|m| m.hierarchy.has(c))
            .unwrap()
            .dir
            .clone()
    };
    std::fs::write(dir("cpuacct").join("cpuacct.stat"), "user 150\nsystem 20\n").unwrap();
    std::fs::write(
        dir("memory").join("memory.stat"),
        "cache 5\nrss 4096\nmapped_file 8192\n",
    )
    .unwrap();
    std::fs::write(set.tracking().dir.join("cgroup.procs"), "10\n11\n").unwrap();
    let u = set.usage(&fs);
    assert_eq!((u.user_usec, u.system_usec), (1_500_000, 200_000));
    assert_eq!((u.rss, u.tasks), (12288, 2));
}

#[test]
fn nice_weights_are_the_kernels() {
    assert_eq!(shares_of_nice(0), 1024);
    assert_eq!(shares_of_nice(-20), 88761);
    assert_eq!(shares_of_nice(19), 15);
    assert_eq!(shares_of_nice(99), 15);
}

#[test]
fn a_v2_caller_moves_into_a_leaf_so_its_cgroup_can_enable_controllers() {
    // A delegated unit's cgroup with the caller in it: enabling
    // controllers for vxfs/ is refused (EBUSY) until the caller leaves for
    // own/supervisor.
    let (_t, layout, set, fs) = fake_set(Mode::Unified);
    let own = layout.hierarchies[0].own_dir();
    let me = std::process::id().to_string();
    std::fs::write(own.join("cgroup.procs"), &me).unwrap();
    set.create(&fs).unwrap();
    assert_eq!(read(&own.join("supervisor/cgroup.procs")), me);
    assert_eq!(read(&own.join("cgroup.procs")), "");
    assert!(read(&own.join("cgroup.subtree_control")).contains("memory"));
    let dir = set.tracking().dir.clone();
    assert!(dir.join("memory.max").exists(), "controllers below vxfs/");
    // A guest's task joins its leaf.
    set.join(&fs, 4242, false).unwrap();

    // A login session's cgroup with a shell beside the caller: a clear
    // error saying what to do.
    let (_t, layout, set, fs) = fake_set(Mode::Unified);
    let own = layout.hierarchies[0].own_dir();
    std::fs::write(own.join("cgroup.procs"), format!("{me}\n1234")).unwrap();
    let e = set.create(&fs).unwrap_err().to_string();
    assert!(e.contains("holds 1 other processes"), "{e}");
    assert!(e.contains("Delegate=yes"), "{e}");

    // Hybrid: no controller on the v2 tracking hierarchy, nothing to move.
    let (_t, layout, set, fs) = fake_set(Mode::Hybrid);
    let v2 = layout
        .hierarchies
        .iter()
        .find(|h| h.version == Version::V2)
        .unwrap()
        .own_dir();
    std::fs::write(v2.join("cgroup.procs"), &me).unwrap();
    set.create(&fs).unwrap();
    assert!(!v2.join("supervisor").exists());
}
