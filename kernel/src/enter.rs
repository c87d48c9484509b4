//! Running a command inside a running guest: `vserver NAME exec|enter|
//! suexec` and the guest's stop command (docs/ARCHITECTURE.md, "The
//! context core").
//!
//! The caller opens the guest's `cgroup.procs` files, enters its
//! namespaces in one `setns(pidfd)` (those that differ from its own:
//! entering one's own user namespace is an error) and forks (the pid and
//! time namespaces apply to children); it moves the child into the guest's
//! cgroups before letting it go on (so the filesystem's `-o xid=cgroup`
//! mode charges the command to the guest from its first request), and the
//! child takes the guest's rlimits (its init's), bounding set and seccomp
//! filter, the user of `suexec`, the guest's environment, and execs. The
//! caller waits and ends as the child did (its exit code, or the same
//! signal). The supervisor, which must stay in the host's namespaces and
//! cgroups, uses [`run_apart`]: a child of it does all of this.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, WaitOptions};
use rustix::thread::ThreadNameSpaceType;

use crate::config::GuestConfig;
use crate::error::{Error, Result, io, os};
use crate::names::cflag;
use crate::registry::{State, start_time};
use crate::security;
use crate::sys::{self, Forked};

/// How a command inside the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// A guest user: `(uid, gid, supplementary groups, home, shell)`.
type User = (u32, u32, Vec<u32>, String, String);

/// Looks up `user` (a name or a number) in the guest's `/etc/passwd` and
/// `/etc/group` (read after entering its mount namespace).
fn guest_user(user: &str) -> Result<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && (f[0] == user || f[2] == user)).then(|| {
            (
                f[0].to_string(),
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
                f[6].to_string(),
            )
        })
    });
    match entry {
        Some((name, Some(uid), Some(gid), home, shell)) => {
            let groups = std::fs::read_to_string("/etc/group")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 4 && f[3].split(',').any(|m| m == name))
                        .then(|| f[2].parse().ok())
                        .flatten()
                })
                .collect();
            Ok((uid, gid, groups, home, shell))
        }
        _ => match user.parse::<u32>() {
            Ok(uid) => Ok((uid, uid, Vec::new(), "/".into(), "/bin/sh".into())),
            Err(_) => Err(Error::Other(format!(
                "no user '{user}' in the guest's /etc/passwd"
            ))),
        },
    }
}

/// The namespaces of process `pid` that differ from the caller's.
fn differing_namespaces(pid: u32) -> ThreadNameSpaceType {
    let mut types = ThreadNameSpaceType::empty();
    for (name, t) in [
        ("user", ThreadNameSpaceType::USER),
        ("mnt", ThreadNameSpaceType::MOUNT),
        ("uts", ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME),
        ("ipc", ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION),
        ("net", ThreadNameSpaceType::NETWORK),
        ("cgroup", ThreadNameSpaceType::CONTROL_GROUP),
        ("time", ThreadNameSpaceType::TIME),
        ("pid", ThreadNameSpaceType::PROCESS_ID),
    ] {
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"));
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{name}"));
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (ours, theirs) {
            if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
                types |= t;
            }
        }
    }
    types
}

