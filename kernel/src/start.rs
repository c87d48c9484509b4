//! Starting a guest, supervising it and stopping it (docs/ARCHITECTURE.md,
//! "The context core").
//!
//! `vserver NAME start` claims the guest's name and context in the
//! registry, makes its cgroups and writes its limits, then forks the
//! *supervisor*, which stays the parent of the guest's init for the
//! guest's life (LXC's monitor, util-vserver's vshelper): it clones init
//! into new mount, uts, ipc and pid namespaces (and network and user ones
//! if configured), joins it to every cgroup, sets up its interfaces, lets it go on, and
//! reports to the waiting command, which returns once the guest's init
//! runs. The supervisor then waits for signals:
//!
//! * its init ending: killed by SIGHUP (the guest called `reboot(2)` with
//!   RESTART) means reboot, so a new init is started in the same context;
//!   by SIGINT (HALT, POWER_OFF) or any other end means the guest stopped;
//! * SIGTERM, SIGINT, SIGQUIT, SIGHUP (`vserver NAME stop`, systemd,
//!   shutdown): the guest's stop command runs inside it, then its kill
//!   sequence (`killseq`, default SIGTERM, 5 s, SIGKILL), then whatever is
//!   left in its cgroups is killed.
//!
//! Then it removes the cgroups, the interfaces and the registry entry, and
//! exits. A start that fails removes what it made.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, WaitOptions};

use crate::cgroup::{CgroupFs, CgroupSet, Layout, RealFs};
use crate::config::{GuestConfig, InitStyle, KillStep};
use crate::error::{Error, Result, io, os};
use crate::names::cflag;
use crate::registry::{Claim, Registry, State};
use crate::sys::{self, Forked, SignalFd};
use crate::xid::Xid;
use crate::{limits, net, rootfs, sched, security};

/// What a start did.
#[derive(Debug)]
pub enum StartOutcome {
    /// The guest runs now.
    Started {
        /// Its context.
        xid: Xid,
        /// Its supervisor (the caller's child; with [`Attach::Foreground`]
        /// the caller waits for it, then reads init's end from
        /// [`Registry::exit_of`]).
        supervisor: u32,
        /// Its init (host pid).
        init: u32,
        /// Settings mainline cannot express, one line each.
        warnings: Vec<String>,
    },
    /// It was running already (util-vserver: a warning, exit 0).
    AlreadyRunning,
}

/// How the command that starts a context stays attached to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// The supervisor runs on its own: a session of its own, output to the
    /// console file (`vserver NAME start`).
    Detached,
    /// The supervisor and init keep the caller's session and standard
    /// files; the terminal's SIGINT and SIGQUIT are init's alone
    /// (`vcontext --create`).
    Foreground,
}

/// Signals the supervisor takes.
const SUPERVISOR_SIGNALS: &[i32] = &[
    libc::SIGCHLD,
    // vsched left new scheduler settings (Registry::sched_request).
    libc::SIGUSR1,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
];

/// How long `vserver start` waits for the guest's init to run.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Reboots within this window more often than [`MAX_REBOOTS`] stop the
/// guest instead (a guest that reboots in a loop).
const REBOOT_WINDOW: Duration = Duration::from_secs(60);
/// See [`REBOOT_WINDOW`].
const MAX_REBOOTS: usize = 10;

/// Everything the setup of a guest needs, prepared before any fork.
struct Prepared {
    cfg: GuestConfig,
    attach: Attach,
    xid: Xid,
    cgroups: CgroupSet,
    limits: limits::LimitPlan,
    filters: Vec<seccompiler::BpfProgram>,
    /// Its addresses in the host's stack (`nonetns`), attached to its
    /// cgroup2 cgroup.
    chbind: Option<crate::chbind::Policy>,
    /// Addresses it put on host devices.
    host_addresses: Vec<crate::config::interfaces::HostAddress>,
}

/// Runs the guest's host-side hook scripts `scripts/HOOK` and
/// `scripts/HOOK.d/*` (util-vserver's), with arguments HOOK and the name.
pub fn run_hooks(cfg: &GuestConfig, hook: &str) -> Result<()> {
    run_hooks_with(cfg, hook, None)
}

/// [`run_hooks`], calling `meanwhile` (which waits a little) until each
/// script ends, when one is given: the supervisor keeps answering its
/// running guest's intercepted calls.
fn run_hooks_with(
    cfg: &GuestConfig,
    hook: &str,
    mut meanwhile: Option<&mut dyn FnMut()>,
) -> Result<()> {
    if !cfg.configured() {
        return Ok(());
    }
    let dir = cfg.dir.join("scripts");
    let mut scripts = vec![dir.join(hook)];
    if let Ok(entries) = std::fs::read_dir(dir.join(format!("{hook}.d"))) {
        let mut more: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        scripts.extend(more);
    }
    for script in scripts.into_iter().filter(|s| s.is_file()) {
        let running = io(format!("running {}", script.display()));
        let mut cmd = Command::new(&script);
        cmd.arg(hook).arg(&cfg.name).env("VSERVER_NAME", &cfg.name);
        // The supervisor's blocked signals are not the script's.
        sys::unblock_signals_at_exec(&mut cmd);
        let status = match meanwhile.as_mut() {
            None => cmd.status().map_err(running)?,
            Some(pause) => {
                let mut child = cmd.spawn().map_err(running)?;
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status,
                        Ok(None) => pause(),
                        Err(e) => return Err(io(format!("waiting for {}", script.display()))(e)),
                    }
                }
            }
        };
        if !status.success() {
            return Err(Error::Other(format!(
                "{} failed ({status})",
                script.display()
            )));
        }
    }
    Ok(())
}

