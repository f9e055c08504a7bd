//! What `/proc` says about a process: resident memory and CPU time.

use anyhow::{Context, bail};

/// Which process to read: the gateway (by pid) or this load generator.
#[derive(Debug, Clone, Copy)]
pub enum Proc {
    Pid(u32),
    Myself,
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Self::Pid(pid) => format!("/proc/{pid}/{file}"),
            Self::Myself => format!("/proc/self/{file}"),
        }
    }

    /// Resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(self) -> anyhow::Result<u64> {
        let path = self.path("status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) else {
            bail!("no VmRSS line in {path}");
        };
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("unreadable VmRSS line in {path}: {line:?}"))
    }

    /// User plus system CPU time used so far, in seconds (clock-tick resolution, usually 10 ms).
    pub fn cpu_secs(self) -> anyhow::Result<f64> {
        let path = self.path("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The command name is in parentheses and may contain spaces: count fields after it.
        // There, field 3 of proc(5) (`state`) is index 0, so utime (14) and stime (15) are 11, 12.
        let after_comm = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .with_context(|| format!("unreadable {path}"))?;
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let ticks = |index: usize| -> anyhow::Result<u64> {
            fields
                .get(index)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("unreadable field {} of {path}", index + 3))
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(total as f64 / rustix::param::clock_ticks_per_second() as f64)
    }
}

/// CPU seconds used by a process between two points of a run.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    proc: Proc,
    start: f64,
}

impl CpuMeter {
    pub fn start(proc: Proc) -> anyhow::Result<Self> {
        Ok(Self {
            proc,
            start: proc.cpu_secs()?,
        })
    }

    pub fn used(&self) -> anyhow::Result<f64> {
        Ok(self.proc.cpu_secs()? - self.start)
    }
}

/// CPU seconds used by a group of processes (the nodes of a cluster, or their backends), summed.
#[derive(Debug, Clone)]
pub struct GroupCpuMeter {
    procs: Vec<CpuMeter>,
    /// Children found at the start; one that exits before the end (a PostgreSQL worker) counts
    /// for nothing rather than failing the run.
    children: Vec<CpuMeter>,
}

impl GroupCpuMeter {
    /// `None` for an empty group: nothing to measure.
    pub fn start(procs: &[Proc]) -> anyhow::Result<Option<Self>> {
        Self::start_with(procs, Vec::new())
    }

    /// The group and its processes' children as they are now (see [`children`]).
    pub fn start_tree(procs: &[Proc]) -> anyhow::Result<Option<Self>> {
        Self::start_with(procs, children(procs))
    }

    fn start_with(procs: &[Proc], children: Vec<Proc>) -> anyhow::Result<Option<Self>> {
        if procs.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            procs: procs
                .iter()
                .map(|&proc| CpuMeter::start(proc))
                .collect::<anyhow::Result<_>>()?,
            children: children
                .into_iter()
                .filter_map(|child| CpuMeter::start(child).ok())
                .collect(),
        }))
    }

    pub fn used(&self) -> anyhow::Result<f64> {
        let procs: f64 = self
            .procs
            .iter()
            .map(CpuMeter::used)
            .sum::<anyhow::Result<f64>>()?;
        let children: f64 = self.children.iter().filter_map(|c| c.used().ok()).sum();
        Ok(procs + children)
    }
}

/// The children of `procs`, as they are now: a backend such as PostgreSQL runs a process per
/// connection under its postmaster, all of them its CPU.
fn children(procs: &[Proc]) -> Vec<Proc> {
    let parents: Vec<u32> = procs
        .iter()
        .filter_map(|p| match p {
            Proc::Pid(pid) => Some(*pid),
            Proc::Myself => None,
        })
        .collect();
    let mut children = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so read after the
        // last ')'.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid.is_some_and(|ppid| parents.contains(&ppid)) {
            children.push(Proc::Pid(pid));
        }
    }
    children
}

/// The resident memory of a group of processes, summed; `None` for an empty group.
pub fn total_rss_kib(procs: &[Proc]) -> anyhow::Result<Option<u64>> {
    if procs.is_empty() {
        return Ok(None);
    }
    procs
        .iter()
        .map(|&proc| proc.rss_kib())
        .sum::<anyhow::Result<u64>>()
        .map(Some)
}

