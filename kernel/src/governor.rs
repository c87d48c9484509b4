//! The dynamic half of VServer's token bucket, which CFS bandwidth cannot
//! express (docs/SEMANTICS.md, "The scheduler governor"): a context's
//! bucket kept in the supervisor from its measured CPU time, every
//! [`INTERVAL`].
//!
//! The bucket gains `fill-rate` tokens per `interval` ticks (summed over
//! its per-CPU buckets), with `idle-time` also `fill-rate2` per
//! `interval2` of the host's idle time, and is capped at `tokens-max`;
//! the CPU time its tasks use takes tokens out. Empty, the context goes
//! on hold: its CPU bandwidth drops to the kernel's minimum (1 ms per
//! second) until the bucket holds `tokens-min` again, then it runs
//! unlimited. With `sched_prio` its weight follows the bucket
//! ("vavavoom": nice −5 full … +15 empty, plus `priority-bias`).
//!
//! Everything is in CPU microseconds (one tick = 1/HZ s of one CPU).

use std::time::{Duration, Instant};

use crate::cgroup::{CgroupFs, CgroupSet, CpuSettings};
use crate::config::SchedConfig;
use crate::names::cflag;
use crate::sched::HZ;

/// How often the supervisor updates the bucket.
pub const INTERVAL: Duration = Duration::from_millis(25);

/// The bandwidth of a context on hold: the kernel's smallest quota per its
/// largest period.
pub const HOLD: (u64, u64) = (1_000, 1_000_000);

/// VServer's `MAX_USER_PRIO * VAVAVOOM_RATIO / 100` (40 · 50 %): the
/// priority bonus spans −5 (full) … +15 (empty).
const VAVAVOOM_SPAN: f64 = 20.0;

/// A context's token bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Tokens added per µs of wall time.
    pub rate: f64,
    /// Tokens added per µs of host idle time (`idle-time`).
    pub idle_rate: f64,
    /// `tokens-max`.
    pub max: f64,
    /// `tokens-min`: what leaves the hold.
    pub min: f64,
    /// Now.
    pub tokens: f64,
    /// On hold.
    pub hold: bool,
    /// `sched_prio`: the weight follows the bucket, around this bias.
    pub prio: Option<i32>,
}

/// What a step changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// The hold began (`Some(true)`) or ended.
    pub hold: Option<bool>,
    /// The weight's new nice value.
    pub nice: Option<i32>,
}

impl Bucket {
    /// The bucket of a context with settings `s` and flags `cflags`, if
    /// it needs the governor: a hard limit (`sched_hard`) whose bucket
    /// the static mapping cannot express (`tokens-min`, `tokens-max`
    /// beyond one period's burst, `idle-time`), or `sched_prio`; never
    /// with `nogovernor`.
    pub fn of(s: &SchedConfig, cflags: u64) -> Option<Bucket> {
        if s.no_governor {
            return None;
        }
        let tick = 1_000_000.0 / HZ as f64;
        let buckets = (s.per_cpu.len() as f64).max(1.0);
        let hard = cflags & cflag::SCHED_HARD != 0;
        let prio = cflags & cflag::SCHED_PRIO != 0;
        let (r, t) = match (s.fill_rate, s.interval) {
            (Some(r), Some(t)) if t > 0 => (f64::from(r), f64::from(t)),
            (Some(r), None) => (f64::from(r), HZ as f64),
            (None, Some(t)) if t > 0 => (1.0, f64::from(t)),
            _ => return None,
        };
        let rate = r / t * buckets;
        // VServer's defaults: tokens-max HZ, tokens-min HZ/3.
        let max = f64::from(s.tokens_max.unwrap_or(HZ as u32)) * tick * buckets;
        let min = f64::from(s.tokens_min.unwrap_or(HZ as u32 / 3)) * tick * buckets;
        let period = (t * tick).clamp(1_000.0, 1_000_000.0);
        let beyond_burst = max > 2.0 * rate * period;
        let needs = prio
            || (hard
                && (s.tokens_min.is_some()
                    || s.idle_time
                    || (s.tokens_max.is_some() && beyond_burst)));
        if !needs {
            return None;
        }
        let idle_rate = match (s.idle_time, s.fill_rate2, s.interval2) {
            (true, Some(r2), Some(t2)) if t2 > 0 => f64::from(r2) / f64::from(t2) * buckets,
            (true, Some(r2), None) => f64::from(r2) / HZ as f64 * buckets,
            _ => 0.0,
        };
        let tokens = s
            .tokens
            .map_or(max, |n| (f64::from(n) * tick * buckets).min(max));
        Some(Bucket {
            rate,
            idle_rate,
            max,
            min: min.min(max),
            tokens,
            hold: false,
            prio: prio.then_some(s.prio_bias.unwrap_or(0)),
        })
    }

