//! Where the CPUs went during a run, from `/proc`.
//!
//! The benchmark shares the machine with the server it measures. On two
//! cores, tail latency follows how much of the CPUs everything together
//! (server, benchmark, kernel) uses, so the latency scenarios print this
//! beside their percentiles: a reader can then tell a slower server from a
//! busier machine. And the CPU time each process spends per message, by
//! thread (the server's HTTP workers, its store writer), says what a ratio
//! to the loopback limit is made of. Linux only; elsewhere the figures are
//! left out.

use std::collections::BTreeMap;

use serde::Serialize;

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

/// How busy the whole machine is: started before a run, read after it.
pub struct MachineMeter(Option<Ticks>);

impl MachineMeter {
    pub fn start() -> MachineMeter {
        MachineMeter(now())
    }

    /// Share of all CPUs busy since [`MachineMeter::start`], 0 to 1.
    pub fn busy(&self) -> Option<f64> {
        fraction(self.0?, now()?)
    }
}

fn fraction(from: Ticks, to: Ticks) -> Option<f64> {
    let total = to.total.checked_sub(from.total).filter(|t| *t > 0)?;
    Some(to.busy.saturating_sub(from.busy) as f64 / total as f64)
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`,
/// part of Linux's user-space ABI: 100 on every architecture we build for).
const USER_HZ: f64 = 100.0;

/// CPU ticks (user + system) of one process and of each of its threads.
#[derive(Clone, Debug, Default, PartialEq)]
struct ProcTicks {
    /// The whole process, threads that have already exited included: read
    /// before the threads and again after them, so that an interval from
    /// one reading to the next (`total` → `total_after`) covers every
    /// thread's share, however busy the process is meanwhile.
    total: u64,
    total_after: u64,
    /// By thread id: the thread's name and its ticks.
    threads: BTreeMap<u32, (String, u64)>,
}

/// A `stat` file's name (between the parentheses; it may hold spaces and
/// parentheses itself) and utime + stime (fields 14 and 15).
fn name_and_ticks(stat: &str) -> Option<(String, u64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((name, ticks(11)? + ticks(12)?))
}

fn proc_ticks(pid: &str) -> Option<ProcTicks> {
    let (_, total) = name_and_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut threads = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
        // A thread may end between listing and reading: skip it.
        if let Some(t) =
            std::fs::read_to_string(task.path().join("stat")).ok().and_then(|s| name_and_ticks(&s))
        {
            threads.insert(tid, t);
        }
    }
    let (_, total_after) = name_and_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(ProcTicks { total, total_after, threads })
}

/// CPU time per message, in µs: the process, and its threads by name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerMessage {
    pub us: f64,
    /// Threads of the same name added up; "(exited)" is what threads that
    /// ended during the run spent.
    pub threads: BTreeMap<String, f64>,
}

impl PerMessage {
    /// `80 µs (sqlite-writer 26, tokio-rt-worker 52)`, largest first.
    pub fn brief(&self) -> String {
        let mut parts: Vec<(&String, &f64)> = self.threads.iter().filter(|(_, us)| **us >= 0.5).collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = parts.iter().map(|(name, us)| format!("{name} {us:.0}")).collect();
        format!("{:.0} µs ({})", self.us, parts.join(", "))
    }
}

fn per_message(from: &ProcTicks, to: &ProcTicks, messages: usize) -> Option<PerMessage> {
    if messages == 0 {
        return None;
    }
    let us = |ticks: u64| ticks as f64 / USER_HZ * 1e6 / messages as f64;
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in &to.threads {
        let before = from.threads.get(tid).map_or(0, |(_, t)| *t);
        *by_name.entry(name.clone()).or_default() += ticks.saturating_sub(before);
    }
    let total = to.total_after.checked_sub(from.total)?;
    let exited = total.saturating_sub(by_name.values().sum());
    if exited > 0 {
        by_name.insert("(exited)".into(), exited);
    }
    Some(PerMessage { us: us(total), threads: by_name.into_iter().map(|(n, t)| (n, us(t))).collect() })
}

/// Started before a run, read after it: CPU time of one process
/// (`/proc/<pid>`, `self` for this one) per message.
pub struct ProcessMeter {
    pid: String,
    start: Option<ProcTicks>,
}

impl ProcessMeter {
    pub fn start(pid: String) -> ProcessMeter {
        let start = proc_ticks(&pid);
        ProcessMeter { pid, start }
    }

    pub fn per_message(&self, messages: usize) -> Option<PerMessage> {
        per_message(self.start.as_ref()?, &proc_ticks(&self.pid)?, messages)
    }
}

/// CPU time per message of the server (when its process is known, i.e.
/// the benchmark started it) and of the benchmark itself (load generator
/// and receivers).
#[derive(Serialize)]
pub struct CpuUse {
    pub server: Option<PerMessage>,
    pub bench: Option<PerMessage>,
    /// The PostgreSQL cluster's processes, µs per message (when the server
    /// is on a PostgreSQL running on this machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<f64>,
}

impl CpuUse {
    pub fn brief(&self) -> String {
        let server = self
            .server
            .as_ref()
            .map_or_else(|| "not known (not started by the benchmark)".into(), PerMessage::brief);
        let bench = self.bench.as_ref().map_or_else(|| "not known".into(), |b| format!("{:.0} µs", b.us));
        match self.database {
            Some(db) => format!("server {server}; database {db:.0} µs; benchmark {bench}"),
            None => format!("server {server}; benchmark {bench}"),
        }
    }
}

/// Measures a [`CpuUse`]: started before a run, read after it.
pub struct CpuUseMeter {
    server: Option<ProcessMeter>,
    bench: ProcessMeter,
    database: Option<DatabaseMeter>,
}

impl CpuUseMeter {
    pub fn start(server_pid: Option<u32>) -> CpuUseMeter {
        let server = server_pid.map(|pid| ProcessMeter::start(pid.to_string()));
        CpuUseMeter { server, bench: ProcessMeter::start("self".into()), database: None }
    }

    /// Also the PostgreSQL cluster under this postmaster.
    pub fn with_database(mut self, postmaster: Option<u32>) -> CpuUseMeter {
        self.database = postmaster.map(DatabaseMeter::start);
        self
    }

    pub fn per_message(&self, messages: usize) -> CpuUse {
        CpuUse {
            server: self.server.as_ref().and_then(|m| m.per_message(messages)),
            bench: self.bench.per_message(messages),
            database: self.database.as_ref().and_then(|m| m.per_message(messages)),
        }
    }
}

/// CPU ticks of a PostgreSQL cluster: its postmaster and every process it
/// started (backends, WAL writer, checkpointer, autovacuum), with what
/// children that already exited spent (their parent's cutime + cstime).
///
/// The reads are not one instant, and on a busy cluster (other clients'
/// backends coming and going) a child may end between them: read before
/// the children, the postmaster may miss what a child read as gone spent;
/// read after, it may count again what a child read alive spent. So it is
/// read both times: `low` (children + the postmaster before) can only
/// miss, `high` (children + the postmaster after) can only count twice. A
/// meter starts from `low` and ends at `high`, so churn can overstate a
/// run's CPU but never make it negative. On a cluster nothing else uses
/// the two agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClusterTicks {
    low: u64,
    high: u64,
}

fn cluster_ticks(postmaster: u32) -> Option<ClusterTicks> {
    let own_and_reaped = |stat: &str| -> Option<(u64, u64)> {
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        Some((ticks(11) + ticks(12), ticks(13) + ticks(14)))
    };
    let postmaster_stat = || std::fs::read_to_string(format!("/proc/{postmaster}/stat")).ok();
    let (own_before, reaped_before) = own_and_reaped(&postmaster_stat()?)?;
    let mut children = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        // A process may end between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, ppid)) = super::database::comm_and_ppid(&stat) else { continue };
        if pid != postmaster && ppid == postmaster {
            children += own_and_reaped(&stat)?.0;
        }
    }
    let (own_after, reaped_after) = own_and_reaped(&postmaster_stat()?)?;
    Some(ClusterTicks {
        low: children + own_before + reaped_before,
        high: children + own_after + reaped_after,
    })
}

/// The database's CPU time, started before a run and read after it.
pub struct DatabaseMeter {
    postmaster: u32,
    start: Option<u64>,
}

impl DatabaseMeter {
    pub fn start(postmaster: u32) -> DatabaseMeter {
        DatabaseMeter { postmaster, start: cluster_ticks(postmaster).map(|t| t.low) }
    }

    /// µs of the database's CPU per message since the start.
    pub fn per_message(&self, messages: usize) -> Option<f64> {
        let ticks = cluster_ticks(self.postmaster)?.high.checked_sub(self.start?)?;
        (messages > 0).then(|| ticks as f64 / USER_HZ * 1e6 / messages as f64)
    }
}

/// The figures that cap a cluster: messages per second one database core
/// sustains, from its CPU per message.
pub fn per_core(us_per_message: f64) -> Option<f64> {
    (us_per_message > 0.0).then(|| 1e6 / us_per_message)
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

    #[test]
    fn reads_name_and_cpu_ticks_of_a_stat_line() {
        // Fields after the name: state ppid pgrp session tty tpgid flags
        // minflt cminflt majflt cmajflt utime stime ...
        let stat = "4242 (sqlite (w) x) S 1 2 3 0 -1 4194368 10 0 0 0 250 130 0 0 20 0 1 0";
        assert_eq!(name_and_ticks(stat), Some(("sqlite (w) x".into(), 380)));
        assert_eq!(name_and_ticks("4242 (short) S 1 2"), None);
        assert_eq!(name_and_ticks("no parentheses"), None);
    }

    #[test]
    fn cpu_per_message_by_thread_name_with_what_exited_threads_spent() {
        let ticks = |total, threads: &[(u32, &str, u64)]| ProcTicks {
            total,
            total_after: total,
            threads: threads.iter().map(|(tid, n, t)| (*tid, (n.to_string(), *t))).collect(),
        };
        let from = ticks(100, &[(1, "worker", 40), (2, "worker", 30), (3, "writer", 20), (4, "gone", 10)]);
        // 1,000 messages; 1 tick = 10 ms, so 1 tick per 1,000 messages = 10 µs each.
        let to = ticks(160, &[(1, "worker", 60), (2, "worker", 50), (3, "writer", 30), (5, "new", 5)]);
        let got = per_message(&from, &to, 1000).unwrap();
        assert_eq!(got.us, 600.0);
        let want: BTreeMap<String, f64> =
            [("worker", 400.0), ("writer", 100.0), ("new", 50.0), ("(exited)", 50.0)]
                .into_iter()
                .map(|(n, us)| (n.to_owned(), us))
                .collect();
        assert_eq!(got.threads, want);
        assert_eq!(got.brief(), "600 µs (worker 400, writer 100, (exited) 50, new 50)");
        assert_eq!(per_message(&from, &to, 0), None);
    }

    #[test]
    fn a_cluster_is_its_postmaster_and_the_processes_it_started() {
        // This test process stands in for a postmaster: its own ticks and
        // its exited children's at least, and a process that does not
        // exist is no cluster.
        let me = std::process::id();
        let own = proc_ticks("self").unwrap().total;
        assert!(cluster_ticks(me).is_some_and(|t| t.low >= own && t.high >= t.low));
        assert_eq!(cluster_ticks(u32::MAX), None);
        assert_eq!(DatabaseMeter::start(u32::MAX).per_message(10), None);
        assert_eq!(per_core(250.0), Some(4000.0));
        assert_eq!(per_core(0.0), None);
    }

    #[test]
    fn measures_this_process() {
        let meter = ProcessMeter::start("self".into());
        // Spin until the meter sees 20 ms of CPU (two ticks); on a loaded
        // machine that may take longer than 20 ms of wall time, so allow
        // plenty.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let got = meter.per_message(1).expect("linux /proc");
            // The kernel scales each thread's and the process's utime/stime
            // from their runtimes separately, so the threads may add up to a
            // tick each more than the process (seen with the other tests'
            // threads coming and going).
            let tick_us = 1e6 / USER_HZ;
            let slack = tick_us * got.threads.len() as f64;
            assert!(got.threads.values().sum::<f64>() <= got.us + slack, "{got:?}");
            if got.us >= 20_000.0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "20 s of spinning, CPU seen: {got:?}");
        }
    }
}
