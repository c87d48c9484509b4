//! callprobe: times `N` calls of `uname(2)` or `sysinfo(2)` and prints
//! the nanoseconds per call and what the last one answered (the release,
//! or total RAM in bytes), for the interception bench and tests. Not
//! installed.
//!
//! ```text
//! callprobe uname|sysinfo N
//! ```

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (call, n) = match &args[..] {
        [c, n] => (c.as_str(), n.parse::<u32>().expect("N")),
        _ => {
            eprintln!("usage: callprobe uname|sysinfo N");
            std::process::exit(2);
        }
    };
    let t = Instant::now();
    let mut last = String::new();
    for _ in 0..n {
        last = match call {
            "uname" => rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            "sysinfo" => {
                let s = rustix::system::sysinfo();
                (s.totalram as u64 * u64::from(s.mem_unit)).to_string()
            }
            _ => {
                eprintln!("callprobe: unknown call {call}");
                std::process::exit(2);
            }
        };
    }
    let ns = t.elapsed().as_nanos() / u128::from(n.max(1));
    println!("{ns} {last}");
}