/// Starts guest `cfg`.
pub fn start(cfg: &GuestConfig, registry: &Registry) -> Result<StartOutcome> {
    let Some(claim) = registry.claim(&cfg.name, cfg.xid)? else {
        return Ok(StartOutcome::AlreadyRunning);
    };
    start_claimed(cfg, registry, claim, Attach::Detached)
}

/// Starts a context without a guest (`cfg` from
/// [`GuestConfig::unconfigured`]) in context `cfg.xid` or a dynamic one,
/// registered under [`crate::registry::anonymous_name`].
/// [`StartOutcome::AlreadyRunning`]: that context exists.
pub fn start_unconfigured(
    cfg: &GuestConfig,
    registry: &Registry,
    attach: Attach,
) -> Result<StartOutcome> {
    let Some(claim) = registry.claim_anonymous(cfg.xid)? else {
        return Ok(StartOutcome::AlreadyRunning);
    };
    let mut cfg = cfg.clone();
    cfg.name = crate::registry::anonymous_name(claim.xid);
    start_claimed(&cfg, registry, claim, attach)
}

fn start_claimed(
    cfg: &GuestConfig,
    registry: &Registry,
    claim: Claim,
    attach: Attach,
) -> Result<StartOutcome> {
    let xid = claim.xid;
    if cfg.shares_host_root() && cfg.spaces.user_base.is_some() {
        registry.release(&claim, &cfg.name);
        return Err(Error::Other(
            "a context in a user namespace needs a root directory of its own, not the host's /"
                .into(),
        ));
    }
    // util-vserver's first hooks, before the root is looked at (they may
    // mount it).
    for hook in ["initialize", "prepre-start"] {
        if let Err(e) = run_hooks(cfg, hook) {
            registry.release(&claim, &cfg.name);
            return Err(e);
        }
    }
    let checked = (|| -> Result<CgroupSet> {
        let st = std::fs::metadata(&cfg.root).map_err(|e| {
            Error::Other(format!(
                "the root directory {} of vserver '{}' cannot be used: {e} (set vdir, or build the guest first)",
                cfg.root.display(),
                cfg.name
            ))
        })?;
        if !st.is_dir() {
            return Err(Error::Other(format!(
                "{} is not a directory",
                cfg.root.display()
            )));
        }
        let layout = Layout::detect().map_err(io("reading the cgroup layout"))?;
        Ok(CgroupSet::of(&layout, xid)?)
    })();
    let cgroups = match checked {
        Ok(c) => c,
        Err(e) => {
            registry.release(&claim, &cfg.name);
            return Err(e);
        }
    };
    let fs = RealFs;
    let mut warnings: Vec<String> = cfg.not_applied.clone();
    if let Some(base) = cfg.spaces.user_base {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(&cfg.root).map_or(base, |m| m.uid());
        if !(base..=base + 65535).contains(&owner) {
            warnings.push(format!(
                "its root directory belongs to uid {owner} on the host, outside its id range {base}..{}: root in the guest cannot change it (chown its tree into the range)",
                base + 65535
            ));
        }
    }
    if cfg.cflags & cflag::PERSISTENT != 0 {
        warnings.push(
            "flag persistent: not representable (a context ends with its init; restart it with vserver NAME start)".into(),
        );
    }
    if cfg.cflags & cflag::VIRT_TIME != 0 {
        warnings
            .push("flag virt_time: not representable on mainline (one wall clock for all)".into());
    }
    let prepared = (|| -> Result<Prepared> {
        cgroups.create(&fs)?;
        if cgroups.populated(&fs)? {
            // A supervisor that was killed left its guest behind.
            let left = cgroups.procs(&fs)?.len();
            cgroups.kill_all(&fs, Duration::from_secs(10))?;
            warnings.push(format!(
                "killed {left} processes a previous supervisor of context {xid} left"
            ));
        }
        // Its block I/O counted (vserver-stat, its diskstats).
        warnings.extend(crate::procview::count_block_io(&cgroups, &fs));
        let mut plan = limits::plan(&cfg.rlimits, cfg.cflags);
        plan.sysctls.extend(cfg.sysctls.iter().cloned());
        apply_cgroup_limits(&cgroups, &fs, &plan, cfg)?;
        warnings.extend(crate::cgroup::weight_warning(
            &cfg.root,
            cfg.cgroup_files.keys().map(String::as_str),
        ));
        warnings.extend(plan.warnings.iter().cloned());
        let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let sched = sched::plan(&cfg.sched, cfg.cflags, ncpus);
        if sched.cpu != Default::default() {
            cgroups.set_cpu(&fs, &sched.cpu)?;
        }
        if sched.freeze {
            cgroups.freeze(&fs, true)?;
        }
        warnings.extend(sched.warnings);
        let filters = security::filters(cfg.bcaps, cfg.ccaps)?;
        // Its addresses in the host's stack: the programs on its cgroup
        // before any of its processes is in it.
        let chbind = match &cfg.shared_net {
            Some(net) => {
                let v2 = cgroups.v2().ok_or_else(|| {
                    Error::Other(
                        "nonetns with addresses needs a cgroup2 hierarchy for its BPF programs \
                         (mount cgroup2, e.g. at /sys/fs/cgroup/unified)"
                            .into(),
                    )
                })?;
                let policy = net.policy(xid);
                policy.apply(&v2.dir)?;
                Some(policy)
            }
            None => None,
        };
        // A dead supervisor's interfaces and addresses: stale, and ours
        // to remove (an address it added would look like the host's).
        if let Some(left) = &claim.left {
            net::remove(&left.host_interfaces);
            net::remove_addresses(&left.host_addresses);
        }
        let host_addresses = match &cfg.shared_net {
            Some(net) => net::add_addresses(&net.host)?,
            None => Vec::new(),
        };
        if let Err(e) = run_hooks(cfg, "pre-start") {
            net::remove_addresses(&host_addresses);
            return Err(e);
        }
        Ok(Prepared {
            cfg: cfg.clone(),
            attach,
            xid,
            cgroups: cgroups.clone(),
            limits: plan,
            filters,
            chbind,
            host_addresses,
        })
    })();
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = cgroups.remove(&fs);
            registry.release(&claim, &cfg.name);
            return Err(e);
        }
    };
    let (ready_r, ready_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(os("pipe"))?;
    let one = sys::one_thread().map_err(os("starting a guest from a multi-threaded process"))?;
    match sys::fork(&one).map_err(os("fork"))? {
        Forked::Child => {
            drop(ready_r);
            let code = supervise(prepared, claim, registry, ready_w);
            std::process::exit(code);
        }
        Forked::Parent { pid, pidfd } => {
            drop(ready_w);
            let mut fds = [rustix::event::PollFd::new(
                &ready_r,
                rustix::event::PollFlags::IN,
            )];
            let limit = rustix::time::Timespec {
                tv_sec: START_TIMEOUT.as_secs() as i64,
                tv_nsec: 0,
            };
            if rustix::event::poll(&mut fds, Some(&limit)).unwrap_or(0) == 0 {
                // Stuck (a mount that hangs, say): the supervisor and the
                // guest's first process (its process group) go, and what
                // they made with them.
                if let Some(group) = Pid::from_raw(pid as i32) {
                    let _ =
                        rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                }
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                let _ = cgroups.kill_all(&fs, Duration::from_secs(10));
                let _ = cgroups.remove(&fs);
                net::remove_addresses(&prepared.host_addresses);
                registry.release(&claim, &cfg.name);
                return Err(Error::Other(format!(
                    "the guest did not start within {START_TIMEOUT:?}; stopped it (see {})",
                    registry.console(&cfg.name).display()
                )));
            }
            let mut answer = String::new();
            let _ = std::fs::File::from(ready_r).read_to_string(&mut answer);
            match answer.split_once(' ') {
                Some(("ok", pid_text)) => Ok(StartOutcome::Started {
                    xid,
                    supervisor: pid,
                    init: pid_text.trim().parse().unwrap_or(0),
                    warnings,
                }),
                Some(("err", message)) => Err(Error::Other(message.trim().to_string())),
                _ => Err(Error::Other(
                    "the supervisor ended before the guest started".into(),
                )),
            }
        }
    }
}

