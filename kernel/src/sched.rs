//! VServer's token-bucket scheduler (docs/VSERVER.md §10.7) mapped to CFS
//! bandwidth (docs/SEMANTICS.md, "The context core").
//!
//! A bucket that gains R tokens every T ticks and loses one per tick a
//! task of the context runs lets the context use R/T of a CPU in the long
//! run. CFS bandwidth gives a cgroup `quota` µs of CPU per `period` µs:
//! period = T ticks (1 ms..1 s, else 100 ms), quota = period·R/T, summed
//! over the CPUs that have their own bucket (`sched/<x>/` directories;
//! without them the context has one bucket). The bucket's size beyond one
//! period becomes CFS burst, which the kernel caps at the quota. The
//! priority bias becomes the cgroup's weight (as a nice value). The hard
//! limit needs the `sched_hard` flag, as in VServer; `sched_pause` freezes
//! the context. What CFS cannot express (the hold until `tokens-min`, the
//! idle-time second rate, the dynamic priority of `sched_prio`) is kept
//! by the supervisor's governor (`crate::governor`), or, with
//! `sched/nogovernor`, reported, one warning per setting.

use crate::cgroup::CpuSettings;
use crate::config::SchedConfig;
use crate::names::cflag;

/// Ticks per second for intervals given in ticks (the 2.6 kernels' HZ).
pub const HZ: u64 = 250;

/// What to write, and what could not be expressed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedPlan {
    /// CPU bandwidth and weight.
    pub cpu: CpuSettings,
    /// Freeze the context (`sched_pause`).
    pub freeze: bool,
    /// One line per setting that mainline cannot express.
    pub warnings: Vec<String>,
}

