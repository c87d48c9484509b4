//! vroot, the vxfs quota proxy (vserver-semantics §8, reimagined): a running
//! vxfs daemon answers disk-limit queries on two unix sockets per mount.
//!
//! * `/run/vxfs/MAJOR:MINOR/admin.sock` (mode 0600): the host. Peers must be
//!   uid 0; they may read and set any context's limits.
//! * `/run/vxfs/MAJOR:MINOR/guest.sock` (mode 0666, for bind-mounting into
//!   guests): every request is answered for the peer's own context only,
//!   derived from its credentials (`SO_PEERCRED`) exactly as the mount
//!   derives a request's context; setting limits is refused (`EPERM`).
//!
//! `MAJOR:MINOR` is the device number of the mount as `stat(2)` shows it on
//! any path inside, so a client finds the socket from a path alone
//! ([`socket_dir`]).
//!
//! # Wire format
//!
//! One request line, one response: `ok N` followed by N entry lines, or
//! `err ERRNO MESSAGE`. Requests: `get` (own context), `get XID`, `list`,
//! `set XID [space_total=KIB] [inodes_total=N] [reserved=PCT]`
//! (`-1` = unlimited; fields left out keep their value), `remove XID`.
//! Entries: `xid=X space_used=KIB space_total=KIB|-1 inodes_used=N
//! inodes_total=N|-1 reserved=PCT`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a mount's sockets live.
pub const RUN_DIR: &str = "/run/vxfs";

/// The socket directory of the vxfs mount holding `path`.
pub fn socket_dir(path: &Path) -> std::io::Result<PathBuf> {
    let st = rustix::fs::stat(path)?;
    Ok(dir_for_dev(st.st_dev))
}

/// The socket directory of the mount with device number `dev`.
pub fn dir_for_dev(dev: u64) -> PathBuf {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    PathBuf::from(format!("{RUN_DIR}/{major}:{minor}"))
}

/// A limit field in a `set` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Leave as it is.
    Keep,
    /// No limit.
    Unlimited,
    /// This value.
    Value(u64),
}

impl Field {
    fn encode(self, name: &str, out: &mut String) {
        match self {
            Field::Keep => {}
            Field::Unlimited => out.push_str(&format!(" {name}=-1")),
            Field::Value(v) => out.push_str(&format!(" {name}={v}")),
        }
    }

    /// Applies the field to a current value.
    pub fn apply(self, current: Option<u64>) -> Option<u64> {
        match self {
            Field::Keep => current,
            Field::Unlimited => None,
            Field::Value(v) => Some(v),
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A context's limits and usage (`None`: the caller's own).
    Get(Option<u32>),
    /// Every context known to the mount.
    List,
    /// Sets a context's limits (creating them).
    Set {
        /// The context.
        xid: u32,
        /// Space in KiB.
        space_total: Field,
        /// Inodes.
        inodes_total: Field,
        /// Reserved percent (`None`: keep).
        reserved: Option<u8>,
    },
    /// Removes a context's limits (usage keeps being counted).
    Remove(u32),
}

/// One context's limits and usage. Space in KiB, `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// The context.
    pub xid: u32,
    /// Allocated space, KiB.
    pub space_used: u64,
    /// Space limit, KiB.
    pub space_total: Option<u64>,
    /// Inodes used.
    pub inodes_used: u64,
    /// Inode limit.
    pub inodes_total: Option<u64>,
    /// Reserved percent.
    pub reserved: u8,
}