/// Writes the cgroup side of the limits and the guest's `cgroup/` files.
fn apply_cgroup_limits(
    cgroups: &CgroupSet,
    fs: &dyn CgroupFs,
    plan: &limits::LimitPlan,
    cfg: &GuestConfig,
) -> Result<()> {
    if let Some(max) = plan.pids_max {
        cgroups.set_pids_max(fs, max)?;
    }
    if let Some((max, high)) = plan.memory {
        cgroups.set_memory(fs, max, high)?;
    }
    if cfg.cpuset_cpus.is_some() || cfg.cpuset_mems.is_some() {
        cgroups.set_cpuset(fs, cfg.cpuset_cpus.as_deref(), cfg.cpuset_mems.as_deref())?;
    }
    for (file, value) in &cfg.cgroup_files {
        cgroups.write_raw(fs, file, value)?;
    }
    Ok(())
}

/// The supervisor's life: start the guest, report, wait, stop, clean up.
fn supervise(p: Prepared, claim: Claim, registry: &Registry, ready: OwnedFd) -> i32 {
    if p.attach == Attach::Detached {
        let _ = rustix::process::setsid();
        redirect_stdio(&registry.console(&p.cfg.name));
    }
    let signals = match SignalFd::new(SUPERVISOR_SIGNALS) {
        Ok(s) => s,
        Err(e) => {
            report(&ready, &format!("err signalfd: {e}"));
            teardown(&p, &claim, registry, &[]);
            return 1;
        }
    };
    let mut ready = Some(ready);
    let mut reboots: Vec<Instant> = Vec::new();
    let mut host_interfaces = Vec::new();
    let mut exit = None;
    let mut watch = crate::procview::Watch::new(registry, p.cfg.cflags);
    // The token bucket CFS cannot keep (tokens-min, a big bucket,
    // idle-time, sched_prio), kept here.
    let mut sched = crate::governor::Sched::new(&p.cfg.sched, p.cfg.cflags, &p.cgroups, &RealFs);
    let mut hub = crate::intercept::Plan::of(&p.cfg).and_then(|plan| {
        let path = crate::intercept::socket_path(registry, p.xid);
        crate::intercept::Hub::bind(plan, &path)
            .inspect_err(|e| log::warn!("{}: uname/sysinfo: {e}", p.cfg.name))
            .ok()
    });
    loop {
        let init = match launch(&p, registry, &mut host_interfaces, &mut watch, &mut hub) {
            Ok(init) => init,
            Err(e) => {
                if let Some(r) = ready.take() {
                    report(&r, &format!("err {e}"));
                } else {
                    log::error!("{}: restart failed: {e}", p.cfg.name);
                }
                registry.record(p.xid, &p.cfg.name, "failed", &e.to_string());
                teardown(&p, &claim, registry, &host_interfaces);
                return 1;
            }
        };
        let started = format!("init {} ({})", init.pid, p.cfg.init.start.join(" "));
        log::info!("{}: started, context {}, {started}", p.cfg.name, p.xid);
        registry.record(p.xid, &p.cfg.name, "start", &started);
        if let Some(r) = ready.take() {
            // Before the starter hears "ok" and exits: a service manager
            // reads it then (Type=forking, PIDFile=).
            let pid_file = registry.pid_file(&p.cfg.name);
            let tmp = pid_file.with_extension("pid.tmp");
            let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
                .and_then(|()| std::fs::rename(&tmp, &pid_file));
            if let Err(e) = written {
                log::error!("{}: {}: {e}", p.cfg.name, pid_file.display());
            }
            report(&r, &format!("ok {}", init.pid));
        }
        {
            let state = registry.state_of(p.xid);
            let mut pause = || match (hub.as_mut(), &state) {
                (Some(h), Some(s)) => h.serve_for(Duration::from_millis(10), s, registry),
                _ => std::thread::sleep(Duration::from_millis(10)),
            };
            let _ = run_hooks_with(&p.cfg, "post-start", Some(&mut pause));
        }
        match wait_for(
            &p, registry, &signals, &init, &mut watch, &mut hub, &mut sched,
        ) {
            End::Reboot => {
                registry.record(p.xid, &p.cfg.name, "reboot", "reboot(2) in the guest");
                let now = Instant::now();
                reboots.retain(|t| now.duration_since(*t) < REBOOT_WINDOW);
                reboots.push(now);
                // What the old init's namespace did not take with it.
                let _ = p.cgroups.kill_all(&RealFs, Duration::from_secs(10));
                net::remove(&host_interfaces);
                host_interfaces.clear();
                if reboots.len() > MAX_REBOOTS {
                    log::warn!(
                        "{}: rebooted {} times within {:?}: stopping it",
                        p.cfg.name,
                        reboots.len(),
                        REBOOT_WINDOW
                    );
                    break;
                }
                log::info!("{}: the guest rebooted; starting it again", p.cfg.name);
            }
            End::Stopped(code) => {
                exit = code;
                break;
            }
        }
    }
    registry.record_exit(p.xid, exit);
    let ended = exit.map_or("init's end unknown".to_string(), |c| {
        format!("init ended {c}")
    });
    log::info!("{}: stopped, {ended}", p.cfg.name);
    registry.record(p.xid, &p.cfg.name, "stop", &ended);
    teardown(&p, &claim, registry, &host_interfaces);
    0
}

