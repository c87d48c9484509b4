//! The swaps done by the daemon serving the mount (`vxfs::unify`): one
//! request on its control socket per inode, instead of five round trips
//! through the mount per name. Where the daemon cannot be reached, or
//! refuses (an older daemon), the swaps go through the mount as before.
//! A daemon that knows `UnifyVerified` also does the byte compare before
//! the swaps, on its own descriptors.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use vxfs::control::{Client, Reply, Request};
use vxfs::unify::{Swap, Swapped, Twin};

/// Swaps per request: well within the control socket's message bound.
const SWAPS_PER_REQUEST: usize = 128;

/// The control socket of the daemon serving a mount, and connections to
/// it kept for the linking threads.
#[derive(Debug)]
pub struct Daemon {
    socket: PathBuf,
    idle: Mutex<Vec<Client>>,
    /// It refused or could not answer once: every later swap goes
    /// through the mount.
    refused: AtomicBool,
    /// It refused `UnifyVerified` once (an older daemon): hashify compares
    /// through the mount, and the daemon only swaps.
    no_compare: AtomicBool,
}

impl Daemon {
    /// The daemon of the vxfs mount it describes as `info` (its
    /// `view.json`; the socket is named by its tree's root).
    pub fn of_view(info: &vxfs::vroot_server::ViewInfo) -> Option<Daemon> {
        let st = rustix::fs::stat(&info.tree).ok()?;
        let socket = vxfs::control::socket_path(st.st_dev, st.st_ino);
        socket.exists().then(|| Daemon {
            socket,
            idle: Mutex::new(Vec::new()),
            refused: AtomicBool::new(false),
            no_compare: AtomicBool::new(false),
        })
    }

    /// Asks the daemon to do `swaps` in order (it stops at the first not
    /// linked): what became of each it did, or `None` when it cannot.
    /// Many names go in several requests (a message's size is bounded).
    pub fn unify(&self, swaps: Vec<Swap>) -> Option<Vec<Swapped>> {
        self.unify_from(Vec::with_capacity(swaps.len()), &swaps)
    }

    /// Has the daemon compare inode `twin` with its store entry and, if
    /// they are twins, do `swaps` (every name of that inode): what became
    /// of each swap it did (`[Changed]` when they are not twins), or
    /// `None` when it cannot compare (nothing was swapped: hashify
    /// compares through the mount). Past the first request's names the
    /// rest are plain swaps, each checked as [`Daemon::unify`]'s.
    pub fn unify_verified(&self, twin: Twin, swaps: Vec<Swap>) -> Option<Vec<Swapped>> {
        if self.no_compare.load(Ordering::Relaxed) || swaps.is_empty() {
            return None;
        }
        let first = swaps.len().min(SWAPS_PER_REQUEST);
        let request = Request::UnifyVerified {
            twin,
            swaps: swaps[..first].to_vec(),
        };
        let done = match self.ask(&request) {
            Some(done) if done.is_empty() => return None,
            Some(done) => done,
            None => {
                // Refused (an older daemon) or unreachable: plain swaps
                // find out which, next time.
                self.no_compare.store(true, Ordering::Relaxed);
                return None;
            }
        };
        if done.len() < first || done.iter().any(|s| *s != Swapped::Linked) {
            return Some(done);
        }
        self.unify_from(done, &swaps[first..])
    }

    /// [`Daemon::unify`] of `swaps`, after the swaps `done` before them.
    fn unify_from(&self, mut done: Vec<Swapped>, swaps: &[Swap]) -> Option<Vec<Swapped>> {
        for chunk in swaps.chunks(SWAPS_PER_REQUEST) {
            let some = self.ask(&Request::Unify {
                swaps: chunk.to_vec(),
            });
            let Some(some) = some else {
                self.refused.store(true, Ordering::Relaxed);
                // What the daemon did so far stands; none for the rest.
                return (!done.is_empty()).then_some(done);
            };
            let stop = some.len() < chunk.len() || some.iter().any(|s| *s != Swapped::Linked);
            done.extend(some);
            if stop {
                break;
            }
        }
        Some(done)
    }

    /// The daemon's answer to `request`; `None` if it refused it or
    /// could not be asked.
    fn ask(&self, request: &Request) -> Option<Vec<Swapped>> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut client = match taken {
            Some(c) => c,
            None => match Client::connect(&self.socket) {
                Ok(Some(c)) => c,
                _ => return None,
            },
        };
        let asked = client.send(request, &[]);
        match asked.and_then(|()| client.reply()) {
            Ok(Some(Reply::Unified(done))) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(client);
                Some(done)
            }
            _ => None,
        }
    }
}