    /// The nice value its weight has now (`sched_prio`).
    pub fn nice(&self) -> Option<i32> {
        let bias = self.prio?;
        let empty = (self.max - self.tokens.clamp(0.0, self.max)) / self.max;
        let bonus = VAVAVOOM_SPAN * (empty * empty - 0.25);
        Some((bias + bonus.round() as i32).clamp(-20, 19))
    }

    /// `wall` µs passed, in which the context used `used` µs of CPU and
    /// the host's CPUs were idle `idle` µs.
    pub fn step(&mut self, wall: f64, used: f64, idle: f64, hard: bool) -> Change {
        let before = self.nice();
        self.tokens = (self.tokens + self.rate * wall + self.idle_rate * idle - used).min(self.max);
        if !hard {
            // No hold to pay a debt back: the bucket (and with it the
            // priority) bottoms out at empty.
            self.tokens = self.tokens.max(0.0);
        }
        let mut change = Change::default();
        if hard {
            if !self.hold && self.tokens <= 0.0 {
                self.hold = true;
                change.hold = Some(true);
            } else if self.hold && self.tokens >= self.min {
                self.hold = false;
                change.hold = Some(false);
            }
        }
        let after = self.nice();
        if after != before {
            change.nice = after;
        }
        change
    }
}

/// The governor of one context: its bucket, the last readings, and what
/// it wrote.
#[derive(Debug)]
pub struct Governor {
    bucket: Bucket,
    hard: bool,
    period: u64,
    last: Instant,
    last_used: u64,
    last_idle: Option<u64>,
}

/// The host's idle CPU time, µs (`/proc/stat`'s first line: idle and
/// iowait, in USER_HZ).
fn host_idle_usec() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut f = stat.lines().next()?.split_whitespace().skip(1);
    let ticks: Vec<u64> = (&mut f).take(5).filter_map(|v| v.parse().ok()).collect();
    let hz = rustix::param::clock_ticks_per_second();
    Some((ticks.get(3)? + ticks.get(4)?) * 1_000_000 / hz)
}

impl Governor {
    /// The governor of a context with settings `s` and flags `cflags`,
    /// if it needs one; applies its starting state.
    pub fn new(
        s: &SchedConfig,
        cflags: u64,
        cgroups: &CgroupSet,
        fs: &dyn CgroupFs,
    ) -> Option<Governor> {
        let bucket = Bucket::of(s, cflags)?;
        let hard = cflags & cflag::SCHED_HARD != 0;
        let t = f64::from(s.interval.unwrap_or(HZ as u32)) * 1_000_000.0 / HZ as f64;
        let g = Governor {
            hard,
            period: (t as u64).clamp(1_000, 1_000_000),
            last: Instant::now(),
            last_used: cgroups.cpu_usage_usec(fs).unwrap_or(0),
            last_idle: if bucket.idle_rate > 0.0 {
                host_idle_usec()
            } else {
                None
            },
            bucket,
        };
        // No burst: the bucket is the governor's (and the kernel refuses a
        // quota below the burst, which the hold's is).
        if hard {
            if let Err(e) = cgroups.set_cpu(
                fs,
                &CpuSettings {
                    burst: Some(0),
                    ..CpuSettings::default()
                },
            ) {
                log::warn!("scheduler governor: {e}");
            }
        }
        g.apply(
            Change {
                hold: hard.then_some(false),
                nice: g.bucket.nice(),
            },
            cgroups,
            fs,
        );
        Some(g)
    }

    /// The bucket now.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The governor for new settings `s` (`vsched`), in place of `old`:
    /// the bucket keeps its tokens (up to its new size) and its hold; none
    /// if the settings no longer need one (the static mapping `vsched`
    /// wrote stays).
    pub fn reconfigure(
        old: Option<Governor>,
        s: &SchedConfig,
        cflags: u64,
        cgroups: &CgroupSet,
        fs: &dyn CgroupFs,
    ) -> Option<Governor> {
        let mut new = Governor::new(s, cflags, cgroups, fs)?;
        if let Some(old) = old {
            new.bucket.tokens = old.bucket.tokens.min(new.bucket.max);
            if old.bucket.hold && new.hard {
                new.bucket.hold = true;
                new.apply(
                    Change {
                        hold: Some(true),
                        nice: None,
                    },
                    cgroups,
                    fs,
                );
            }
        }
        Some(new)
    }

