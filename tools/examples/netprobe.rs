//! netprobe: one socket operation per run, its outcome on stdout, for the
//! chbind tests (a program whose every socket call is visible, which
//! busybox's applets are not). Not installed.
//!
//! ```text
//! netprobe bind tcp|udp ADDR:PORT      ok LOCAL | err ERRNO
//! netprobe listen ADDR:PORT            ok LOCAL, then: peer PEER (one accept)
//! netprobe connect ADDR:PORT           ok LOCAL PEER | err ERRNO
//! netprobe udp-echo ADDR:PORT          ok LOCAL, then: from SOURCE (one datagram, echoed)
//! netprobe udp-send ADDR:PORT          ok, then: reply REPLY-SOURCE | err ERRNO
//! ```
//!
//! ADDR may be IPv6 in brackets. `udp-send` sends from a socket never
//! bound (the kernel binds it at the send).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

fn errno(e: &std::io::Error) -> String {
    format!("err {}", e.raw_os_error().unwrap_or(-1))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |s: &str| -> SocketAddr { s.parse().expect("ADDR:PORT") };
    let out = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["bind", "tcp", a] => TcpListener::bind(addr(a))
            .map(|l| format!("ok {}", l.local_addr().unwrap()))
            .unwrap_or_else(|e| errno(&e)),
        ["bind", "udp", a] => UdpSocket::bind(addr(a))
            .map(|s| format!("ok {}", s.local_addr().unwrap()))
            .unwrap_or_else(|e| errno(&e)),
        ["listen", a] => match TcpListener::bind(addr(a)) {
            Ok(l) => {
                println!("ok {}", l.local_addr().unwrap());
                std::io::stdout().flush().unwrap();
                let (mut s, peer) = l.accept().expect("accept");
                let _ = s.write_all(b"hello\n");
                format!("peer {peer}")
            }
            Err(e) => errno(&e),
        },
        ["connect", a] => match TcpStream::connect_timeout(&addr(a), Duration::from_secs(5)) {
            Ok(mut s) => {
                let mut buf = [0u8; 6];
                let _ = s.read_exact(&mut buf);
                format!("ok {} {}", s.local_addr().unwrap(), s.peer_addr().unwrap())
            }
            Err(e) => errno(&e),
        },
        ["udp-echo", a] => match UdpSocket::bind(addr(a)) {
            Ok(s) => {
                println!("ok {}", s.local_addr().unwrap());
                std::io::stdout().flush().unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = s.recv_from(&mut buf).expect("recv_from");
                s.send_to(&buf[..n], from).expect("send_to");
                format!("from {from}")
            }
            Err(e) => errno(&e),
        },
        ["udp-send", a] => {
            let to = addr(a);
            let family = if to.is_ipv4() {
                rustix::net::AddressFamily::INET
            } else {
                rustix::net::AddressFamily::INET6
            };
            let fd =
                rustix::net::socket(family, rustix::net::SocketType::DGRAM, None).expect("socket");
            let s = UdpSocket::from(fd);
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            match s.send_to(b"ping", to) {
                Ok(_) => {
                    println!("ok");
                    let mut buf = [0u8; 64];
                    match s.recv_from(&mut buf) {
                        Ok((_, from)) => format!("reply {from}"),
                        Err(e) => errno(&e),
                    }
                }
                Err(e) => errno(&e),
            }
        }
        _ => {
            eprintln!("usage: see the source");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