/// Runs `cmd` in running guest `state` (as `user`, default root) with
/// environment `env` (a guest's `apps/init/environment`), waiting at most
/// `timeout` (then it is killed). The caller must be single-threaded.
pub fn run(
    state: &State,
    env: &[(String, String)],
    cmd: &[String],
    user: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Exit> {
    if cmd.is_empty() {
        return Err(Error::Other("no command".into()));
    }
    if state.cflags & cflag::PRIVATE != 0 {
        return Err(Error::Other(format!(
            "vserver '{}' has the private flag: nobody may enter it",
            state.name
        )));
    }
    let pid = Pid::from_raw(state.init as i32).ok_or_else(|| Error::Other("no init".into()))?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())
        .map_err(os(format!("the guest's init {} is gone", state.init)))?;
    if start_time(state.init) != Some(state.init_start) {
        return Err(Error::Other(format!(
            "pid {} is no longer the guest's init (the guest is restarting?)",
            state.init
        )));
    }
    let one = sys::one_thread().map_err(os("entering a guest from a multi-threaded process"))?;
    let filters = security::filters(state.bcaps, state.ccaps)?;
    // What the guest's processes inherit from its init (its rlimits/ and
    // what vlimit changed since), read while /proc is the host's.
    let rlimits = crate::live::init_rlimits(state)?;
    // The guest's cgroup.procs files, opened while /sys is the host's: the
    // command is moved into them before it runs (the caller stays where it
    // is).
    let procs = state
        .cgroups
        .members
        .iter()
        .map(|m| {
            let path = m.dir.join("cgroup.procs");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(format!("opening {}", path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    // The guest's intercepted calls: this command's listener goes to the
    // supervisor, over a socket reached while the host's /run is visible.
    let intercept = match &state.intercept {
        Some(plan) => {
            match crate::intercept::connect(&crate::registry::Registry::open(), state.xid) {
                Ok(sock) => Some((plan.clone(), sock)),
                Err(e) => {
                    eprintln!("vserver {}: uname/sysinfo stay the host's: {e}", state.name);
                    None
                }
            }
        }
        None => None,
    };
    let types = differing_namespaces(state.init);
    rustix::thread::move_into_thread_name_spaces(std::os::fd::AsFd::as_fd(&pidfd), types)
        .map_err(os("entering the guest's namespaces (setns)"))?;
    let (go_r, go_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(os("pipe"))?;
    match sys::fork(&one).map_err(os("fork"))? {
        Forked::Child => {
            drop(go_w);
            let mut byte = [0u8; 1];
            if !matches!(rustix::io::read(&go_r, &mut byte), Ok(1)) {
                std::process::exit(126);
            }
            crate::live::take_rlimits(&rlimits);
            let e = child(state, env, cmd, user, &filters, intercept.as_ref());
            eprintln!("vserver {}: {e}", state.name);
            std::process::exit(
                if matches!(e, Error::Other(ref m) if m.starts_with("exec ")) {
                    127
                } else {
                    126
                },
            );
        }
        Forked::Parent { pid, pidfd } => {
            drop(go_r);
            for mut f in procs {
                use std::io::Write;
                if let Err(e) = f.write_all(pid.to_string().as_bytes()) {
                    let _ =
                        rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                    let _ = wait(pid, &pidfd, None);
                    return Err(io("moving the command into the guest's cgroups")(e));
                }
            }
            rustix::io::write(&go_w, b"g").map_err(os("releasing the command"))?;
            drop(go_w);
            wait(pid, &pidfd, timeout)
        }
    }
}

/// [`run`] from a process that must stay outside the guest (the
/// supervisor): a child enters the guest and runs the command, the caller
/// only waits for it.
pub fn run_apart(
    state: &State,
    env: &[(String, String)],
    cmd: &[String],
    user: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Exit> {
    run_apart_with(state, env, cmd, user, timeout, &mut || {
        std::thread::sleep(Duration::from_millis(10))
    })
}

/// [`run_apart`], calling `meanwhile` (which may wait a little) until the
/// command ends: the supervisor keeps answering its guest's intercepted
/// calls, which the command itself may make.
pub fn run_apart_with(
    state: &State,
    env: &[(String, String)],
    cmd: &[String],
    user: Option<&str>,
    timeout: Option<Duration>,
    meanwhile: &mut dyn FnMut(),
) -> Result<Exit> {
    let one = sys::one_thread().map_err(os("entering a guest from a multi-threaded process"))?;
    match sys::fork(&one).map_err(os("fork"))? {
        Forked::Child => match run(state, env, cmd, user, timeout) {
            Ok(exit) => exit_like(exit),
            Err(e) => {
                eprintln!("vserver {}: {e}", state.name);
                std::process::exit(126)
            }
        },
        Forked::Parent { pid, pidfd: _ } => {
            let child = Pid::from_raw(pid as i32).expect("a child's pid");
            loop {
                let got = rustix::process::waitpid(Some(child), WaitOptions::NOHANG)
                    .map_err(os("waitpid"))?;
                if let Some((_, s)) = got {
                    if let Some(code) = s.exit_status() {
                        return Ok(Exit::Code(code));
                    }
                    if let Some(sig) = s.terminating_signal() {
                        return Ok(Exit::Signal(sig));
                    }
                }
                meanwhile();
            }
        }
    }
}

fn child(
    state: &State,
    env: &[(String, String)],
    cmd: &[String],
    user: Option<&str>,
    filters: &[seccompiler::BpfProgram],
    intercept: Option<&(crate::intercept::Plan, std::os::fd::OwnedFd)>,
) -> Error {
    let inner = || -> Result<std::convert::Infallible> {
        sys::unblock_all_signals().map_err(os("unblocking signals"))?;
        rustix::process::chdir("/").map_err(os("chdir /"))?;
        let who = user.map(guest_user).transpose()?;
        let keep: Vec<i32> = intercept
            .iter()
            .map(|(_, s)| std::os::fd::AsRawFd::as_raw_fd(s))
            .collect();
        sys::close_other_fds(&keep);
        security::take_process_settings(state.ionice, state.personality)?;
        security::restrict_capabilities(state.bcaps)?;
        security::install(filters)?;
        if let Some((plan, sock)) = intercept {
            crate::intercept::install(plan, sock)?;
        }
        let mut command = Command::new(&cmd[0]);
        command
            .args(&cmd[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        if let Some((uid, gid, groups, home, _)) = who {
            use rustix::process::{Gid, Uid};
            let gids: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
            rustix::thread::set_thread_groups(&gids).map_err(os("setgroups"))?;
            let g = Gid::from_raw(gid);
            rustix::thread::set_thread_res_gid(g, g, g).map_err(os("setgid"))?;
            let u = Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(u, u, u).map_err(os("setuid"))?;
            command.env("HOME", &home).current_dir(&home);
        } else {
            if state.user_base.is_some() {
                // Entering a user namespace leaves the host's root
                // unmapped in it: become its root.
                use rustix::process::{Gid, Uid};
                rustix::thread::set_thread_groups(&[]).map_err(os("setgroups"))?;
                rustix::thread::set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT)
                    .map_err(os("setgid 0"))?;
                rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT)
                    .map_err(os("setuid 0"))?;
            }
            command.env("HOME", "/root");
        }
        let e = command.exec();
        Err(Error::Other(format!("exec {}: {e}", cmd[0])))
    };
    match inner() {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

fn wait(pid: u32, pidfd: &std::os::fd::OwnedFd, timeout: Option<Duration>) -> Result<Exit> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let pid = Pid::from_raw(pid as i32).expect("a child's pid");
    loop {
        let status = match deadline {
            None => rustix::process::waitpid(Some(pid), WaitOptions::empty())
                .map_err(os("waitpid"))?
                .map(|(_, s)| s),
            Some(d) => {
                let got = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)
                    .map_err(os("waitpid"))?
                    .map(|(_, s)| s);
                if got.is_none() && std::time::Instant::now() > d {
                    let _ =
                        rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
                }
                if got.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                got
            }
        };
        if let Some(s) = status {
            if let Some(code) = s.exit_status() {
                return Ok(Exit::Code(code));
            }
            if let Some(sig) = s.terminating_signal() {
                return Ok(Exit::Signal(sig));
            }
        }
    }
}

/// Ends the calling process as `exit` says: the same code, or the same
/// signal (util-vserver's `vc_exitLikeProcess`).
pub fn exit_like(exit: Exit) -> ! {
    match exit {
        Exit::Code(c) => std::process::exit(c),
        Exit::Signal(s) => {
            if let Some(sig) = crate::cgroup::signal_of(s) {
                sys::reset_signal(s);
                let _ = sys::unblock_all_signals();
                let _ = rustix::process::kill_process(rustix::process::getpid(), sig);
            }
            std::process::exit(128 + s)
        }
    }
}

/// Reads the guest's `shell` file, else the first login shell that exists
/// in it: what `vserver NAME enter` runs.
pub fn enter_shell(cfg: &GuestConfig) -> Vec<String> {
    if let Ok(text) = std::fs::read_to_string(cfg.dir.join("shell")) {
        let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        if !words.is_empty() {
            return words;
        }
    }
    for (shell, arg) in [
        ("/bin/bash", "-login"),
        ("/bin/sh", "-l"),
        ("/bin/csh", "-l"),
    ] {
        if cfg.root.join(shell.trim_start_matches('/')).exists() {
            return vec![shell.to_string(), arg.to_string()];
        }
    }
    vec!["/bin/sh".into(), "-l".into()]
}
