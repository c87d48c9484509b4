//! The swaps done by the daemon serving the mount (`vxfs::unify`): one
//! request on its control socket per inode, instead of five round trips
//! through the mount per name. Where the daemon cannot be reached, or
//! refuses (an older daemon), the swaps go through the mount as before.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use vxfs::control::{Client, Reply, Request};
use vxfs::unify::{Swap, Swapped};

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
        })
    }

    /// Asks the daemon to do `swaps` in order (it stops at the first not
    /// linked): what became of each it did, or `None` when it cannot.
    /// Many names go in several requests (a message's size is bounded).
    pub fn unify(&self, swaps: Vec<Swap>) -> Option<Vec<Swapped>> {
        let mut done = Vec::with_capacity(swaps.len());
        for chunk in swaps.chunks(SWAPS_PER_REQUEST) {
            let some = self.ask(chunk.to_vec());
            let Some(some) = some else {
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

    fn ask(&self, swaps: Vec<Swap>) -> Option<Vec<Swapped>> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut client = match taken {
            Some(c) => c,
            None => match Client::connect(&self.socket) {
                Ok(Some(c)) => c,
                _ => return self.refuse(),
            },
        };
        let asked = client.send(&Request::Unify { swaps }, &[]);
        match asked.and_then(|()| client.reply()) {
            Ok(Some(Reply::Unified(done))) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(client);
                Some(done)
            }
            _ => self.refuse(),
        }
    }

    fn refuse(&self) -> Option<Vec<Swapped>> {
        self.refused.store(true, Ordering::Relaxed);
        None
    }
}