fn report(fd: &OwnedFd, message: &str) {
    let _ = rustix::io::write(fd, message.as_bytes());
}

fn redirect_stdio(console: &std::path::Path) {
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty());
    let out = rustix::fs::open(
        console,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    );
    if let (Ok(null), Ok(out)) = (null, out) {
        let _ = rustix::stdio::dup2_stdin(&null);
        let _ = rustix::stdio::dup2_stdout(&out);
        let _ = rustix::stdio::dup2_stderr(&out);
    }
    // The supervisor's lines go to the console and to syslog (vxfs_log).
    vxfs_log::detached(&vxfs_log::syslog_socket(), vxfs_log::Keep::Stderr);
}

/// A running init.
struct Init {
    pid: u32,
    _pidfd: OwnedFd,
}

/// How a guest's run ended.
enum End {
    /// Its init was killed by SIGHUP: `reboot(2)` with RESTART.
    Reboot,
    /// Halted, exited, or stopped by a signal to the supervisor; how init
    /// ended (its exit code, or 128 + its signal).
    Stopped(Option<i32>),
}

/// An exit status as a shell shows it.
fn code_of(status: rustix::process::WaitStatus) -> i32 {
    status
        .exit_status()
        .or_else(|| status.terminating_signal().map(|s| 128 + s))
        .unwrap_or(0)
}