/// Maps the settings `s` of a context with flags `cflags` on a host with
/// `ncpus` CPUs.
pub fn plan(s: &SchedConfig, cflags: u64, ncpus: u64) -> SchedPlan {
    let mut p = SchedPlan {
        freeze: cflags & cflag::SCHED_PAUSE != 0,
        ..SchedPlan::default()
    };
    let tick_us = 1_000_000 / HZ;
    if let Some(b) = s.prio_bias {
        p.cpu.nice = Some(b.clamp(-20, 19));
    }
    let rate = match (s.fill_rate, s.interval) {
        (Some(r), Some(t)) if t > 0 => Some((u64::from(r), u64::from(t))),
        (Some(r), None) => Some((u64::from(r), HZ)),
        (None, Some(t)) if t > 0 => Some((1, u64::from(t))),
        _ => None,
    };
    if let Some((r, t)) = rate {
        if cflags & cflag::SCHED_HARD == 0 {
            p.warnings.push(
                "sched/fill-rate, interval: without the sched_hard flag VServer only biased \
                 the priority; add sched_hard to flags for a CPU limit"
                    .into(),
            );
        } else {
            let buckets = (s.per_cpu.len() as u64).max(1);
            let t_us = t * tick_us;
            let period = if (1_000..=1_000_000).contains(&t_us) {
                t_us
            } else {
                100_000
            };
            // quota = period · r/t · buckets, rounded, at least 1 ms.
            let quota = ((period * r * buckets + t / 2) / t).max(1_000);
            if quota >= period * ncpus.max(1) {
                p.cpu.bandwidth = Some((None, period));
            } else {
                p.cpu.bandwidth = Some((Some(quota), period));
                if let Some(max) = s.tokens_max {
                    let bucket = u64::from(max) * tick_us * buckets;
                    let burst = bucket.saturating_sub(quota).min(quota);
                    if burst > 0 {
                        p.cpu.burst = Some(burst);
                    }
                    if bucket.saturating_sub(quota) > quota {
                        p.warnings.push(format!(
                            "sched/tokens-max: a bucket of {} ms is more than one period's \
                             burst (CFS banks at most the quota, {} ms)",
                            bucket / 1000,
                            quota / 1000
                        ));
                    }
                }
            }
        }
    }
    // The governor (crate::governor) keeps what follows.
    let governed = crate::governor::Bucket::of(s, cflags).is_some();
    if governed {
        p.warnings.retain(|w| !w.starts_with("sched/tokens-max"));
        p.cpu.burst = None;
        if !s.per_cpu.is_empty() {
            p.warnings.push(format!(
                "{}: per-CPU buckets are summed into one bucket for the context",
                s.per_cpu.join(", ")
            ));
        }
        return p;
    }
    if s.tokens_min.is_some() {
        p.warnings.push(
            "sched/tokens-min: not representable on mainline (CFS has no hold until the \
             bucket refills)"
                .into(),
        );
    }
    if s.fill_rate2.is_some() || s.interval2.is_some() || s.idle_time {
        p.warnings.push(
            "sched/fill-rate2, interval2, idle-time: not representable on mainline (no \
             idle-time rate in CFS)"
                .into(),
        );
    }
    if cflags & cflag::SCHED_PRIO != 0 {
        p.warnings.push(
            "flag sched_prio: not representable on mainline (the priority does not follow the \
             bucket; priority-bias sets a fixed weight)"
                .into(),
        );
    }
    if !s.per_cpu.is_empty() {
        p.warnings.push(format!(
            "{}: per-CPU buckets are summed into one bandwidth for the context",
            s.per_cpu.join(", ")
        ));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(r: u32, t: u32) -> SchedConfig {
        SchedConfig {
            fill_rate: Some(r),
            interval: Some(t),
            ..SchedConfig::default()
        }
    }

    /// (fill-rate, interval, tokens-max, per-CPU buckets, CPUs) ->
    /// (quota, period, burst).
    type Row = (
        u32,
        u32,
        Option<u32>,
        usize,
        u64,
        Option<u64>,
        u64,
        Option<u64>,
    );

    #[test]
    fn the_mapping_table() {
        let hard = cflag::SCHED_HARD;
        let table: &[Row] = &[
            // 1/5 of a CPU, interval 5 ticks = 20 ms: 4 ms per 20 ms.
            (1, 5, None, 0, 2, Some(4_000), 20_000, None),
            // 7/32 (the wiki's example): 32 ticks = 128 ms, 28 ms.
            (7, 32, None, 0, 2, Some(28_000), 128_000, None),
            // Interval past 1 s: period 100 ms, same share.
            (1, 1000, None, 0, 4, Some(1_000), 100_000, None),
            // A share of 1: no limit needed on one CPU.
            (5, 5, None, 0, 1, None, 20_000, None),
            // ... but a limit on two CPUs.
            (5, 5, None, 0, 2, Some(20_000), 20_000, None),
            // Two per-CPU buckets of 1/4 each: half a CPU.
            (1, 4, None, 2, 4, Some(8_000), 16_000, None),
            // A bucket of 100 ticks (400 ms) bursts at most one quota.
            (1, 5, Some(100), 0, 2, Some(4_000), 20_000, Some(4_000)),
            // A bucket of 2 ticks: 8 ms - 4 ms = 4 ms burst.
            (1, 5, Some(2), 0, 2, Some(4_000), 20_000, Some(4_000)),
            (1, 5, Some(1), 0, 2, Some(4_000), 20_000, None),
        ];
        for &(r, t, max, buckets, cpus, quota, period, burst) in table {
            let mut s = sched(r, t);
            s.tokens_max = max;
            s.per_cpu = (0..buckets).map(|i| format!("sched/{i}")).collect();
            // The static mapping (a bucket beyond a burst is otherwise the
            // governor's, below).
            s.no_governor = true;
            let p = plan(&s, hard, cpus);
            assert_eq!(
                p.cpu.bandwidth,
                Some((quota, period)),
                "{r}/{t} max {max:?}"
            );
            assert_eq!(p.cpu.burst, burst, "{r}/{t} max {max:?}");
        }
        // Governed: the same quota until the governor takes over, no burst.
        let mut s = sched(1, 5);
        s.tokens_max = Some(100);
        let p = plan(&s, hard, 2);
        assert_eq!(p.cpu.bandwidth, Some((Some(4_000), 20_000)));
        assert_eq!(p.cpu.burst, None);
    }

    #[test]
    fn flags_bias_and_warnings() {
        let p = plan(&sched(1, 5), 0, 2);
        assert_eq!(p.cpu.bandwidth, None, "no sched_hard, no limit");
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("sched_hard"));
        let s = SchedConfig {
            prio_bias: Some(-25),
            tokens_min: Some(10),
            idle_time: true,
            ..SchedConfig::default()
        };
        let p = plan(&s, cflag::SCHED_PRIO | cflag::SCHED_PAUSE, 2);
        assert_eq!(p.cpu.nice, Some(-20));
        assert!(p.freeze);
        assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
        assert!(plan(&SchedConfig::default(), 0, 2).warnings.is_empty());
        let mut big = sched(1, 5);
        big.tokens_max = Some(1000);
        // The governor keeps a big bucket; without it, it is reported.
        assert!(plan(&big, cflag::SCHED_HARD, 2).warnings.is_empty());
        big.no_governor = true;
        assert!(plan(&big, cflag::SCHED_HARD, 2).warnings[0].starts_with("sched/tokens-max"));
    }
}
