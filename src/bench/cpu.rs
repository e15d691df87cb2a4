//! How busy the whole machine was during a run, from `/proc/stat`.
//!
//! The benchmark shares the machine with the server it measures. On two
//! cores, tail latency follows how much of the CPUs everything together
//! (server, benchmark, kernel) uses, so the latency scenarios print this
//! beside their percentiles: a reader can then tell a slower server from a
//! busier machine. Linux only; elsewhere the figure is left out.

#[derive(Clone, Copy, Debug, PartialEq)]
struct Ticks {
    busy: u64,
    total: u64,
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq
/// steal. Idle, iowait and steal (time the hypervisor gave to someone else)
/// are not ours; the rest is.
fn parse(stat: &str) -> Option<Ticks> {
    let fields = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = fields.split_whitespace().take(8).map(str::parse).collect::<Result<_, _>>().ok()?;
    if v.len() < 8 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some(Ticks { busy: total - v[3] - v[4] - v[7], total })
}

fn now() -> Option<Ticks> {
    parse(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Started before a run, read after it.
pub struct CpuMeter(Option<Ticks>);

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter(now())
    }

    /// Share of all CPUs busy since [`CpuMeter::start`], 0 to 1.
    pub fn busy(&self) -> Option<f64> {
        fraction(self.0?, now()?)
    }
}

fn fraction(from: Ticks, to: Ticks) -> Option<f64> {
    let total = to.total.checked_sub(from.total).filter(|t| *t > 0)?;
    Some(to.busy.saturating_sub(from.busy) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_idle_iowait_and_steal_as_not_busy() {
        let stat = "cpu  100 5 50 800 30 0 15 20 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse(stat), Some(Ticks { busy: 170, total: 1020 }));
        let later = Ticks { busy: 170 + 45, total: 1020 + 100 };
        assert_eq!(fraction(parse(stat).unwrap(), later), Some(0.45));
    }

    #[test]
    fn rejects_what_is_not_a_cpu_line() {
        assert_eq!(parse("intr 1 2 3\n"), None);
        assert_eq!(parse("cpu  1 2 3\n"), None);
        assert_eq!(parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(fraction(Ticks { busy: 1, total: 10 }, Ticks { busy: 1, total: 10 }), None);
    }
}