/// A protocol or transport failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon refused, with this errno.
    #[error("{message} ({})", rustix::io::Errno::from_raw_os_error(*errno))]
    Refused {
        /// The errno.
        errno: i32,
        /// The daemon's explanation.
        message: String,
    },
    /// A line that does not parse.
    #[error("malformed vroot message: {0:?}")]
    Malformed(String),
    /// The socket failed.
    #[error("vroot socket: {0}")]
    Io(#[from] std::io::Error),
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

fn parse_opt(s: &str) -> Option<Option<u64>> {
    if s == "-1" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

impl Entry {
    /// The wire form.
    pub fn encode(&self) -> String {
        format!(
            "xid={} space_used={} space_total={} inodes_used={} inodes_total={} reserved={}",
            self.xid,
            self.space_used,
            opt(self.space_total),
            self.inodes_used,
            opt(self.inodes_total),
            self.reserved
        )
    }

    /// Parses the wire form.
    pub fn decode(line: &str) -> Result<Entry, Error> {
        let bad = || Error::Malformed(line.to_string());
        let mut e = Entry::default();
        let mut seen = 0;
        for field in line.split_whitespace() {
            let (k, v) = field.split_once('=').ok_or_else(bad)?;
            match k {
                "xid" => e.xid = v.parse().map_err(|_| bad())?,
                "space_used" => e.space_used = v.parse().map_err(|_| bad())?,
                "space_total" => e.space_total = parse_opt(v).ok_or_else(bad)?,
                "inodes_used" => e.inodes_used = v.parse().map_err(|_| bad())?,
                "inodes_total" => e.inodes_total = parse_opt(v).ok_or_else(bad)?,
                "reserved" => e.reserved = v.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
            seen += 1;
        }
        if seen != 6 {
            return Err(bad());
        }
        Ok(e)
    }
}

impl Request {
    /// The wire form (one line, no newline).
    pub fn encode(&self) -> String {
        match self {
            Request::Get(None) => "get".into(),
            Request::Get(Some(x)) => format!("get {x}"),
            Request::List => "list".into(),
            Request::Remove(x) => format!("remove {x}"),
            Request::Set {
                xid,
                space_total,
                inodes_total,
                reserved,
            } => {
                let mut s = format!("set {xid}");
                space_total.encode("space_total", &mut s);
                inodes_total.encode("inodes_total", &mut s);
                if let Some(r) = reserved {
                    s.push_str(&format!(" reserved={r}"));
                }
                s
            }
        }
    }

    /// Parses the wire form.
    pub fn decode(line: &str) -> Result<Request, Error> {
        let bad = || Error::Malformed(line.to_string());
        let mut words = line.split_whitespace();
        let verb = words.next().ok_or_else(bad)?;
        let xid = |w: Option<&str>| w.ok_or_else(bad)?.parse::<u32>().map_err(|_| bad());
        let request = match verb {
            "get" => match words.next() {
                None => Request::Get(None),
                Some(x) => Request::Get(Some(xid(Some(x))?)),
            },
            "list" => Request::List,
            "remove" => Request::Remove(xid(words.next())?),
            "set" => {
                let xid = xid(words.next())?;
                let (mut space_total, mut inodes_total, mut reserved) =
                    (Field::Keep, Field::Keep, None);
                for w in words.by_ref() {
                    let (k, v) = w.split_once('=').ok_or_else(bad)?;
                    let field = || match parse_opt(v) {
                        Some(None) => Ok(Field::Unlimited),
                        Some(Some(n)) => Ok(Field::Value(n)),
                        None => Err(bad()),
                    };
                    match k {
                        "space_total" => space_total = field()?,
                        "inodes_total" => inodes_total = field()?,
                        "reserved" => {
                            reserved =
                                Some(v.parse::<u8>().ok().filter(|r| *r <= 100).ok_or_else(bad)?)
                        }
                        _ => return Err(bad()),
                    }
                }
                Request::Set {
                    xid,
                    space_total,
                    inodes_total,
                    reserved,
                }
            }
            _ => return Err(bad()),
        };
        if words.next().is_some() {
            return Err(bad());
        }
        Ok(request)
    }
}

/// Encodes a full response.
pub fn encode_response(result: &Result<Vec<Entry>, (i32, String)>) -> String {
    match result {
        Ok(entries) => {
            let mut s = format!("ok {}\n", entries.len());
            for e in entries {
                s.push_str(&e.encode());
                s.push('\n');
            }
            s
        }
        Err((errno, message)) => format!("err {errno} {}\n", message.replace('\n', " ")),
    }
}

/// A connection to a mount's vroot socket.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Client, Error> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            stream: BufReader::new(stream),
        })
    }

    /// Sends one request and reads its response.
    pub fn call(&mut self, request: &Request) -> Result<Vec<Entry>, Error> {
        let line = request.encode() + "\n";
        let sent = self.stream.get_mut().write_all(line.as_bytes());
        // A daemon that refuses the connection answers and closes before
        // reading: its answer is still there to read.
        let mut head = String::new();
        let got = self.stream.read_line(&mut head);
        if head.is_empty() {
            sent?;
            got?;
        }
        let head = head.trim_end();
        if let Some(rest) = head.strip_prefix("err ") {
            let (errno, message) = rest.split_once(' ').unwrap_or((rest, ""));
            let errno = errno
                .parse()
                .map_err(|_| Error::Malformed(head.to_string()))?;
            return Err(Error::Refused {
                errno,
                message: message.to_string(),
            });
        }
        let n: usize = head
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::Malformed(head.to_string()))?;
        (0..n)
            .map(|_| {
                let mut line = String::new();
                self.stream.read_line(&mut line)?;
                Entry::decode(line.trim_end())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let table = [
            Request::Get(None),
            Request::Get(Some(42)),
            Request::List,
            Request::Remove(7),
            Request::Set {
                xid: 5,
                space_total: Field::Value(1024),
                inodes_total: Field::Unlimited,
                reserved: Some(5),
            },
            Request::Set {
                xid: 5,
                space_total: Field::Keep,
                inodes_total: Field::Keep,
                reserved: None,
            },
        ];
        for r in table {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        for bad in [
            "",
            "get x",
            "set",
            "set 5 space_total=abc",
            "set 5 reserved=101",
            "drop 5",
            "get 1 2",
            "set 5 foo=1",
        ] {
            assert!(Request::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = Entry {
            xid: 3,
            space_used: 10,
            space_total: None,
            inodes_used: 2,
            inodes_total: Some(100),
            reserved: 0,
        };
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert!(Entry::decode("xid=3").is_err());
        assert!(
            Entry::decode(
                "xid=3 space_used=x space_total=1 inodes_used=1 inodes_total=1 reserved=1"
            )
            .is_err()
        );
    }

    /// The literal lines the module doc (and the README) document: what
    /// a client written from the text must send and read.
    #[test]
    fn the_documented_wire_lines() {
        let requests = [
            ("get", Request::Get(None)),
            ("get 42", Request::Get(Some(42))),
            ("list", Request::List),
            ("remove 7", Request::Remove(7)),
            (
                "set 5 space_total=1048576 inodes_total=-1 reserved=5",
                Request::Set {
                    xid: 5,
                    space_total: Field::Value(1_048_576),
                    inodes_total: Field::Unlimited,
                    reserved: Some(5),
                },
            ),
            (
                "set 5 inodes_total=100",
                Request::Set {
                    xid: 5,
                    space_total: Field::Keep,
                    inodes_total: Field::Value(100),
                    reserved: None,
                },
            ),
        ];
        for (line, request) in requests {
            assert_eq!(request.encode(), line);
            assert_eq!(Request::decode(line).unwrap(), request);
        }
        let entry = Entry {
            xid: 5,
            space_used: 1024,
            space_total: Some(1_048_576),
            inodes_used: 3,
            inodes_total: None,
            reserved: 0,
        };
        let line =
            "xid=5 space_used=1024 space_total=1048576 inodes_used=3 inodes_total=-1 reserved=0";
        assert_eq!(entry.encode(), line);
        assert_eq!(Entry::decode(line).unwrap(), entry);
        assert_eq!(encode_response(&Ok(vec![entry])), format!("ok 1\n{line}\n"));
        assert_eq!(encode_response(&Ok(vec![])), "ok 0\n");
        assert_eq!(
            encode_response(&Err((1, "guests may not set\nlimits".into()))),
            "err 1 guests may not set limits\n"
        );
    }
}
