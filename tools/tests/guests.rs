//! The context core through `vserver` (issue 11): real guests (a busybox
//! root and a small init script) started in their own namespaces and
//! cgroups, entered, limited, rebooted and stopped, on this machine's
//! cgroups; each test's guest has its own context id, configuration and
//! registry directory, and the guard stops it and removes its cgroups also
//! when the test fails. Needs root and busybox (`busybox-static`): a
//! machine without them fails loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const VSERVER: &str = env!("CARGO_BIN_EXE_vserver");
const VSERVER_STAT: &str = env!("CARGO_BIN_EXE_vserver-stat");

/// The guest's init: keeps running until SIGTERM, leaves a mark when it
/// starts.
const INIT: &str =
    "#!/bin/sh\ntrap 'exit 0' TERM\necho started >> /var/log/boots\nwhile :; do sleep 1; done\n";

/// Busybox applets the guests use.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "sleep", "ps", "mount", "hostname", "uname", "echo", "id", "touch", "seq",
    "timeout", "kill", "reboot", "poweroff", "mkdir", "wc", "dmesg", "ip", "ping", "grep", "head",
    "nproc", "free", "uptime", "dd",
];

/// A configured guest, stopped and cleaned up on drop.
struct Guest {
    dir: tempfile::TempDir,
    name: String,
    xid: u32,
}

fn busybox() -> PathBuf {
    let path = Path::new("/bin/busybox");
    assert!(
        path.exists(),
        "/bin/busybox is missing: install busybox-static (scripts/setup.sh does)"
    );
    path.to_path_buf()
}

