//! `vnamespace` (util-vserver's `vspace --mount --fs`): a program in a new
//! mount namespace, or in a running context's (docs/SEMANTICS.md, "The
//! context core").
//!
//! Entering a context's mount namespace puts the caller under the guest's
//! tree while it keeps the host's powers (its pid and network namespaces,
//! cgroups, capabilities): whatever it executes from there must not be the
//! guest's. So the program is opened on the host before the namespace is
//! entered and executed from that descriptor, and only a program that
//! needs nothing more from the filesystem to run is accepted: a statically
//! linked ELF file. A dynamically linked one would load the guest's
//! `ld.so` and libraries, a script the guest's interpreter.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::process::PidfdFlags;
use rustix::thread::{ThreadNameSpaceType, UnshareFlags};

use crate::error::{Error, Result, os};
use crate::registry::{State, start_time};
use crate::sys;

/// Puts the caller in a new mount namespace whose mounts are slaves of the
/// host's (what it mounts never reaches the host).
pub fn new_mount_namespace() -> Result<()> {
    sys::unshare(UnshareFlags::NEWNS).map_err(os("unshare(CLONE_NEWNS)"))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(os("making the mounts slaves"))
}

/// Puts the caller in running context `state`'s mount namespace (its root
/// and working directory become the guest's `/`).
pub fn enter_mount_namespace(state: &State) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(state.init as i32)
        .ok_or_else(|| Error::Other("no init".into()))?;
    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())
        .map_err(os(format!("the guest's init {} is gone", state.init)))?;
    if start_time(state.init) != Some(state.init_start) {
        return Err(Error::Other(format!(
            "pid {} is no longer the context's init",
            state.init
        )));
    }
    rustix::thread::move_into_thread_name_spaces(pidfd.as_fd(), ThreadNameSpaceType::MOUNT)
        .map_err(os("entering the context's mount namespace (setns)"))
}

/// `program` looked up in the host's `PATH` (as given when it holds a
/// `/`).
fn lookup(program: &str) -> Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Other(format!("{program}: not found in PATH")))
}

/// Whether the ELF image starting with `head` asks for an interpreter
/// (`PT_INTERP`), read from `file`; `Err` when it is not an ELF file.
fn needs_interpreter(file: &mut std::fs::File) -> std::result::Result<bool, String> {
    let mut image = Vec::new();
    file.take(16 << 20)
        .read_to_end(&mut image)
        .map_err(|e| e.to_string())?;
    elf_needs_interpreter(&image)
}

fn elf_needs_interpreter(image: &[u8]) -> std::result::Result<bool, String> {
    if image.len() < 64 || &image[..4] != b"\x7fELF" {
        return Err(if image.starts_with(b"#!") {
            "a script (its interpreter would be the guest's)".into()
        } else {
            "not an ELF executable".into()
        });
    }
    let wide = match image[4] {
        1 => false,
        2 => true,
        _ => return Err("an ELF file of unknown class".into()),
    };
    if image[5] != 1 {
        return Err("a big-endian ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(32), u16_at(54), u16_at(56))
    } else {
        (u32_at(28), u16_at(42), u16_at(44))
    };
    const PT_INTERP: usize = 3;
    for i in 0..phnum {
        let at = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("bad program headers")?)
            .ok_or("bad program headers")?;
        if at.checked_add(4).is_none_or(|end| end > image.len()) {
            return Err("program headers beyond the file".into());
        }
        if u32_at(at) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens `program` (looked up in the host's `PATH`) on the host, for
/// [`exec_host_program`] once inside a guest's mount namespace; refuses
/// anything but a statically linked executable (see the module doc).
pub fn open_host_program(program: &str) -> Result<(PathBuf, OwnedFd)> {
    let path = lookup(program)?;
    let mut file =
        std::fs::File::open(&path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    match needs_interpreter(&mut file) {
        Ok(false) => Ok((path, file.into())),
        Ok(true) => Err(Error::Other(format!(
            "{}: dynamically linked: it would load the guest's libraries with the host's powers; use a statically linked program (busybox-static's, say) or `vserver NAME exec`",
            path.display()
        ))),
        Err(why) => Err(Error::Other(format!("{}: {why}", path.display()))),
    }
}

/// Executes the program [`open_host_program`] opened, with `args` (the
/// first is its name) and the caller's environment.
pub fn exec_host_program(fd: OwnedFd, args: &[String]) -> Error {
    let c = |s: &str| CString::new(s).map_err(|_| Error::Other(format!("{s:?}: a NUL byte")));
    let argv = match args.iter().map(|a| c(a)).collect::<Result<Vec<_>>>() {
        Ok(v) => v,
        Err(e) => return e,
    };
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    Error::Other(format!(
        "exec {}: {}",
        args.first().map_or("", String::as_str),
        sys::fexecve(fd, &argv, &env)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_programs_are_told_apart() {
        let read = |p: &str| std::fs::read(p).unwrap();
        // This test binary is dynamically linked; busybox-static is not.
        let me = std::env::current_exe().unwrap();
        assert_eq!(elf_needs_interpreter(&std::fs::read(me).unwrap()), Ok(true));
        assert!(
            Path::new("/bin/busybox").exists(),
            "busybox-static is needed (scripts/setup.sh installs it)"
        );
        assert_eq!(elf_needs_interpreter(&read("/bin/busybox")), Ok(false));
        assert!(elf_needs_interpreter(b"#!/bin/sh\necho hi\n").is_err());
        assert!(elf_needs_interpreter(b"\x7fELF").is_err());
        let mut truncated = read("/bin/true");
        truncated.truncate(70);
        assert!(elf_needs_interpreter(&truncated).is_err());
    }
}