    /// Reads the context's CPU time, updates the bucket and writes what
    /// changed; call every [`INTERVAL`].
    pub fn tick(&mut self, cgroups: &CgroupSet, fs: &dyn CgroupFs) {
        let now = Instant::now();
        let wall = now.duration_since(self.last).as_micros() as f64;
        self.last = now;
        let Some(used) = cgroups.cpu_usage_usec(fs) else {
            return;
        };
        let delta = used.saturating_sub(self.last_used) as f64;
        self.last_used = used;
        let idle = match self.last_idle {
            Some(before) => {
                let now_idle = host_idle_usec().unwrap_or(before);
                self.last_idle = Some(now_idle);
                now_idle.saturating_sub(before) as f64
            }
            None => 0.0,
        };
        let change = self.bucket.step(wall, delta, idle, self.hard);
        self.apply(change, cgroups, fs);
    }

    fn apply(&self, change: Change, cgroups: &CgroupSet, fs: &dyn CgroupFs) {
        let bandwidth = change.hold.map(|hold| {
            if hold {
                (Some(HOLD.0), HOLD.1)
            } else {
                (None, self.period)
            }
        });
        let settings = CpuSettings {
            bandwidth,
            burst: None,
            nice: change.nice,
        };
        if settings != CpuSettings::default() {
            if let Err(e) = cgroups.set_cpu(fs, &settings) {
                // The supervisor's stderr is the guest's console log.
                log::warn!("scheduler governor: {e}");
            }
        }
    }
}

/// A context's scheduler settings as they are now (its configuration's,
/// then what `vsched` changed) and the governor they need, if any: what
/// its supervisor keeps.
#[derive(Debug)]
pub struct Sched {
    settings: SchedConfig,
    cflags: u64,
    governor: Option<Governor>,
}

impl Sched {
    /// The configuration's settings, with their governor started.
    pub fn new(
        settings: &SchedConfig,
        cflags: u64,
        cgroups: &CgroupSet,
        fs: &dyn CgroupFs,
    ) -> Sched {
        Sched {
            settings: settings.clone(),
            cflags,
            governor: Governor::new(settings, cflags, cgroups, fs),
        }
    }

    /// Whether a governor runs (and wants [`Sched::tick`] every
    /// [`INTERVAL`]).
    pub fn governed(&self) -> bool {
        self.governor.is_some()
    }

    /// The governor's step.
    pub fn tick(&mut self, cgroups: &CgroupSet, fs: &dyn CgroupFs) {
        if let Some(g) = self.governor.as_mut() {
            g.tick(cgroups, fs);
        }
    }