/// Waits for the guest's init to end or for a stop request.
fn wait_for(
    p: &Prepared,
    registry: &Registry,
    signals: &SignalFd,
    init: &Init,
    watch: &mut Option<crate::procview::Watch>,
    hub: &mut Option<crate::intercept::Hub>,
    sched: &mut crate::governor::Sched,
) -> End {
    let mut checked = Instant::now();
    let mut governed = Instant::now();
    // Fixed for this init's life (launch wrote it).
    let state = registry.state_of(p.xid);
    loop {
        if watch.is_some() || hub.is_some() || sched.governed() {
            use rustix::event::{PollFd, PollFlags};
            let interval = crate::procview::WATCH_INTERVAL;
            let mut left = interval.saturating_sub(checked.elapsed());
            if sched.governed() {
                left = left.min(crate::governor::INTERVAL.saturating_sub(governed.elapsed()));
            }
            let timed = watch.is_some() || sched.governed();
            let sig_fd = signals.as_fd();
            let others = hub.as_ref().map(|h| h.poll_fds()).unwrap_or_default();
            let mut fds = vec![PollFd::new(&sig_fd, PollFlags::IN)];
            fds.extend(others.iter().map(|fd| PollFd::new(fd, PollFlags::IN)));
            let timeout = rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let _ = rustix::event::poll(&mut fds, timed.then_some(&timeout));
            let signalled = fds[0].revents().contains(PollFlags::IN);
            let ready: Vec<PollFlags> = fds[1..].iter().map(|f| f.revents()).collect();
            drop(fds);
            drop(others);
            if ready.iter().any(|r| !r.is_empty()) {
                if let (Some(h), Some(state)) = (hub.as_mut(), &state) {
                    h.serve(&ready, state, registry);
                }
            }
            if sched.governed() && governed.elapsed() >= crate::governor::INTERVAL {
                governed = Instant::now();
                sched.tick(&p.cgroups, &RealFs);
            }
            if let Some(w) = watch.as_mut() {
                if checked.elapsed() >= interval {
                    checked = Instant::now();
                    if let Some(state) = &state {
                        w.check(registry, state, &p.cfg.name);
                    }
                }
            }
            if !signalled {
                continue;
            }
        }
        let sig = match signals.read() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == libc::SIGCHLD {
            if let Some(status) = reap(init) {
                return match status.terminating_signal() {
                    Some(s) if s == libc::SIGHUP => End::Reboot,
                    _ => End::Stopped(Some(code_of(status))),
                };
            }
            continue;
        }
        if sig == libc::SIGUSR1 {
            if let Some(given) = std::fs::read(registry.sched_request(p.xid))
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::config::SchedConfig>(&b).ok())
            {
                sched.change(given, &p.cgroups, &RealFs);
            }
            continue;
        }
        if p.attach == Attach::Foreground && (sig == libc::SIGINT || sig == libc::SIGQUIT) {
            // The terminal's: init has them too.
            continue;
        }
        return End::Stopped(stop_sequence(p, registry, init, hub));
    }
}

/// Reaps init if it ended.
fn reap(init: &Init) -> Option<rustix::process::WaitStatus> {
    let pid = Pid::from_raw(init.pid as i32)?;
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Some(status),
        _ => None,
    }
}