/// Makes a busybox root at `root`.
fn make_root(root: &Path) {
    for d in ["bin", "sbin", "etc", "var/log", "tmp", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("sbin/init"), INIT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("sbin/init"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nguest:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nguest:x:1000:\n").unwrap();
}

impl Guest {
    /// Guest `name` with context `xid`, its root in a temporary directory
    /// (or at `root`), and the configuration `files` (path, content).
    fn new(name: &str, xid: u32, files: &[(&str, &str)]) -> Guest {
        Self::with_root(name, xid, files, None)
    }

    fn with_root(name: &str, xid: u32, files: &[(&str, &str)], root: Option<&Path>) -> Guest {
        let dir = tempfile::Builder::new()
            .prefix("vxfs-guest-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = root.map_or_else(|| dir.path().join("root"), Path::to_path_buf);
        make_root(&root);
        let conf = dir.path().join("etc").join(name);
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        std::os::unix::fs::symlink(&root, conf.join("vdir")).unwrap();
        std::fs::write(conf.join("context"), format!("{xid}\n")).unwrap();
        for (rel, text) in files {
            let p = conf.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        Guest {
            dir,
            name: name.to_string(),
            xid,
        }
    }

    fn root(&self) -> PathBuf {
        std::fs::read_link(self.dir.path().join("etc").join(&self.name).join("vdir")).unwrap()
    }

    fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("VXFS_CONFDIR", self.dir.path().join("etc"))
            .env("VXFS_RUNDIR", self.dir.path().join("run"))
            .env("VXFS_VXPROC", common::vxproc_bin());
        c
    }

    /// Where this guest's registry has its vxproc.
    fn vxproc_dir(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    /// `vserver NAME ARGS...`.
    fn vserver(&self, args: &[&str]) -> Output {
        self.cmd(VSERVER)
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run vserver")
    }

    /// `vserver NAME ARGS...`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.vserver(args);
        assert!(
            out.status.success(),
            "vserver {} {args:?}: {out:?}",
            self.name
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The state the supervisor recorded.
    fn state(&self) -> serde_json::Value {
        let path = self.dir.path().join(format!("run/{}/state.json", self.xid));
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    }

    fn init_pid(&self) -> u32 {
        self.state()["init"].as_u64().unwrap() as u32
    }

    fn console(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("run/names/{}.console", self.name)),
        )
        .unwrap_or_default()
    }

    /// The guest's cgroup directories that exist on the host.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let name = format!("vx-{}", self.xid);
        let mut found = Vec::new();
        let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if e.file_name().to_str() == Some(&name) {
                        found.push(e.path());
                    } else if d.components().count() < 9 {
                        stack.push(e.path());
                    }
                }
            }
        }
        found
    }

    /// A busy loop in the guest (`vserver NAME exec`), to kill after.
    fn busy_loop(&self) -> std::process::Child {
        self.cmd(VSERVER)
            .args([&self.name, "exec", "/bin/sh", "-c", "while :; do :; done"])
            .spawn()
            .unwrap()
    }

    /// (seconds since the call, CPU seconds its cgroup used since) every
    /// 50 ms for `span`, from `cpuacct.usage`.
    fn cpu_samples(&self, span: Duration) -> Vec<(f64, f64)> {
        let file = self
            .cgroup_dirs()
            .into_iter()
            .map(|d| d.join("cpuacct.usage"))
            .find(|f| f.exists())
            .expect("a cpuacct cgroup");
        let usage = || -> f64 {
            std::fs::read_to_string(&file)
                .unwrap()
                .trim()
                .parse::<f64>()
                .unwrap()
                / 1e9
        };
        let (t0, u0) = (Instant::now(), usage());
        let mut samples = Vec::new();
        while t0.elapsed() < span {
            std::thread::sleep(Duration::from_millis(50));
            samples.push((t0.elapsed().as_secs_f64(), usage() - u0));
        }
        samples
    }

    /// Waits until `f` holds (at most 5 s).
    fn wait_until(&self, what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{what}; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.vserver(&["stop"]);
        // The vxproc its start may have started (none: nothing to do).
        let stopped = self
            .cmd(common::vxproc_bin().to_str().unwrap())
            .arg("--stop")
            .arg("--mountpoint")
            .arg(self.vxproc_dir())
            .output();
        if let Ok(out) = &stopped {
            if !out.status.success() {
                eprintln!("vxproc --stop: {out:?}");
            }
        }
        // Whatever a failed test left: no process, no cgroup.
        for dir in self.cgroup_dirs() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

#[test]
fn a_guest_runs_in_its_own_namespaces_and_cgroups_and_stopping_leaves_nothing() {
    let g = Guest::new(
        "life",
        40101,
        &[
            ("uts/nodename", "life.example\n"),
            ("uts/domainname", "example\n"),
        ],
    );
    assert_eq!(g.vserver(&["status"]).status.code(), Some(3));
    assert_eq!(g.vserver(&["running"]).status.code(), Some(1));
    g.ok(&["start"]);
    let status = g.ok(&["status"]);
    assert!(
        status.starts_with("Vserver 'life' is running at context '40101'\nNumber of processes: "),
        "{status}"
    );
    assert_eq!(g.vserver(&["running"]).status.code(), Some(0));
    // The supervisor's pid file (a service manager's PIDFile=), there as
    // soon as start returns.
    let pid_file = g.dir.path().join("run/names/life.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        g.state()["supervisor"].to_string()
    );
    let json: serde_json::Value = serde_json::from_str(&g.ok(&["status", "--json"])).unwrap();
    assert_eq!(
        (json["xid"].as_u64(), json["running"].as_bool()),
        (Some(40101), Some(true))
    );
    // A second start: the util-vserver warning, success.
    let again = g.vserver(&["start"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("vserver 'life' already running"));
    // Seen from the host: init in vx-40101 of every hierarchy.
    let init = g.init_pid();
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    for line in cgroups.lines() {
        assert!(line.ends_with("/vxfs/vx-40101"), "{line}");
    }
    // Seen from inside.
    let inside = g.ok(&[
        "exec",
        "/bin/sh",
        "-c",
        "echo $$; hostname; cat /proc/1/cmdline; echo; cat /proc/self/cgroup | head -1; cut -d' ' -f1 /proc/uptime; ls /dev | head -3; ps | wc -l; cat /var/log/boots",
    ]);
    let lines: Vec<&str> = inside.lines().collect();
    assert_ne!(lines[0], init.to_string(), "its own pid namespace");
    assert_eq!(lines[1], "life.example");
    assert!(lines[2].starts_with("/bin/sh"), "init is pid 1: {lines:?}");
    assert!(
        lines[3].ends_with(":/"),
        "its cgroup is its root: {lines:?}"
    );
    let uptime: f64 = lines[4].parse().unwrap();
    assert!(
        uptime < 30.0,
        "uptime since the guest started, not the host's: {uptime}"
    );
    assert_eq!(&lines[5..8], ["fd", "full", "mqueue"]);
    let procs: usize = lines[8].trim().parse().unwrap();
    assert!(procs < 8, "only its own processes: {procs}");
    assert_eq!(lines[9], "started");
    assert!(
        g.ok(&["exec", "/bin/uname", "-n"])
            .starts_with("life.example")
    );
    // The guest's mounts stay its own.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(g.root().join("proc").to_str().unwrap()));
    let stat = String::from_utf8(g.cmd(VSERVER_STAT).output().unwrap().stdout).unwrap();
    assert!(
        stat.starts_with("CTX   PROC    VSZ    RSS  userTIME   sysTIME    UPTIME NAME\n40101"),
        "{stat}"
    );
    assert!(stat.trim_end().ends_with("life"), "{stat}");
    g.ok(&["stop"]);
    assert!(!pid_file.exists(), "the pid file goes with the supervisor");
    assert_eq!(g.vserver(&["status"]).status.code(), Some(3));
    assert!(g.cgroup_dirs().is_empty(), "{:?}", g.cgroup_dirs());
    assert!(
        std::fs::metadata(format!("/proc/{init}")).is_err(),
        "init is gone"
    );
    assert!(
        !g.dir.path().join("run/40101").exists(),
        "no registry entry"
    );
    let out = g.vserver(&["stop"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));
}

#[test]
fn a_reboot_restarts_the_guest_and_a_halt_stops_it() {
    let g = Guest::new("boots", 40102, &[]);
    g.ok(&["start"]);
    let first = g.init_pid();
    let _ = g.vserver(&["exec", "/bin/reboot", "-f"]);
    g.wait_until("a new init after the reboot", || {
        g.vserver(&["running"]).status.success() && g.init_pid() != first
    });
    g.wait_until("the new init ran", || {
        std::fs::read_to_string(g.root().join("var/log/boots")).unwrap() == "started\nstarted\n"
    });
    let _ = g.vserver(&["exec", "/bin/poweroff", "-f"]);
    g.wait_until("stopped after poweroff", || {
        g.vserver(&["status"]).status.code() == Some(3)
    });
    g.wait_until("its cgroups removed", || g.cgroup_dirs().is_empty());
}

/// CPU time (ms) of the guest's cgroup.
fn cpu_ms(g: &Guest) -> u64 {
    for base in [
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(base).join(format!("vxfs/vx-{}", g.xid));
        if let Ok(t) = std::fs::read_to_string(dir.join("cpuacct.usage")) {
            return t.trim().parse::<u64>().unwrap() / 1_000_000;
        }
        if let Ok(t) = std::fs::read_to_string(dir.join("cpu.stat")) {
            if let Some(l) = t.lines().find(|l| l.starts_with("usage_usec ")) {
                return l[11..].trim().parse::<u64>().unwrap() / 1000;
            }
        }
    }
    panic!("no CPU accounting for vx-{}", g.xid);
}

#[test]
fn the_process_limit_and_the_token_bucket_hold() {
    let g = Guest::new(
        "limits",
        40103,
        &[
            ("rlimits/nproc", "12\n"),
            ("flags", "sched_hard\n"),
            ("sched/fill-rate", "1\n"),
            ("sched/interval", "5\n"),
        ],
    );
    g.ok(&["start"]);
    // pids.max: forks beyond 12 tasks fail inside.
    let out = g.vserver(&[
        "exec",
        "/bin/sh",
        "-c",
        "for i in $(seq 20); do sleep 5 & done; wait",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can't fork"),
        "{out:?}"
    );
    // fill-rate/interval 1/5: a 2 s busy loop gets 0.40 s of CPU.
    let before = cpu_ms(&g);
    let _ = g.vserver(&[
        "exec",
        "/bin/timeout",
        "2",
        "/bin/sh",
        "-c",
        "while :; do :; done",
    ]);
    let used = cpu_ms(&g) - before;
    assert!(
        (380..=420).contains(&used),
        "{used} ms of CPU, expected 400 ± 5%"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing() {
    let g = Guest::new("bad", 40104, &[("flags", "no_such_flag\n")]);
    let out = g.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flags") && err.contains("unknown context flag 'no_such_flag'"),
        "{err}"
    );
    assert!(g.cgroup_dirs().is_empty());
    let out = g.cmd(VSERVER).args(["nosuch", "start"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown vserver 'nosuch'"));
    let out = g.cmd(VSERVER).args(["bad", "frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // An init that cannot run: the start fails and removes what it made.
    let g = Guest::new(
        "noinit",
        40105,
        &[("apps/init/cmd.start", "/sbin/nonexistent\n")],
    );
    let out = g.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exec /sbin/nonexistent") && err.contains("No such file"),
        "{err}"
    );
    g.wait_until("no cgroups left", || g.cgroup_dirs().is_empty());
    assert_eq!(g.vserver(&["status"]).status.code(), Some(3));
    // exec of a stopped guest.
    let out = g.vserver(&["exec", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));
    // A context in use by another guest.
    let a = Guest::new("one", 40106, &[]);
    a.ok(&["start"]);
    let b = Guest::new("two", 40106, &[]);
    std::fs::remove_dir_all(b.dir.path().join("run")).unwrap();
    std::os::unix::fs::symlink(a.dir.path().join("run"), b.dir.path().join("run")).unwrap();
    let out = b.vserver(&["start"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("context 40106 is in use by vserver 'one'")
    );
}

#[test]
fn exec_and_suexec_exit_as_their_command_did() {
    let g = Guest::new("exits", 40107, &[]);
    g.ok(&["start"]);
    assert_eq!(
        g.vserver(&["exec", "/bin/sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let killed = g.vserver(&["exec", "/bin/sh", "-c", "kill -9 $$"]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(killed.status.signal(), Some(9), "{killed:?}");
    assert_eq!(g.ok(&["suexec", "guest", "/bin/id", "-u"]).trim(), "1000");
    assert_eq!(g.ok(&["exec", "/bin/id", "-u"]).trim(), "0");
    let out = g.vserver(&["suexec", "nobody-here", "/bin/id"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user 'nobody-here'"),
        "{out:?}"
    );
}

#[test]
fn a_guest_cannot_reach_the_host() {
    let g = Guest::new("jail", 40108, &[]);
    g.ok(&["start"]);
    let fails = |script: &str| {
        let out = g.vserver(&["exec", "/bin/sh", "-c", script]);
        assert!(!out.status.success(), "{script} succeeded: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(fails("mount -t tmpfs none /tmp").contains("permission denied"));
    assert!(fails("hostname evil").contains("Operation not permitted"));
    fails("dmesg");
    fails("echo 1 > /proc/sys/kernel/domainname");
    fails("echo x > /sys/kernel/uevent_helper");
    let caps = g.ok(&["exec", "/bin/grep", "CapBnd", "/proc/self/status"]);
    let bnd = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(bnd, vxfs_kernel::names::BCAPS_SECURE, "{caps}");
    for masked in ["/proc/keys", "/proc/timer_list"] {
        if Path::new(masked).exists() {
            assert_eq!(
                g.ok(&["exec", "/bin/cat", masked]),
                "",
                "{masked} is masked"
            );
        }
    }
    // No host process is visible.
    let ps = g.ok(&["exec", "/bin/ps"]);
    assert!(!ps.contains("cargo") && !ps.contains("process_api"), "{ps}");
}

#[test]
fn a_guest_network_namespace_with_a_veth_pair() {
    let g = Guest::new(
        "net",
        40109,
        &[
            ("interfaces/0/ip", "169.254.41.2\n"),
            ("interfaces/0/prefix", "30\n"),
            ("interfaces/0/peer", "169.254.41.1\n"),
            ("interfaces/0/host", "vxtest41\n"),
        ],
    );
    g.ok(&["start"]);
    let inside = g.ok(&["exec", "/bin/ip", "-4", "addr"]);
    assert!(inside.contains("169.254.41.2/30"), "{inside}");
    assert!(Path::new("/sys/class/net/vxtest41").exists());
    let ping = Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", "169.254.41.2"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    g.ok(&["stop"]);
    g.wait_until("the veth pair gone", || {
        !Path::new("/sys/class/net/vxtest41").exists()
    });
}

#[test]
fn a_guest_on_the_shared_vxfs_mount_is_charged_for_its_files() {
    let scratch = common::scratch();
    let mount = common::Mount::scratch(
        &scratch,
        &format!("xid=cgroup,index={}", common::index(&scratch).display()),
    );
    let root = mount.path().join("shared");
    std::fs::create_dir(&root).unwrap();
    let g = Guest::with_root("tagged", 40110, &[], Some(&root));
    let chxid = Command::new(common::CHXID)
        .args(["-R", "-c", "40110"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(chxid.status.success(), "{chxid:?}");
    // The barrier on the directory that holds the guests' roots (as the
    // README says) does not keep the guest from starting.
    let barrier = Command::new(common::SETATTR)
        .arg("--barrier")
        .arg(mount.path())
        .output()
        .unwrap();
    assert!(barrier.status.success(), "{barrier:?}");
    g.ok(&["start"]);
    assert_eq!(
        g.ok(&["exec", "/bin/ls", "/.."]),
        g.ok(&["exec", "/bin/ls", "/"]),
        "no way above its root"
    );
    g.ok(&[
        "exec",
        "/bin/sh",
        "-c",
        "head -c 100000 /dev/zero > /tmp/data",
    ]);
    let tag = common::backing_xattr(&scratch.src().join("shared/tmp/data"), "trusted.vxfs.xid");
    assert_eq!(
        tag.as_deref(),
        Some("40110"),
        "the guest's file carries its context"
    );
    let report = Command::new(common::VDLIMIT)
        .args(["--xid", "40110"])
        .arg(mount.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    let used: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("space_used="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(used >= 100, "{report}");
    g.ok(&["stop"]);
    drop(g);
    drop(mount);
}

#[test]
fn vps_vkill_vwait_and_vxctl_see_the_context() {
    let g = Guest::new("watched", 40111, &[]);
    g.ok(&["start"]);
    let init = g.init_pid();
    let bin = |name: &str| Path::new(VSERVER).with_file_name(name);
    let run = |name: &str, args: &[&str]| {
        g.cmd(bin(name).to_str().unwrap())
            .args(args)
            .output()
            .unwrap()
    };
    // vps: the CONTEXT column after PID.
    let ps = String::from_utf8(run("vps", &["-e", "-o", "pid,comm"]).stdout).unwrap();
    let header = ps.lines().next().unwrap();
    assert!(
        header.trim_start().starts_with("PID CONTEXT "),
        "{header:?}"
    );
    let line = ps
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{init} ")))
        .unwrap_or_else(|| panic!("init {init} in\n{ps}"));
    assert!(line.contains("40111 watched"), "{line}");
    assert!(ps.lines().any(|l| l.contains("    0 MAIN")), "{ps}");
    // vxctl lookup.
    let lookup = String::from_utf8(run("vxctl", &["lookup", &init.to_string()]).stdout).unwrap();
    assert!(
        lookup.starts_with(&format!(
            "{init}: context 40111 (watched), from /proc/{init}/cgroup: "
        )),
        "{lookup}"
    );
    let doctor = run("vxctl", &["doctor"]);
    assert!(doctor.status.success(), "{doctor:?}");
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("pid namespace"));
    // vwait times out while it runs, vkill of a process not in it fails.
    let out = run("vwait", &["--timeout", "1", "--status-fd", "1", "watched"]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(2), "TIMEOUT\n")
    );
    let out = run(
        "vkill",
        &["--xid", "watched", &std::process::id().to_string()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a process of context 40111"));
    // vkill of init (TERM, which it handles): vwait reports how it ended.
    let waiter = g
        .cmd(bin("vwait").to_str().unwrap())
        .args(["--status-fd", "1", "40111"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        run("vkill", &["-c", "40111", "-s", "TERM", "1"])
            .status
            .success()
    );
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "FINISHED 0\n")
    );
    g.wait_until("stopped", || {
        g.vserver(&["status"]).status.code() == Some(3)
    });
}

#[test]
fn vlimit_vsched_vuname_and_vattribute_change_a_running_guest() {
    let g = Guest::new("tuned", 40112, &[("flags", "sched_hard\n")]);
    g.ok(&["start"]);
    let bin = |name: &str| Path::new(VSERVER).with_file_name(name);
    let run = |name: &str, args: &[&str]| {
        let out = g
            .cmd(bin(name).to_str().unwrap())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = run(
        "vlimit",
        &[
            "-c", "tuned", "--nproc", "15", "--nofile", "128", "-a", "-d",
        ],
    );
    assert!(
        shown
            .lines()
            .any(|l| l == "NPROC       N/A                 15                  15"),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("NOFILE ") && l.ends_with(" 128")),
        "{shown}"
    );
    assert_eq!(
        g.ok(&["exec", "/bin/sh", "-c", "ulimit -n"]).trim(),
        "128",
        "exec takes init's limits"
    );
    run(
        "vsched",
        &["--xid", "40112", "--fill-rate", "1", "--interval", "5"],
    );
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu/vxfs/vx-40112/cpu.cfs_quota_us")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/vxfs/vx-40112/cpu.max"))
        .unwrap();
    assert!(quota.starts_with("4000"), "{quota}");
    let uname = run("vuname", &["--xid", "tuned"]);
    let fields: Vec<&str> = uname.split(' ').collect();
    assert!(
        fields[0].ends_with("/etc/tuned") && fields[1] == "Linux" && fields[2] == "tuned",
        "{uname}"
    );
    run(
        "vuname",
        &["-s", "--xid", "tuned", "-t", "nodename=renamed"],
    );
    assert_eq!(g.ok(&["exec", "/bin/hostname"]).trim(), "renamed");
    assert_eq!(
        run("vattribute", &["--xid", "tuned", "--get"]),
        "bcapabilities:\nCHOWN,DAC_OVERRIDE,DAC_READ_SEARCH,FOWNER,FSETID,KILL,SETGID,SETUID,\
         NET_BIND_SERVICE,SYS_CHROOT,SYS_PTRACE,SYS_BOOT,SYS_TTY_CONFIG,LEASE,AUDIT_WRITE,SETFCAP\n\
         ccapabilities:\nset_utsname,raw_icmp,audit_control\n\
         flags:\nsched_hard,virt_uptime,hide_netif,sc_helper\n"
    );
    run(
        "vattribute",
        &["--xid", "tuned", "--set", "--flag", "sched_pause"],
    );
    let frozen = |want: &str| {
        let f = Path::new("/sys/fs/cgroup/unified/vxfs/vx-40112/cgroup.freeze");
        let f = if f.exists() {
            f.to_path_buf()
        } else {
            PathBuf::from("/sys/fs/cgroup/vxfs/vx-40112/cgroup.freeze")
        };
        std::fs::read_to_string(f).unwrap().trim() == want
    };
    assert!(frozen("1"));
    run(
        "vattribute",
        &["--xid", "tuned", "--set", "--flag", "~sched_pause"],
    );
    assert!(frozen("0"));
    let out = g
        .cmd(bin("vattribute").to_str().unwrap())
        .args(["--xid", "tuned", "--set", "--bcap", "SYS_ADMIN"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stop_commands_run_inside_and_the_supervisor_survives_them() {
    // plain: the guest's init with a stop command of its own.
    let g = Guest::new(
        "stopcmd",
        40113,
        &[("apps/init/cmd.stop", "/bin/touch /var/log/stopped\n")],
    );
    g.ok(&["start"]);
    let supervisor = g.state()["supervisor"].as_u64().unwrap();
    g.ok(&["stop"]);
    assert!(
        g.root().join("var/log/stopped").exists(),
        "the stop command ran inside"
    );
    assert!(g.cgroup_dirs().is_empty(), "{:?}", g.cgroup_dirs());
    g.wait_until("the supervisor ended", || {
        std::fs::read_to_string(format!("/proc/{supervisor}/stat"))
            .map_or(true, |s| s.contains(") Z "))
    });
    assert!(
        !g.console().contains("removing its cgroups"),
        "{}",
        g.console()
    );
    // sysv: vxfs's minimal init runs the start command and reaps.
    let s = Guest::new(
        "sysv",
        40114,
        &[
            ("apps/init/style", "sysv\n"),
            ("apps/init/cmd.start", "/bin/touch /var/log/rc-started\n"),
            ("apps/init/cmd.stop", "/bin/touch /var/log/rc-stopped\n"),
        ],
    );
    s.ok(&["start"]);
    s.wait_until("the start command ran", || {
        s.root().join("var/log/rc-started").exists()
    });
    let init = s.ok(&["exec", "/bin/cat", "/proc/1/cmdline"]);
    assert!(
        !init.contains("/sbin/init"),
        "pid 1 is vxfs's init: {init:?}"
    );
    s.ok(&["stop"]);
    assert!(s.root().join("var/log/rc-stopped").exists());
    assert!(s.cgroup_dirs().is_empty());
}

#[test]
fn a_guest_in_its_own_user_namespace_is_an_unprivileged_range_on_the_host() {
    let base: u32 = 40115 * 65536;
    let g = Guest::new("userns", 40115, &[("spaces/user", "")]);
    // Its tree belongs to its range, as the filesystem's uid-range mode
    // (or chown) gives it.
    let chown = Command::new("chown")
        .args(["-R", &format!("{base}:{base}")])
        .arg(g.root())
        .status()
        .unwrap();
    assert!(chown.success());
    g.ok(&["start"]);
    let inside = g.ok(&[
        "exec",
        "/bin/sh",
        "-c",
        "id -u; cat /proc/self/uid_map; touch /tmp/made; ls -n /tmp/made",
    ]);
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines[0], "0", "root inside: {inside}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", &base.to_string(), "65536"]
    );
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(g.root().join("tmp/made")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (base, base),
        "its root is uid {base} on the host"
    );
    let init = g.init_pid();
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains(&base.to_string()), "{uid_line}");
    g.ok(&["stop"]);
}

#[test]
fn vcontext_creates_and_enters_contexts_and_vnamespace_enters_their_mounts() {
    // Its configuration is not used: the guard gives a root, a registry,
    // and removes context 40120's processes and cgroups whatever happens.
    let g = Guest::new("unconfigured", 40120, &[]);
    std::fs::write(g.root().join("marker"), "the guest's\n").unwrap();
    let bin = |name: &str| Path::new(VSERVER).with_file_name(name);
    let run = |name: &str, args: &[&str]| {
        g.cmd(bin(name).to_str().unwrap())
            .current_dir(g.root())
            .args(args)
            .output()
            .unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    // In the foreground: PROGRAM is pid 1 of the context, in its root, and
    // vcontext ends as it did; PROGRAM's options are its own.
    let out = run(
        "vcontext",
        &[
            "--create",
            "--xid",
            "40120",
            "--chroot",
            "/bin/sh",
            "-c",
            "echo $$; cat /marker; ls /proc | grep -c '^[0-9]'; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(text(&out.stdout), "1\nthe guest's\n3\n", "{out:?}");
    let out = run(
        "vcontext",
        &[
            "--create", "--xid", "40120", "--uid", "1000", "--chroot", "--", "id", "-u",
        ],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "1000\n".into()),
        "{out:?}"
    );
    // Without --chroot: the host's files, the context's own /proc, a small
    // /dev.
    let host_file = g.dir.path().join("host-file");
    std::fs::write(&host_file, "the host's\n").unwrap();
    let out = run(
        "vcontext",
        &[
            "--create",
            "--xid",
            "40120",
            "/bin/busybox",
            "sh",
            "-c",
            &format!(
                "/bin/busybox cat {}; /bin/busybox ls /proc | /bin/busybox grep -c '^[0-9]'; /bin/busybox ls /dev",
                host_file.display()
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("the host's\n3\n"), "{stdout}");
    assert!(
        !stdout.contains("kmsg") && !stdout.contains("fuse"),
        "{stdout}"
    );
    // Left running: it exists (254), can be entered, and its mounts too,
    // by a statically linked host program only.
    let out = run(
        "vcontext",
        &[
            "--create",
            "--xid",
            "40120",
            "--chroot",
            "--disconnect",
            "/bin/sleep",
            "600",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stderr), "New security context is 40120\n");
    let out = run("vcontext", &["--create", "--xid", "40120", "true"]);
    assert_eq!(out.status.code(), Some(254), "{out:?}");
    let out = run(
        "vcontext",
        &[
            "--migrate",
            "--xid",
            "40120",
            "--",
            "sh",
            "-c",
            "cat /marker; exit 5",
        ],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(5), "the guest's\n".into()),
        "{out:?}"
    );
    let init = g.state()["init"].as_u64().unwrap();
    let lookup = text(&run("vxctl", &["lookup", &init.to_string()]).stdout);
    assert!(
        lookup.starts_with(&format!("{init}: context 40120")),
        "{lookup}"
    );
    let out = run(
        "vnamespace",
        &["-e", "40120", "/bin/busybox", "cat", "/marker"],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "the guest's\n".into()),
        "{out:?}"
    );
    let out = run("vnamespace", &["--enter", "40120", "--", "cat", "/marker"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(text(&out.stderr).contains("dynamically linked"), "{out:?}");
    // Bad usage is 255 too, never a code PROGRAM could give.
    for bad in [
        &["--migrate", "true"][..],
        &["--create", "--migrate-self", "true"],
    ] {
        assert_eq!(run("vcontext", bad).status.code(), Some(255), "{bad:?}");
    }
    // Killing it leaves nothing.
    assert!(
        run("vkill", &["--xid", "40120", "-s", "KILL"])
            .status
            .success()
    );
    g.wait_until("context 40120 gone", || {
        g.cgroup_dirs().is_empty() && !g.dir.path().join("run/40120").exists()
    });
}

#[test]
fn hooks_sysctls_ionice_and_personality_are_applied() {
    let log = |hook: &str| format!("#!/bin/sh\necho {hook} $1 $2 >> \"$VXFS_HOOK_LOG\"\n");
    let hooks = [
        "initialize",
        "prepre-start",
        "pre-start",
        "post-start",
        "pre-stop",
        "post-stop",
        "postpost-stop",
    ];
    let scripts: Vec<(String, String)> = hooks
        .iter()
        .map(|h| (format!("scripts/{h}"), log(h)))
        .collect();
    let mut files: Vec<(&str, &str)> = scripts
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    files.extend([
        ("sysctl/0/setting", "kernel.shmmni\n"),
        ("sysctl/0/value", "1234\n"),
        ("ionice/class", "idle\n"),
        ("personality", "linux32\n"),
        ("ulimits/nofile", "100\n"),
    ]);
    let g = Guest::new("tuned2", 40121, &files);
    let conf = g.dir.path().join("etc/tuned2/scripts");
    for h in hooks {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(conf.join(h), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let hook_log = g.dir.path().join("hooks.log");
    let out = g
        .cmd(VSERVER)
        .env("VXFS_HOOK_LOG", &hook_log)
        .args(["tuned2", "start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A file vxfs does not apply says so.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ulimits: not applied"),
        "{out:?}"
    );
    assert_eq!(g.ok(&["exec", "cat", "/proc/sys/kernel/shmmni"]), "1234\n");
    // The host's own value is untouched (the guest's IPC namespace has it).
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        "1234\n"
    );
    let init = g.init_pid();
    assert_eq!(
        g.ok(&["exec", "uname", "-m"]),
        "i686\n",
        "linux32 is inherited"
    );
    let ionice = Command::new("ionice")
        .args(["-p", &init.to_string()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ionice.stdout), "idle\n");
    let out = g
        .cmd(VSERVER)
        .env("VXFS_HOOK_LOG", &hook_log)
        .args(["tuned2", "stop"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let logged: Vec<String> = std::fs::read_to_string(&hook_log)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(logged, hooks, "util-vserver's order");
    assert!(
        std::fs::read_to_string(&hook_log)
            .unwrap()
            .contains("initialize tuned2")
    );
}

/// A host veth pair, removed on drop: a parent device for a macvlan.
struct HostLink(&'static str);

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).status();
    }
}

#[test]
fn a_guest_network_namespace_with_a_macvlan() {
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&[
        "link", "add", "vxmvp0", "type", "veth", "peer", "name", "vxmvp1",
    ]);
    let _link = HostLink("vxmvp0");
    ip(&["addr", "add", "169.254.43.1/24", "dev", "vxmvp1"]);
    ip(&["link", "set", "vxmvp0", "up"]);
    ip(&["link", "set", "vxmvp1", "up"]);
    let g = Guest::new(
        "macvlan",
        40122,
        &[
            ("interfaces/0/type", "macvlan\n"),
            ("interfaces/0/dev", "vxmvp0\n"),
            ("interfaces/0/ip", "169.254.43.2\n"),
            ("interfaces/0/prefix", "24\n"),
        ],
    );
    g.ok(&["start"]);
    let inside = g.ok(&["exec", "/bin/ip", "-4", "addr"]);
    assert!(inside.contains("169.254.43.2/24"), "{inside}");
    // Frames from the host's side of the parent reach the guest's macvlan.
    let ping = Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", "169.254.43.2"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    g.ok(&["stop"]);
    let links = Command::new("ip")
        .args(["-o", "link", "show", "type", "macvlan"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("@vxmvp0"),
        "no macvlan left on the parent: {links}"
    );
}

#[test]
fn the_event_journal_records_a_guests_life() {
    let g = Guest::new("journaled", 40123, &[]);
    let bin = |name: &str| Path::new(VSERVER).with_file_name(name);
    g.ok(&["start"]);
    g.ok(&["exec", "echo"]);
    let out = g
        .cmd(bin("vlimit").to_str().unwrap())
        .args(["--xid", "journaled", "--nproc", "50"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    g.ok(&["stop"]);
    let out = g
        .cmd(bin("vxctl").to_str().unwrap())
        .args(["history", "--xid", "journaled", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["start", "enter", "limit", "stop"], "{events:?}");
    assert!(events.iter().all(|e| e["xid"] == 40123));
    assert!(events[2]["detail"].as_str().unwrap().contains("--nproc 50"));
    assert_eq!(events[3]["detail"], "init ended 0");
    // Text form, and another context's filter shows nothing of it.
    let text = g
        .cmd(bin("vxctl").to_str().unwrap())
        .args(["history"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("40123  journaled        start"), "{text}");
    let other = g
        .cmd(bin("vxctl").to_str().unwrap())
        .args(["history", "--xid", "40999"])
        .output()
        .unwrap();
    assert!(other.stdout.is_empty(), "{other:?}");
}

/// `MemTotal` (kB) of a meminfo text.
fn mem_total_kb(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo}"))
}

/// The guest flags that ask for vxproc's files, a 64 MiB memory limit and
/// CPU 1 alone.
const VIRT_FILES: &[(&str, &str)] = &[
    ("flags", "virt_mem\nvirt_cpu\nvirt_load\n"),
    ("rlimits/rss.hard", "16384\n"),
    ("cpuset/cpus", "1\n"),
];

#[test]
fn a_guest_reads_its_own_memory_cpu_and_load_figures_from_vxproc() {
    let g = Guest::new("figures", 40130, VIRT_FILES);
    g.ok(&["start"]);
    let inside = |path: &str| g.ok(&["exec", "/bin/cat", path]);
    let host_meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let meminfo = inside("/proc/meminfo");
    assert_eq!(mem_total_kb(&meminfo), 65536, "{meminfo}");
    assert!(
        mem_total_kb(&host_meminfo) > 65536,
        "the host keeps the kernel's file"
    );
    // 8 MiB in its /dev/shm (tmpfs pages are charged to its memory
    // cgroup): gone from its free memory, shown as shared memory.
    let kb = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    g.ok(&[
        "exec",
        "/bin/sh",
        "-c",
        "head -c 8388608 /dev/zero > /dev/shm/fill",
    ]);
    let meminfo = inside("/proc/meminfo");
    assert!(kb(&meminfo, "MemFree:") <= 65536 - 8192, "{meminfo}");
    assert!(kb(&meminfo, "Shmem:") >= 8192, "{meminfo}");
    assert!(kb(&meminfo, "MemAvailable:") <= 65536, "{meminfo}");
    assert!(
        inside("/proc/swaps").starts_with("Filename"),
        "the swaps header"
    );
    // CPUs: its cpuset, numbered as sched_getaffinity numbers them.
    assert_eq!(inside("/sys/devices/system/cpu/online"), "1\n");
    let cpuinfo = inside("/proc/cpuinfo");
    let processors: Vec<&str> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .collect();
    assert_eq!(processors.len(), 1, "{cpuinfo}");
    assert!(processors[0].ends_with(": 1"), "{cpuinfo}");
    let stat = inside("/proc/stat");
    let cpus: Vec<&str> = stat.lines().filter(|l| l.starts_with("cpu")).collect();
    assert_eq!(cpus.len(), 2, "the sum and cpu1: {stat}");
    assert!(cpus[1].starts_with("cpu1 "), "{stat}");
    assert_eq!(g.ok(&["exec", "/bin/nproc"]).trim(), "1");
    // Read-only, and the files stay vxproc's whatever the guest tries.
    let out = g.vserver(&["exec", "/bin/sh", "-c", "echo x > /proc/meminfo"]);
    assert!(!out.status.success(), "{out:?}");
    // Two busy loops on its one CPU: its load rises toward 2 (the kernel's
    // EWMA sampled every 5 s), while its first reading was near 0.
    let load1 = |text: &str| -> f64 { text.split(' ').next().unwrap().parse().unwrap() };
    let before = inside("/proc/loadavg");
    assert!(load1(&before) < 0.3, "{before}");
    g.ok(&[
        "exec",
        "/bin/sh",
        "-c",
        "for i in 1 2; do (while :; do :; done) >/dev/null 2>&1 & done",
    ]);
    std::thread::sleep(Duration::from_secs(21));
    let after = inside("/proc/loadavg");
    // 2·(1 - (1884/2048)^4) = 0.57 after four samples, 0.69 after five.
    let l = load1(&after);
    assert!((0.45..=0.8).contains(&l), "{after}");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let (running, threads) = fields[3].split_once('/').unwrap();
    assert!(running.parse::<u32>().unwrap() >= 2, "{after}");
    assert!(
        threads.parse::<u32>().unwrap() < 20,
        "the guest's threads: {after}"
    );
    let host_threads: u32 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/')?.1.parse().ok())
        .unwrap();
    assert!(host_threads > threads.parse::<u32>().unwrap());
    g.ok(&["stop"]);
}

#[test]
fn a_guest_outlives_its_vxproc_and_gets_it_back() {
    let g = Guest::new("survivor", 40131, VIRT_FILES);
    g.ok(&["start"]);
    let meminfo = || g.vserver(&["exec", "/bin/cat", "/proc/meminfo"]);
    assert_eq!(
        mem_total_kb(&String::from_utf8_lossy(&meminfo().stdout)),
        65536
    );
    // Killed outright: the guest's files are dead until its supervisor
    // starts a new vxproc and binds its files again.
    let lock = std::fs::read_to_string(g.dir.path().join("proc.lock")).unwrap();
    let pid = lock.trim();
    assert!(
        Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = meminfo();
        if out.status.success() {
            assert_eq!(mem_total_kb(&String::from_utf8_lossy(&out.stdout)), 65536);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vxproc never came back: {out:?}\n{}",
            g.console()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let new = std::fs::read_to_string(g.dir.path().join("proc.lock")).unwrap();
    assert_ne!(new.trim(), pid, "a new daemon");
    assert!(g.console().contains("vxproc restarted"), "{}", g.console());
    g.ok(&["stop"]);

    // No vxproc at all: the guest starts and reads the kernel's files.
    let g = Guest::new("without", 40132, VIRT_FILES);
    let out = g
        .cmd(VSERVER)
        .env("VXFS_VXPROC", "/nonexistent/vxproc")
        .args(["without", "start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let host = mem_total_kb(&std::fs::read_to_string("/proc/meminfo").unwrap());
    let text = g.ok(&["exec", "/bin/cat", "/proc/meminfo"]);
    assert_eq!(mem_total_kb(&text), host, "the kernel's file");
    g.wait_until("the console says why", || g.console().contains("vxproc:"));
    g.ok(&["stop"]);
}

#[test]
fn vxctl_virtual_shows_a_context_in_vservers_formats() {
    let g = Guest::new(
        "vv1",
        40133,
        &[
            ("flags", "sched_hard\n"),
            ("rlimits/nproc.hard", "50\n"),
            ("rlimits/rss.hard", "16384\n"),
            ("sched/fill-rate", "1\n"),
            ("sched/interval", "4\n"),
        ],
    );
    g.ok(&["start"]);
    let vxctl = |args: &[&str]| {
        g.cmd(Path::new(VSERVER).with_file_name("vxctl").to_str().unwrap())
            .arg("virtual")
            .args(args)
            .output()
            .unwrap()
    };
    let text = |args: &[&str]| {
        let out = vxctl(args);
        assert!(out.status.success(), "vxctl virtual {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let field = |t: &str, key: &str| -> String {
        t.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {t}"))
            .trim()
            .to_string()
    };
    let global = text(&[]);
    assert!(global.starts_with("VCIVersion:\t0002:0003\n"), "{global}");
    assert_eq!(field(&global, "#CActive:"), "1");
    let state = g.state();
    let info = text(&["vv1", "info"]);
    assert_eq!(field(&info, "ID:"), "40133");
    assert_eq!(field(&info, "Init:"), g.init_pid().to_string());
    let status = text(&["40133"]);
    assert_eq!(
        u64::from_str_radix(&field(&status, "Flags:"), 16).unwrap(),
        state["cflags"].as_u64().unwrap()
    );
    let spaces = u64::from_str_radix(&field(&status, "Spaces:"), 16).unwrap();
    assert_ne!(spaces & libc::CLONE_NEWPID as u64, 0, "{status}");
    assert_eq!(
        spaces & libc::CLONE_NEWNET as u64,
        0,
        "no network namespace"
    );
    let tasks: u32 = field(&status, "Tasks:").parse().unwrap();
    assert!(tasks >= 1, "{status}");
    // The process and memory limits, as VServer's limit file shows them.
    let limit = text(&["vv1", "limit"]);
    let row = |name: &str| -> Vec<String> {
        field(&limit, &format!("{name}:"))
            .split(['\t', '/'])
            .map(|f| f.trim().to_string())
            .collect()
    };
    assert_eq!(row("PROC")[3..5], ["50", "50"], "{limit}");
    assert_eq!(row("RSS")[4], "16384", "{limit}");
    assert_eq!(row("DENT")[3..5], ["-1", "-1"], "not counted: {limit}");
    let sched = text(&["vv1", "sched"]);
    assert!(
        sched.starts_with("FillRate:\t       1,1\nInterval:\t       4,4\n"),
        "{sched}"
    );
    let cvirt = text(&["vv1", "cvirt"]);
    assert_eq!(field(&cvirt, "NodeName:"), "vv1");
    let ns = text(&["vv1", "nsproxy"]);
    let pid_ns = std::fs::read_link(format!("/proc/{}/ns/pid", g.init_pid())).unwrap();
    assert!(
        pid_ns.to_string_lossy().contains(&field(&ns, "pid:")),
        "{ns} vs {pid_ns:?}"
    );
    let cacct = vxctl(&["vv1", "cacct"]);
    assert_eq!(cacct.status.code(), Some(1), "{cacct:?}");
    assert_eq!(vxctl(&["vv1", "bogus"]).status.code(), Some(2));
    g.ok(&["stop"]);
    assert_eq!(
        vxctl(&["vv1", "status"]).status.code(),
        Some(1),
        "not running"
    );
}

#[test]
fn a_guests_uname_and_sysinfo_answer_with_its_own_figures() {
    let mut files = VIRT_FILES.to_vec();
    files.push(("uts/release", "2.6.99-vx\n"));
    files.push(("uts/machine", "vx64\n"));
    // Its stop command asks too: the supervisor answers while it stops.
    files.push(("apps/init/cmd.stop", "/sbin/stopper\n"));
    let g = Guest::new("answered", 40134, &files);
    let stopper = g.root().join("sbin/stopper");
    std::fs::write(&stopper, "#!/bin/sh\nuname -r > /var/log/stopped-as\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stopper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A host-side post-start hook entering the guest: its uname is
    // answered while the supervisor waits for the hook.
    let scripts = g.dir.path().join("etc/answered/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let hooked = g.dir.path().join("hooked");
    std::fs::write(
        scripts.join("post-start"),
        format!(
            "#!/bin/sh\n{VSERVER} \"$2\" exec /bin/uname -r > {}\n",
            hooked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        scripts.join("post-start"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    g.ok(&["start"]);
    g.wait_until("the post-start hook's exec answered", || {
        std::fs::read_to_string(&hooked).is_ok_and(|t| t == "2.6.99-vx\n")
    });
    // uname(2): the configured fields, the guest's own node name, the
    // kernel's version.
    let host = rustix::system::uname();
    let u = g.ok(&["exec", "/bin/uname", "-srnmv"]);
    assert_eq!(
        u.trim(),
        format!(
            "Linux answered 2.6.99-vx {} vx64",
            host.version().to_string_lossy()
        )
    );
    // sysinfo(2), which busybox free reads: the memory limit as the total.
    let free = g.ok(&["exec", "/bin/free"]);
    let total: u64 = free
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{free}"));
    assert_eq!(total, 65536, "{free}");
    // A child of an entered command inherits the filter: still answered.
    let nested = g.ok(&["exec", "/bin/sh", "-c", "sh -c 'uname -r'"]);
    assert_eq!(nested.trim(), "2.6.99-vx");
    let up = g.ok(&["exec", "/bin/uptime"]);
    assert!(up.contains("up 0 min"), "its own uptime: {up}");
    // The host's are untouched.
    let out = Command::new("uname").arg("-r").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        host.release().to_string_lossy()
    );
    let t = Instant::now();
    g.ok(&["stop"]);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "stopped without waiting on an answer"
    );
    assert_eq!(
        std::fs::read_to_string(g.root().join("var/log/stopped-as")).unwrap(),
        "2.6.99-vx\n"
    );
}

#[test]
fn a_guests_diskstats_count_its_direct_io() {
    let g = Guest::new("disks", 40135, VIRT_FILES);
    g.ok(&["start"]);
    // Direct writes are the block I/O a cgroup is charged for on every
    // layout (v1 charges buffered writeback to the flusher).
    g.ok(&[
        "exec",
        "/bin/dd",
        "if=/dev/zero",
        "of=/tmp/direct",
        "bs=1M",
        "count=4",
        "oflag=direct",
    ]);
    // The device holding the guest's root.
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(g.root()).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stats = g.ok(&["exec", "/bin/cat", "/proc/diskstats"]);
    let line = stats
        .lines()
        .find(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 9 && w[0] == major.to_string() && w[1] == minor.to_string()
        })
        .unwrap_or_else(|| {
            let counters: Vec<String> = g
                .cgroup_dirs()
                .iter()
                .flat_map(|d| {
                    ["io.stat", "blkio.throttle.io_service_bytes_recursive"]
                        .map(|f| std::fs::read_to_string(d.join(f)).unwrap_or_default())
                })
                .filter(|t| !t.is_empty())
                .collect();
            panic!("no line for {major}:{minor} in\n{stats}\nits cgroups' counters: {counters:?}")
        });
    let sectors_written: u64 = line.split_whitespace().nth(9).unwrap().parse().unwrap();
    assert!(sectors_written >= 8192, "4 MiB written: {line}");
    // vserver-stat --json counts it too.
    let out = g.cmd(VSERVER_STAT).arg("--json").output().unwrap();
    let row: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["xid"] == 40135)
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(row["io_write_bytes"].as_u64().unwrap() >= 4 << 20, "{row}");
    // The host's own file is the kernel's, with every device.
    let host = std::fs::read_to_string("/proc/diskstats").unwrap();
    assert!(host.lines().count() >= stats.lines().count());
    g.ok(&["stop"]);
}

#[test]
fn a_guest_sharing_the_hosts_network_stack_keeps_to_its_addresses() {
    // The "host's stack" is a namespace the test made: the supervisor and
    // everything it starts run in it.
    let ns = common::NetNs::new("share", &["10.77.1.1/24"]);
    let g = Guest::new(
        "share",
        40140,
        &[
            ("nonetns", ""),
            ("interfaces/0/ip", "10.77.1.5\n"),
            ("interfaces/0/prefix", "24\n"),
            ("interfaces/0/dev", "lo\n"),
            ("interfaces/0/name", "share\n"),
        ],
    );
    common::install_host_program(&g.root(), common::netprobe_bin(), "netprobe");
    // Started in the test's namespace, which stands for the host's stack.
    let start_in_ns = || {
        let start = g
            .cmd("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name))
            .args(["--", VSERVER, "share", "start"])
            .output()
            .unwrap();
        assert!(start.status.success(), "{start:?}");
    };
    start_in_ns();
    // Its address was put on the device; its policy is on record.
    assert!(ns.has_address("10.77.1.5"));
    let labelled = ns.ip(&["-o", "-4", "addr", "show", "dev", "lo"]);
    assert!(
        labelled.contains("10.77.1.5/24") && labelled.contains("lo:share"),
        "{labelled}"
    );
    let state = g.state();
    assert_eq!(state["netns"], false);
    // 40140 = 0x9ccc: 127.156.204.1.
    assert_eq!(state["chbind"]["lback"], "127.156.204.1", "{state}");
    let probe = |args: &[&str]| {
        let mut all = vec!["exec", "/bin/netprobe"];
        all.extend_from_slice(args);
        g.ok(&all).trim().to_string()
    };
    assert!(probe(&["bind", "tcp", "0.0.0.0:0"]).starts_with("ok 10.77.1.5:"));
    assert_eq!(probe(&["bind", "tcp", "10.77.1.1:0"]), "err 1");
    assert_eq!(probe(&["bind", "udp", "10.77.1.9:0"]), "err 1");
    // Busybox's httpd (an IPv6 socket bound to ::) listens on its address.
    g.ok(&["exec", "/bin/busybox", "httpd", "-p", "8080", "-h", "/tmp"]);
    let tcp6 = std::fs::read_to_string("/proc/net/tcp6").unwrap();
    let listening = ns
        .cmd("cat")
        .arg("/proc/net/tcp6")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap();
    // ::ffff:10.77.1.5 port 8080, in /proc's byte order.
    assert!(
        listening.contains("0000000000000000FFFF000005014D0A:1F90"),
        "{listening}"
    );
    assert!(
        !tcp6.contains(":1F90 "),
        "nothing on the machine's own stack"
    );
    // A connection from the guest to the host leaves from its address.
    let host = ns
        .cmd(common::netprobe_bin())
        .args(["listen", "10.77.1.1:7100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(probe(&["connect", "10.77.1.1:7100"]).starts_with("ok 10.77.1.5:"));
    let out = host.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("peer 10.77.1.5:"),
        "{out:?}"
    );
    // Its localhost is its own: a daemon it runs on 127.0.0.1 is not the
    // host's 127.0.0.1.
    g.ok(&[
        "exec",
        "/bin/busybox",
        "httpd",
        "-p",
        "127.0.0.1:8081",
        "-h",
        "/tmp",
    ]);
    std::fs::write(g.root().join("tmp/index.html"), "guest\n").unwrap();
    let host_side = ns
        .cmd(common::netprobe_bin())
        .args(["connect", "127.0.0.1:8081"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&host_side.stdout).trim(), "err 111");
    let fetched = g.ok(&[
        "exec",
        "/bin/busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "http://127.0.0.1:8081/",
    ]);
    assert_eq!(fetched, "guest\n");
    // Its supervisor killed: what it left stays restricted (the programs
    // are the cgroup's), and the next start takes its address over and
    // removes it at stop.
    let supervisor = g.state()["supervisor"].as_u64().unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &supervisor.to_string()])
            .status()
            .unwrap()
            .success()
    );
    g.wait_until("the supervisor gone", || {
        !Path::new(&format!("/proc/{supervisor}")).exists()
    });
    let v2 = g
        .cgroup_dirs()
        .into_iter()
        .find(|d| d.join("cgroup.controllers").exists())
        .expect("its cgroup2 cgroup");
    let orphan = ns
        .cmd("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec /bin/busybox httpd -f -p 10.77.1.1:8082 -h /tmp",
            v2.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&orphan.stderr).contains("Operation not permitted"),
        "{orphan:?}"
    );
    start_in_ns();
    assert!(ns.has_address("10.77.1.5"));
    g.ok(&["stop"]);
    assert!(!ns.has_address("10.77.1.5"), "its address goes at stop");
}

#[test]
fn nonetns_refuses_what_would_let_a_guest_leave_its_addresses() {
    for (files, needle) in [
        (
            &[
                ("nonetns", ""),
                ("interfaces/0/ip", "10.77.2.5\n"),
                ("bcapabilities", "NET_RAW\n"),
            ][..],
            "NET_ADMIN and NET_RAW",
        ),
        (
            &[("nonetns", ""), ("spaces/net", "")][..],
            "nonetns and a network namespace",
        ),
        (
            &[
                ("nonetns", ""),
                ("interfaces/0/ip", "10.77.2.5\n"),
                ("interfaces/0/peer", "10.77.2.1\n"),
            ][..],
            "this entry only gives it addresses",
        ),
        (
            &[("nonetns", ""), ("interfaces/0/ip", "127.0.0.2\n")][..],
            "cannot be a context's address",
        ),
    ] {
        let g = Guest::new("refuse", 40141, files);
        let out = g.vserver(&["start"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{files:?}: {out:?}");
        assert!(err.contains(needle), "{files:?}: {err}");
        assert!(g.cgroup_dirs().is_empty());
    }
}

#[test]
fn the_scheduler_governor_holds_a_guest_until_its_bucket_refills() {
    // 1/4 of a CPU, a bucket of 50 ticks (0.2 s) held until it has 25
    // (0.1 s) again: a busy guest on CPU 0 drains it, then waits 0.4 s
    // with its CPU time flat, and so on; CFS's static quota would spread
    // the same quarter over every 16 ms and never stop it that long (with
    // sched/nogovernor this test fails: its longest pause is 50 ms). What
    // it uses never exceeds the bucket plus its fill, however loaded the
    // machine is (a loaded CPU only delays the first hold).
    let g = Guest::new(
        "tbf",
        40142,
        &[
            ("flags", "sched_hard\n"),
            ("sched/fill-rate", "1\n"),
            ("sched/interval", "4\n"),
            ("sched/tokens-max", "50\n"),
            ("sched/tokens-min", "25\n"),
            ("cpuset/cpus", "0\n"),
            ("cpuset/mems", "0\n"),
        ],
    );
    let started = g.ok(&["start"]);
    assert!(!started.contains("not representable"), "{started}");
    let mut busy = g.busy_loop();
    let samples = g.cpu_samples(Duration::from_secs(6));
    let _ = busy.kill();
    let _ = busy.wait();
    // Never more than the bucket and its fill (plus a step of slack).
    for &(t, u) in &samples {
        assert!(
            u <= 0.2 + 0.25 * t + 0.06,
            "{u} s of CPU at {t} s: {samples:?}"
        );
    }
    let used = samples.last().unwrap().1;
    assert!(used >= 0.5, "it ran: {used} s in 6 s: {samples:?}");
    // A hold: at least 0.3 s in which it used almost nothing.
    let longest = longest_pause(&samples);
    assert!(longest >= 0.3, "longest hold {longest} s: {samples:?}");
    g.ok(&["stop"]);
}

/// The whole disk (MAJOR, MINOR) that holds `path` (block throttles are
/// per disk, not per partition).
fn whole_disk(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev")).unwrap();
        let (a, b) = parent.trim().split_once(':').unwrap();
        return (a.parse().unwrap(), b.parse().unwrap());
    }
    (major, minor)
}

#[test]
fn io_throttles_and_weights_apply_and_vxctl_says_what_is_counted() {
    let (major, minor) = whole_disk(Path::new("/var/tmp"));
    let disk = format!("{major}:{minor}");
    // v2's names, on this hybrid host's v1 blkio (and as they are on v2).
    let g = Guest::new(
        "iolimit",
        40143,
        &[
            ("cgroup/io.max", &format!("{disk} wbps=2097152\n")),
            ("cgroup/io.weight", "300\n"),
        ],
    );
    let started = g.vserver(&["start"]);
    assert!(started.status.success(), "{started:?}");
    // A weight is BFQ's: a start on a disk with another scheduler says it
    // does nothing there.
    let scheduler =
        std::fs::read_to_string(format!("/sys/dev/block/{disk}/queue/scheduler")).unwrap();
    let said = String::from_utf8_lossy(&started.stdout).into_owned()
        + &String::from_utf8_lossy(&started.stderr);
    assert_eq!(
        said.contains("needs the BFQ scheduler"),
        !scheduler.contains("[bfq]"),
        "{scheduler}: {said}"
    );
    let v1 = Path::new("/sys/fs/cgroup/blkio").exists();
    let dirs = g.cgroup_dirs();
    let (rule_file, weight_file) = if v1 {
        ("blkio.throttle.write_bps_device", "blkio.bfq.weight")
    } else {
        ("io.max", "io.bfq.weight")
    };
    let read = |file: &str| {
        dirs.iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .unwrap_or_else(|| panic!("no {file} in {dirs:?}"))
    };
    let rule = read(rule_file);
    assert!(
        rule.lines()
            .any(|l| l.starts_with(&disk) && l.contains("2097152")),
        "{rule_file}: {rule}"
    );
    assert!(read(weight_file).contains("300"), "{weight_file}");
    // 4 MiB of direct writes at 2 MiB/s.
    let t = Instant::now();
    g.ok(&[
        "exec",
        "/bin/dd",
        "if=/dev/zero",
        "of=/tmp/direct",
        "bs=256k",
        "count=16",
        "oflag=direct",
    ]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "4 MiB at 2 MiB/s in {took:?}"
    );
    let vxctl = Path::new(VSERVER).with_file_name("vxctl");
    let io = || {
        let out = g
            .cmd(vxctl.to_str().unwrap())
            .args(["virtual", "40143", "io"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = io();
    assert!(field(&before, "WriteBytes") >= 4 << 20, "{before}");
    assert!(before.contains(&format!("Device[{disk}]:\t")), "{before}");
    if v1 {
        // Buffered writes go to disk by the kernel's flusher, charged to
        // the host on v1: the guest's counter does not see them, and says
        // so.
        assert!(
            before.contains("Counted:\tdirect and synchronous only"),
            "{before}"
        );
        g.ok(&[
            "exec",
            "/bin/dd",
            "if=/dev/zero",
            "of=/tmp/buffered",
            "bs=1M",
            "count=8",
        ]);
        assert!(Command::new("sync").status().unwrap().success());
        let after = io();
        let grew = field(&after, "WriteBytes") - field(&before, "WriteBytes");
        assert!(
            grew < 4 << 20,
            "{grew} bytes of 8 MiB buffered counted: {after}"
        );
    }
    g.ok(&["stop"]);
}

/// The longest time in `samples` (see `Guest::cpu_samples`) in which the
/// guest used under a tenth of a CPU.
fn longest_pause(samples: &[(f64, f64)]) -> f64 {
    samples
        .windows(2)
        .fold((0.0f64, None::<f64>), |(best, start), w| {
            let ((pt, pu), (t, u)) = (w[0], w[1]);
            let flat = (u - pu) < 0.1 * (t - pt);
            match (flat, start) {
                (true, None) => (best.max(t - pt), Some(pt)),
                (true, Some(s)) => (best.max(t - s), Some(s)),
                (false, _) => (best, None),
            }
        })
        .0
}

#[test]
fn vsched_hands_a_running_guest_a_bucket_to_keep() {
    // Started with the static mapping (a quarter of a CPU, no bucket):
    // never a pause. vsched gives it a bucket of 0.2 s held until 0.1 s:
    // its supervisor's governor takes over, and the pauses come.
    let g = Guest::new(
        "resched",
        40144,
        &[
            ("flags", "sched_hard\n"),
            ("sched/fill-rate", "1\n"),
            ("sched/interval", "4\n"),
            ("cpuset/cpus", "0\n"),
            ("cpuset/mems", "0\n"),
        ],
    );
    g.ok(&["start"]);
    let mut busy = g.busy_loop();
    let before = g.cpu_samples(Duration::from_secs(2));
    assert!(longest_pause(&before) < 0.2, "static: {before:?}");
    let vsched = Path::new(VSERVER).with_file_name("vsched");
    let out = g
        .cmd(vsched.to_str().unwrap())
        .args([
            "--xid",
            "resched",
            "--tokens-max",
            "50",
            "--tokens-min",
            "25",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = g.cpu_samples(Duration::from_secs(5));
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(longest_pause(&after) >= 0.3, "governed: {after:?}");
    // The rate stays vsched's merged settings' quarter of a CPU.
    let used = after.last().unwrap().1;
    assert!(used <= 0.2 + 0.25 * 5.0 + 0.1, "{used} s in 5 s");
    let console = g.console();
    assert!(!console.contains("scheduler governor:"), "{console}");
    g.ok(&["stop"]);
}

#[test]
fn the_systemd_unit_verifies_and_names_the_pid_file_the_supervisor_writes() {
    // systemd-analyze verify on an instance of the template, with the
    // binaries this build made.
    let t = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/vserver@.service"),
    )
    .unwrap();
    let bin_dir = Path::new(VSERVER).parent().unwrap().display().to_string();
    std::fs::write(
        t.path().join("vserver@.service"),
        unit.replace("/usr/local/bin", &bin_dir),
    )
    .unwrap();
    std::os::unix::fs::symlink("vserver@.service", t.path().join("vserver@web.service")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(t.path().join("vserver@web.service"))
        .output()
        .expect("run systemd-analyze (package systemd)");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no warning");
    // Its PIDFile= is where the registry puts the supervisor's pid.
    let registry = vxfs_kernel::registry::Registry::at(Path::new("/run/vxfs/ctx"));
    let want = format!("PIDFile={}", registry.pid_file("%i").display());
    assert!(unit.lines().any(|l| l == want), "{want}");
    assert!(unit.contains("\nDelegate=yes\n"));
}

#[test]
fn build_from_a_template_directory_or_tarball_then_start() {
    // A busybox tree as the template, copied (directory) or unpacked
    // (tarball) into a new guest's root; the guest then starts from it.
    let base = tempfile::Builder::new()
        .prefix("vxfs-build-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let template = base.path().join("template");
    make_root(&template);
    let tarball = base.path().join("template.tar");
    let tarred = Command::new("tar")
        .arg("-C")
        .arg(&template)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tarred.success());
    let etc = base.path().join("etc");
    let run_dir = base.path().join("run");
    std::fs::create_dir_all(&etc).unwrap();
    let vserver = |args: &[&str]| {
        Command::new(VSERVER)
            .env("VXFS_CONFDIR", &etc)
            .env("VXFS_RUNDIR", &run_dir)
            .env("VXFS_VXPROC", "/nonexistent")
            .args(args)
            .output()
            .unwrap()
    };
    let roots = base.path().join("vservers");
    // Whatever a failing assertion leaves running is stopped.
    struct StopAll<'a>(&'a Path, &'a Path);
    impl Drop for StopAll<'_> {
        fn drop(&mut self) {
            for name in ["bdir", "btar"] {
                let _ = Command::new(VSERVER)
                    .env("VXFS_CONFDIR", self.0)
                    .env("VXFS_RUNDIR", self.1)
                    .args([name, "stop"])
                    .output();
            }
        }
    }
    let _stop = StopAll(&etc, &run_dir);
    for (name, source, xid) in [
        ("bdir", template.as_path(), "40145"),
        ("btar", tarball.as_path(), "40146"),
    ] {
        let built = vserver(&[
            name,
            "build",
            "-m",
            "template",
            "--context",
            xid,
            "--rootdir",
            roots.to_str().unwrap(),
            "--",
            "-t",
            source.to_str().unwrap(),
        ]);
        assert!(built.status.success(), "{name}: {built:?}");
        assert!(roots.join(name).join("bin/busybox").is_file(), "{name}");
        assert_eq!(
            std::fs::read_to_string(etc.join(name).join("context"))
                .unwrap()
                .trim(),
            xid
        );
        let started = vserver(&[name, "start"]);
        assert!(started.status.success(), "{name}: {started:?}");
        let inside = vserver(&[name, "exec", "/bin/cat", "/var/log/boots"]);
        assert_eq!(
            String::from_utf8_lossy(&inside.stdout),
            "started\n",
            "{name}"
        );
        let stopped = vserver(&[name, "stop"]);
        assert!(stopped.status.success(), "{name}: {stopped:?}");
    }
    // A second build of the same name is refused, and leaves the first.
    let again = vserver(&[
        "bdir",
        "build",
        "-m",
        "template",
        "--",
        "-t",
        template.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert!(roots.join("bdir/bin/busybox").is_file());
}

#[test]
fn the_supervisor_logs_to_syslog_and_to_the_console() {
    // Detached, the supervisor's lines go to syslog ($VXFS_SYSLOG here: a
    // socket of the test's), facility daemon, tagged vserver[PID], and
    // still to the guest's console; so does the vxproc it starts.
    let g = Guest::new("syslogged", 40147, VIRT_FILES);
    let socket = g.dir.path().join("log");
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let with_syslog = |args: &[&str]| {
        let out = g
            .cmd(VSERVER)
            .env("VXFS_SYSLOG", &socket)
            .arg(&g.name)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    with_syslog(&["start"]);
    let supervisor = g.state()["supervisor"].as_u64().unwrap();
    let started =
        format!("<30>vserver[{supervisor}]: INFO: syslogged: started, context 40147, init ");
    with_syslog(&["stop"]);
    let stopped = format!("<30>vserver[{supervisor}]: INFO: syslogged: stopped, init ended");
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    while !lines.iter().any(|l: &String| l.starts_with(&stopped)) {
        let n = syslog
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("{e}: {stopped:?} not among {lines:?}"));
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        lines.iter().any(|l| l.starts_with(&started)),
        "{started:?} not among {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<30>vxproc[") && l.contains("INFO: serving ")),
        "vxproc's start not among {lines:?}"
    );
    // The console has them too, with their priority.
    let console = g.console();
    let on_console = format!("<6>vserver[{supervisor}]: INFO: syslogged: started, context 40147");
    assert!(console.contains(&on_console), "{console}");
}