    /// `vsched`'s `given` settings over the current ones; the governor
    /// follows them.
    pub fn change(&mut self, given: SchedConfig, cgroups: &CgroupSet, fs: &dyn CgroupFs) {
        self.settings = given.or(&self.settings);
        self.governor = Governor::reconfigure(
            self.governor.take(),
            &self.settings,
            self.cflags,
            cgroups,
            fs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's TBF at tick resolution: one token per tick the context
    /// runs, `r` per `t` ticks, hold at 0 until `min`.
    fn tbf(r: f64, t: f64, max: f64, min: f64, ticks: usize, share: f64) -> Vec<f64> {
        let (mut tokens, mut hold, mut used) = (max, false, Vec::new());
        for _ in 0..ticks {
            tokens = (tokens + r / t).min(max);
            let run = if hold { 0.0 } else { share };
            tokens -= run;
            if !hold && tokens <= 0.0 {
                hold = true;
            } else if hold && tokens >= min {
                hold = false;
            }
            used.push(run);
        }
        used
    }

    fn cfg(r: u32, t: u32, max: u32, min: u32) -> SchedConfig {
        SchedConfig {
            fill_rate: Some(r),
            interval: Some(t),
            tokens_max: Some(max),
            tokens_min: Some(min),
            ..SchedConfig::default()
        }
    }

    #[test]
    fn the_bucket_follows_the_tick_exact_definition() {
        // 1/4 of a CPU, a bucket of 1 s, hold until 0.5 s, a busy context
        // alone on a CPU (share 1) or against an equal one (share 1/2):
        // the governor's steps of 25 ms use what the tick-exact bucket
        // uses over 12 s, within what its granularity allows (each hold
        // begins up to one step late: the overshoot is paid back by a
        // longer hold, so the long-run rate is exact and only the phase
        // moves, by at most a step's use per hold).
        for share in [1.0, 0.5] {
            let mut b = Bucket::of(&cfg(1, 4, 250, 125), cflag::SCHED_HARD).unwrap();
            let tick = 4_000.0;
            let exact: f64 = tbf(1.0, 4.0, 250.0, 125.0, 3000, share).iter().sum::<f64>() * tick;
            let mut used = 0.0;
            for _ in 0..480 {
                let run = if b.hold {
                    0.001 * 25_000.0
                } else {
                    share * 25_000.0
                };
                used += run;
                b.step(25_000.0, run, 0.0, true);
            }
            let holds = 8.0;
            assert!(
                (used - exact).abs() < holds * 25_000.0,
                "share {share}: {used} vs {exact}"
            );
        }
        // Alone, the first 6 s: 1.33 s of running, 2 s of hold, 0.67 s,
        // 2 s of hold: 2.0 s of CPU (the static mapping gives 1.5 s).
        let exact: f64 = tbf(1.0, 4.0, 250.0, 125.0, 1500, 1.0).iter().sum::<f64>() * 4.0;
        assert!((exact - 2000.0).abs() < 10.0, "{exact}");
    }

    #[test]
    fn when_the_governor_is_needed() {
        let hard = cflag::SCHED_HARD;
        assert!(Bucket::of(&cfg(1, 4, 250, 125), hard).is_some());
        assert!(
            Bucket::of(&cfg(1, 4, 250, 125), 0).is_none(),
            "no sched_hard, no sched_prio"
        );
        let mut plain = cfg(1, 5, 0, 0);
        plain.tokens_max = None;
        plain.tokens_min = None;
        assert!(
            Bucket::of(&plain, hard).is_none(),
            "the static mapping says it all"
        );
        let mut small = plain.clone();
        small.tokens_max = Some(2);
        assert!(
            Bucket::of(&small, hard).is_none(),
            "a bucket within one burst"
        );
        assert!(Bucket::of(&plain, cflag::SCHED_PRIO).is_some());
        let mut off = cfg(1, 4, 250, 125);
        off.no_governor = true;
        assert!(Bucket::of(&off, hard).is_none());
        // Per-CPU buckets add up; defaults are VServer's.
        let mut two = plain.clone();
        two.per_cpu = vec!["sched/0".into(), "sched/1".into()];
        two.idle_time = true;
        two.fill_rate2 = Some(1);
        two.interval2 = Some(2);
        let b = Bucket::of(&two, hard).unwrap();
        assert_eq!((b.rate, b.idle_rate), (0.4, 1.0));
        assert_eq!((b.max, b.min), (2_000_000.0, 2.0 * 83.0 * 4_000.0));
    }

    #[test]
    fn vavavoom_spans_minus_5_to_plus_15() {
        let mut b =
            Bucket::of(&cfg(1, 4, 250, 125), cflag::SCHED_HARD | cflag::SCHED_PRIO).unwrap();
        assert_eq!(b.nice(), Some(-5));
        b.tokens = 0.0;
        assert_eq!(b.nice(), Some(15));
        b.tokens = b.max / 2.0;
        assert_eq!(b.nice(), Some(0));
        b.prio = Some(10);
        b.tokens = 0.0;
        assert_eq!(b.nice(), Some(19), "clamped");
        // A step that moves the bucket reports the new weight.
        let mut b =
            Bucket::of(&cfg(1, 4, 250, 125), cflag::SCHED_HARD | cflag::SCHED_PRIO).unwrap();
        let c = b.step(25_000.0, 500_000.0, 0.0, true);
        assert_eq!(c.nice, Some(0), "half full");
        // Without sched_hard the bucket bottoms out at empty, and comes
        // back from there.
        let mut soft = Bucket::of(&cfg(1, 4, 250, 125), cflag::SCHED_PRIO).unwrap();
        soft.step(25_000.0, 10_000_000.0, 0.0, false);
        assert_eq!(
            (soft.tokens, soft.hold, soft.nice()),
            (0.0, false, Some(15))
        );
        soft.step(2_000_000.0, 0.0, 0.0, false);
        assert_eq!(soft.tokens, 500_000.0);
        // Idle time refills.
        let mut i = cfg(1, 4, 250, 125);
        i.idle_time = true;
        i.fill_rate2 = Some(1);
        i.interval2 = Some(1);
        let mut b = Bucket::of(&i, cflag::SCHED_HARD).unwrap();
        b.tokens = 0.0;
        b.step(0.0, 0.0, 100_000.0, true);
        assert_eq!(b.tokens, 100_000.0);
    }
}