/// Time one CPU spent, in clock ticks, from a `cpuN` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTicks {
    /// Running processes: user, nice, system.
    tasks: u64,
    /// Interrupts and softirqs. A tick that lands in a softirq is counted here *and* charged to
    /// the process it interrupted (the gateway's CPU time includes the loopback receive path
    /// its sends trigger), so busy time is `tasks + irq`.
    irq: u64,
    /// Taken by the hypervisor for other guests.
    steal: u64,
    total: u64,
}

fn read_cpu_ticks() -> anyhow::Result<Vec<CpuTicks>> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut cpus = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        // Skip the aggregate `cpu ` line: only `cpuN` lines.
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        cpus.push(CpuTicks {
            tasks: field(0) + field(1) + field(2),
            irq: field(5) + field(6),
            steal: field(7),
            total: (0..8).map(field).sum(),
        });
    }
    Ok(cpus)
}

/// How busy every CPU of the machine was over part of a run: on a shared machine this tells a
/// clean run from one that competed with other work.
#[derive(Debug, Clone)]
pub struct MachineMeter {
    start: Vec<CpuTicks>,
}

/// One CPU's share of a measured window, each from 0 to 1.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CpuShare {
    pub tasks: f64,
    pub irq: f64,
    pub steal: f64,
}

impl MachineMeter {
    pub fn start() -> anyhow::Result<Self> {
        Ok(Self {
            start: read_cpu_ticks()?,
        })
    }

    /// Every CPU's shares since `start`, and the CPU seconds the machine was busy (tasks and
    /// interrupts) in that time.
    pub fn used(&self) -> anyhow::Result<(Vec<CpuShare>, f64)> {
        let end = read_cpu_ticks()?;
        let mut busy_ticks = 0;
        let shares = self
            .start
            .iter()
            .zip(&end)
            .map(|(a, b)| {
                let total = b.total.saturating_sub(a.total).max(1) as f64;
                let tasks = b.tasks.saturating_sub(a.tasks);
                let irq = b.irq.saturating_sub(a.irq);
                busy_ticks += tasks + irq;
                CpuShare {
                    tasks: tasks as f64 / total,
                    irq: irq as f64 / total,
                    steal: b.steal.saturating_sub(a.steal) as f64 / total,
                }
            })
            .collect();
        Ok((
            shares,
            busy_ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
        ))
    }
}

/// The kernel's counters of connects a listener dropped (`TcpExt` in `/proc/net/netstat`, what
/// `nstat -az TcpExtListenOverflows` prints). Machine-wide: every listener of the network
/// namespace counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenCounters {
    /// A SYN, or the ACK completing a handshake, arrived while the accept queue was full: the
    /// client's TCP stack tries again after a second, then three, then seven.
    pub overflows: u64,
    /// Everything a listener dropped, overflows included.
    pub drops: u64,
}

impl ListenCounters {
    pub fn read() -> anyhow::Result<Self> {
        let netstat =
            std::fs::read_to_string("/proc/net/netstat").context("reading /proc/net/netstat")?;
        Self::parse(&netstat).context("no ListenOverflows/ListenDrops in /proc/net/netstat")
    }

    /// The counters from the text of `/proc/net/netstat`: a line of `TcpExt:` names, then a
    /// line of `TcpExt:` values.
    fn parse(netstat: &str) -> Option<Self> {
        let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
        let names = lines.next()?.split_whitespace().skip(1);
        let values = lines.next()?.split_whitespace().skip(1);
        let mut counters = (None, None);
        for (name, value) in names.zip(values) {
            match name {
                "ListenOverflows" => counters.0 = value.parse().ok(),
                "ListenDrops" => counters.1 = value.parse().ok(),
                _ => {}
            }
        }
        Some(Self {
            overflows: counters.0?,
            drops: counters.1?,
        })
    }

    /// What was counted since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            overflows: self.overflows.saturating_sub(earlier.overflows),
            drops: self.drops.saturating_sub(earlier.drops),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ListenCounters;

    #[test]
    fn listen_counters_are_read_by_name() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
                       TcpExt: 0 17 21 99\n\
                       IpExt: InNoRoutes\n\
                       IpExt: 0\n";
        assert_eq!(
            ListenCounters::parse(netstat),
            Some(ListenCounters {
                overflows: 17,
                drops: 21
            })
        );
        assert_eq!(ListenCounters::parse("IpExt: InNoRoutes\nIpExt: 0\n"), None);
    }
}