/// The stop sequence: the guest's stop command inside it, its kill
/// sequence, then whatever is left.
fn stop_sequence(
    p: &Prepared,
    registry: &Registry,
    init: &Init,
    hub: &mut Option<crate::intercept::Hub>,
) -> Option<i32> {
    let fs = RealFs;
    let state = registry.state_of(p.xid);
    // The guest's shutdown (its pre-stop hooks, its stop command, its
    // processes ending) may call uname or sysinfo: they are answered
    // until the end.
    let mut pause = |d: Duration| match (hub.as_mut(), &state) {
        (Some(h), Some(s)) => h.serve_for(d, s, registry),
        _ => std::thread::sleep(d),
    };
    if let Err(e) = run_hooks_with(
        &p.cfg,
        "pre-stop",
        Some(&mut || pause(Duration::from_millis(10))),
    ) {
        log::warn!("{}: {e}", p.cfg.name);
    }
    if let Some(cmd) = &p.cfg.init.stop {
        if let Some(state) = &state {
            let _ = crate::enter::run_apart_with(
                state,
                &p.cfg.init.environment,
                cmd,
                None,
                Some(Duration::from_secs(60)),
                &mut || pause(Duration::from_millis(10)),
            );
        }
    }
    for step in &p.cfg.init.killseq {
        if !p.cgroups.populated(&fs).unwrap_or(false) {
            break;
        }
        match *step {
            KillStep::Signal(s) => {
                let _ = p.cgroups.signal_all(&fs, s);
            }
            KillStep::Wait(secs) => {
                let deadline = Instant::now() + Duration::from_secs(u64::from(secs));
                while Instant::now() < deadline && p.cgroups.populated(&fs).unwrap_or(false) {
                    pause(Duration::from_millis(20));
                }
            }
        }
    }
    let _ = p.cgroups.kill_all(&fs, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = reap(init) {
            return Some(code_of(status));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Removes what the guest had: hooks, interfaces, cgroups, registry entry.
fn teardown(p: &Prepared, claim: &Claim, registry: &Registry, host_interfaces: &[String]) {
    let _ = run_hooks(&p.cfg, "post-stop");
    let fs = RealFs;
    let _ = p.cgroups.kill_all(&fs, Duration::from_secs(10));
    net::remove(host_interfaces);
    net::remove_addresses(&p.host_addresses);
    if let Err(e) = p.cgroups.remove(&fs) {
        log::warn!("{}: removing its cgroups: {e}", p.cfg.name);
    }
    registry.release(claim, &p.cfg.name);
    let _ = run_hooks(&p.cfg, "postpost-stop");
}

/// Starts the guest's init in its namespaces and cgroups.
fn launch(
    p: &Prepared,
    registry: &Registry,
    host_interfaces: &mut Vec<String>,
    watch: &mut Option<crate::procview::Watch>,
    hub: &mut Option<crate::intercept::Hub>,
) -> Result<Init> {
    let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(os("pipe"));
    // go: parent -> child, once after the namespaces are set up, once after
    // the cgroups are joined; mounted: child -> parent, its mounts are
    // done; report: child -> parent, why it failed (EOF at exec: it ran).
    let (go_r, go_w) = pipe()?;
    let (mounted_r, mounted_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let plan = hub.as_ref().map(|h| h.plan().clone());
    let notify = match plan {
        Some(_) => Some(crate::intercept::channel()?),
        None => None,
    };
    let mut flags =
        (libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID) as u64;
    if p.cfg.spaces.net {
        flags |= libc::CLONE_NEWNET as u64;
    }
    if p.cfg.spaces.user_base.is_some() {
        flags |= libc::CLONE_NEWUSER as u64;
    }
    let one = sys::one_thread().map_err(os("the supervisor is multi-threaded"))?;
    match sys::clone3(&one, flags, None).map_err(os("clone3"))? {
        Forked::Child => {
            drop((go_w, mounted_r, rep_r));
            let guest_end = plan.as_ref().zip(notify.as_ref().map(|(g, _)| g));
            let Err(e) = child(p, &go_r, &mounted_w, rep_w.as_raw_fd(), guest_end);
            let _ = rustix::io::write(&rep_w, e.to_string().as_bytes());
            std::process::exit(127);
        }
        Forked::Parent { pid, pidfd } => {
            drop((go_r, mounted_w, rep_w));
            let fail = |e: Error| {
                let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                let _ = rustix::process::waitpid(Pid::from_raw(pid as i32), WaitOptions::empty());
                e
            };
            let why = |rep_r: OwnedFd| {
                let mut message = String::new();
                let _ = std::fs::File::from(rep_r).read_to_string(&mut message);
                message
            };
            let namespaces = (|| -> Result<()> {
                if let Some(base) = p.cfg.spaces.user_base {
                    for map in ["uid_map", "gid_map"] {
                        std::fs::write(format!("/proc/{pid}/{map}"), format!("0 {base} 65536"))
                            .map_err(io(format!("writing the guest's {map}")))?;
                    }
                }
                if p.cfg.spaces.net {
                    *host_interfaces = net::setup(pid, p.xid, &p.cfg.interfaces)?;
                }
                rustix::io::write(&go_w, b"g")
                    .map_err(os("releasing the guest's first process"))?;
                Ok(())
            })();
            if let Err(e) = namespaces {
                return Err(fail(e));
            }
            // Its mounts are made before it joins the context's cgroups: the
            // paths to its root are the host's to walk (a barrier above the
            // guests' roots refuses guests), what it sets up inside is the
            // host's doing.
            let mut byte = [0u8; 1];
            if !matches!(rustix::io::read(&mounted_r, &mut byte), Ok(1)) {
                let message = why(rep_r);
                return Err(fail(Error::Other(format!(
                    "setting up the guest: {message}"
                ))));
            }
            let setup = (|| -> Result<()> {
                p.cgroups.join(&RealFs, pid, false)?;
                let state = State {
                    name: p.cfg.name.clone(),
                    xid: p.xid,
                    config: p.cfg.dir.clone(),
                    root: p.cfg.root.clone(),
                    supervisor: std::process::id(),
                    init: pid,
                    init_start: crate::registry::start_time(pid).unwrap_or(0),
                    started: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    cgroups: p.cgroups.clone(),
                    cflags: p.cfg.cflags,
                    bcaps: p.cfg.bcaps,
                    ccaps: p.cfg.ccaps,
                    netns: p.cfg.spaces.net,
                    host_interfaces: host_interfaces.clone(),
                    user_base: p.cfg.spaces.user_base,
                    personality: p.cfg.personality,
                    ionice: p.cfg.ionice,
                    intercept: plan.clone(),
                    chbind: p.chbind.clone(),
                    host_addresses: p.host_addresses.clone(),
                };
                registry.write(&state)?;
                // Its own /proc figures, before init runs; never a reason
                // not to start (the kernel's files stay then).
                if let Some(w) = watch.as_mut() {
                    w.forget_binding();
                    w.check(registry, &state, &p.cfg.name);
                }
                rustix::io::write(&go_w, b"g").map_err(os("releasing the guest's init"))?;
                Ok(())
            })();
            if let Err(e) = setup {
                return Err(fail(e));
            }
            drop(go_w);
            let message = why(rep_r);
            if !message.is_empty() {
                return Err(fail(Error::Other(format!(
                    "starting the guest's init: {message}"
                ))));
            }
            if let (Some(h), Some((_, ours))) = (hub.as_mut(), &notify) {
                // The old init's processes (a reboot) are gone.
                h.clear();
                match crate::intercept::receive(ours)
                    .and_then(|fd| crate::intercept::Listener::new(fd, h.plan().clone(), pid))
                {
                    Ok(l) => h.add(l),
                    // Its intercepted calls fail with ENOSYS then.
                    Err(e) => log::warn!("{}: uname/sysinfo: {e}", p.cfg.name),
                }
            }
            Ok(Init { pid, _pidfd: pidfd })
        }
    }
}

/// Waits for the parent's go-ahead on `go`.
fn released(go: &OwnedFd) -> Result<()> {
    let mut byte = [0u8; 1];
    match rustix::io::read(go, &mut byte) {
        Ok(1) => Ok(()),
        _ => Err(Error::Other("the supervisor went away".into())),
    }
}

/// The guest's first process, pid 1 of its pid namespace: its mounts and
/// names (then it tells the parent, which joins it to the context's
/// cgroups), the cgroup and time namespaces, limits, capabilities, seccomp,
/// exec of its init. Returns only on failure.
fn child(
    p: &Prepared,
    go: &OwnedFd,
    mounted: &OwnedFd,
    report_fd: i32,
    intercept: Option<(&crate::intercept::Plan, &OwnedFd)>,
) -> std::result::Result<std::convert::Infallible, Error> {
    sys::unblock_all_signals().map_err(os("unblocking signals"))?;
    released(go)?;
    if p.cfg.spaces.user_base.is_some() {
        // The maps are written: become the namespace's root (the host's
        // root is not mapped in it; files it made would be unowned).
        use rustix::process::{Gid, Uid};
        rustix::thread::set_thread_groups(&[]).map_err(os("setgroups in the user namespace"))?;
        rustix::thread::set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT)
            .map_err(os("setgid 0 in the user namespace"))?;
        rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT)
            .map_err(os("setuid 0 in the user namespace"))?;
        // Changing credentials made it undumpable, which would leave its
        // /proc/self files to the host's root.
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
            .map_err(os("PR_SET_DUMPABLE"))?;
    }
    let host = rootfs::clone_host_trees(&p.cfg.fstab)?;
    let shares_host_root = p.cfg.shares_host_root();
    if shares_host_root {
        rootfs::share_host_root(host, &p.cfg.fstab, &p.limits.sysctls)?;
    } else {
        let own_sysfs = p.cfg.spaces.user_base.is_none() || p.cfg.spaces.net;
        rootfs::mount_kernel_filesystems(&p.cfg.root, own_sysfs)?;
        rootfs::pivot_into(&p.cfg.root)?;
        rootfs::populate(host, &p.cfg.fstab, &p.limits.sysctls)?;
    }
    rustix::system::sethostname(p.cfg.nodename.as_bytes()).map_err(os("sethostname"))?;
    if let Some(d) = &p.cfg.domainname {
        rustix::system::setdomainname(d.as_bytes()).map_err(os("setdomainname"))?;
    }
    rustix::io::write(mounted, b"m").map_err(os("reporting the mounts"))?;
    released(go)?;
    // The cgroup namespace's root is fixed here: vx-XID in every hierarchy.
    sys::unshare(rustix::thread::UnshareFlags::NEWCGROUP)
        .map_err(os("unshare(CLONE_NEWCGROUP)"))?;
    if p.cfg.cflags & cflag::VIRT_UPTIME != 0 {
        sys::unshare(rustix::thread::UnshareFlags::NEWTIME)
            .map_err(os("unshare(CLONE_NEWTIME)"))?;
        let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        std::fs::write(
            "/proc/self/timens_offsets",
            format!("boottime -{} 0", boot.tv_sec),
        )
        .map_err(io("setting the guest's uptime (timens_offsets)"))?;
    }
    apply_rlimits(&p.limits.rlimits);
    if let Some(n) = p.cfg.nice {
        let _ = rustix::process::setpriority_process(None, n);
    }
    security::take_process_settings(p.cfg.ionice, p.cfg.personality)?;
    if let Some(b) = p.cfg.badness {
        std::fs::write("/proc/self/oom_score_adj", b.to_string()).map_err(io("oom_score_adj"))?;
    }
    if !shares_host_root {
        rustix::process::chdir("/").map_err(os("chdir /"))?;
    }
    let mut keep = vec![report_fd];
    keep.extend(intercept.map(|(_, fd)| fd.as_raw_fd()));
    sys::close_other_fds(&keep);
    security::restrict_capabilities(p.cfg.bcaps)?;
    // The filters go in while CAP_SYS_ADMIN allows it without no_new_privs
    // (the guest's setuid programs keep working); a user id after that.
    security::install(&p.filters)?;
    if let Some((plan, fd)) = intercept {
        crate::intercept::install(plan, fd)?;
    }
    if let Some(uid) = p.cfg.init.uid {
        use rustix::process::{Gid, Uid};
        rustix::thread::set_thread_groups(&[]).map_err(os("setgroups"))?;
        let g = Gid::from_raw(uid);
        rustix::thread::set_thread_res_gid(g, g, g).map_err(os("setgid"))?;
        let u = Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(u, u, u).map_err(os("setuid"))?;
    }
    let env = &p.cfg.init.environment;
    let cmd = &p.cfg.init.start;
    match p.cfg.init.style {
        InitStyle::Plain => {
            let e = Command::new(&cmd[0])
                .args(&cmd[1..])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .exec();
            Err(Error::Other(format!("exec {}: {e}", cmd[0])))
        }
        InitStyle::Sysv => mini_init(cmd, env),
    }
}

/// The per-process limits of `rlimits/`, on init (inherited by the
/// guest). A hard limit above the current one needs CAP_SYS_RESOURCE; it
/// is kept at the current one then, and said on the console.
fn apply_rlimits(rlimits: &[(i32, u64, u64)]) {
    use rustix::process::Rlimit;
    for &(res, soft, hard) in rlimits {
        let Some(resource) = limits::resource(res) else {
            continue;
        };
        let cur = rustix::process::getrlimit(resource);
        let opt = |v: u64| (v != u64::MAX).then_some(v);
        let mut max = opt(hard);
        if let Some(now) = cur.maximum {
            if max.is_none_or(|m| m > now) {
                log::warn!(
                    "rlimit {resource:?}: hard limit kept at {now} (raising it needs CAP_SYS_RESOURCE)"
                );
                max = Some(now);
            }
        }
        let current = opt(soft).map(|s| max.map_or(s, |m| s.min(m))).or(max);
        let _ = rustix::process::setrlimit(
            resource,
            Rlimit {
                current,
                maximum: max,
            },
        );
    }
}

/// pid 1 of a `sysv` guest: runs the start command and reaps orphans until
/// told to stop (SIGTERM, SIGINT, SIGPWR).
fn mini_init(
    cmd: &[String],
    env: &[(String, String)],
) -> std::result::Result<std::convert::Infallible, Error> {
    let signals = SignalFd::new(&[libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGPWR])
        .map_err(os("signalfd"))?;
    let mut child = Command::new(&cmd[0]);
    child
        .args(&cmd[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    // The start command must not inherit the blocked signals.
    sys::unblock_signals_at_exec(&mut child);
    child.spawn().map_err(io(format!("running {}", cmd[0])))?;
    // Started: the report pipe closes (as an exec would close it), so the
    // supervisor knows; nothing but the signals stays open.
    sys::close_other_fds(&[signals.as_fd().as_raw_fd()]);
    loop {
        match signals.read() {
            Ok(libc::SIGCHLD) => {
                while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
            }
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}

/// Stops guest `name`: signals its supervisor and waits until it is gone.
pub fn stop(registry: &Registry, name: &str, timeout: Duration) -> Result<bool> {
    let Some(state) = registry.find(name) else {
        return Ok(false);
    };
    let pid = Pid::from_raw(state.supervisor as i32)
        .ok_or_else(|| Error::Other("no supervisor".into()))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(os("pidfd_open of the supervisor"))?;
    rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::TERM)
        .map_err(os("signalling the supervisor"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Other(format!(
                "vserver '{name}' did not stop within {timeout:?} (its supervisor is {})",
                state.supervisor
            )));
        }
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        if rustix::event::poll(&mut fds, Some(&ts)).unwrap_or(0) > 0 {
            // Its registry entry goes just before it exits.
            return Ok(true);
        }
    }
}
