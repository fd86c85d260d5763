//! `process_*` metrics (CPU seconds, memory, file descriptors, start time), read from `/proc`.
//!
//! Standard Prometheus exporters (Gubernator's Go client among them) export these, and generic
//! dashboards and alerts expect them. The prometheus crate's `process` feature would bring
//! `procfs` and its dependencies for six numbers, so they are read here: the parsing is pure and
//! unit-tested, and the reading is a few file reads per scrape. On systems without `/proc` the
//! families are simply absent.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};

/// Clock ticks per second of `/proc`'s CPU and start times (`USER_HZ`, fixed at 100 by Linux's
/// user-space ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The numbers the metrics report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit on open file descriptors, when known.
    pub max_fds: Option<f64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The fields of `/proc/self/stat` the metrics use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatFields {
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
    /// `starttime`, in clock ticks after boot.
    pub start_ticks: u64,
    /// `vsize`, in bytes.
    pub virtual_bytes: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let (_, after) = text.rsplit_once(')')?;
    // `after` starts at field 3 (state).
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    Some(StatFields {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub fn parse_resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `btime` of `/proc/stat`: the boot time in seconds since the Unix epoch.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits` (`None` when unlimited).
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads this process's numbers from `/proc`; `None` where `/proc` is missing or unreadable.
pub fn read() -> Option<ProcessStats> {
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let resident = parse_resident_bytes(&std::fs::read_to_string("/proc/self/status").ok()?)?;
    let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| parse_max_fds(&limits));
    Some(ProcessStats {
        cpu_seconds: stat.cpu_ticks as f64 / TICKS_PER_SECOND,
        virtual_bytes: stat.virtual_bytes as f64,
        resident_bytes: resident as f64,
        open_fds: open_fds as f64,
        max_fds: max_fds.map(|max| max as f64),
        start_time_seconds: boot as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND,
    })
}

/// The metric names, their help and whether each is a counter.
const FAMILIES: [(&str, &str, bool); 6] = [
    (
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        true,
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        false,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        false,
    ),
    (
        "process_open_fds",
        "Number of open file descriptors.",
        false,
    ),
    (
        "process_max_fds",
        "Maximum number of open file descriptors.",
        false,
    ),
    (
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        false,
    ),
];

/// The `process_*` metrics, read at every scrape.
#[derive(Clone)]
pub struct ProcessCollector {
    descs: Vec<Desc>,
}

impl ProcessCollector {
    /// The collector for this process.
    pub fn new() -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, _)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    Vec::new(),
                    Default::default(),
                )
                .ok()
            })
            .collect();
        Self { descs }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// The families for `stats`, in `FAMILIES` order (`process_max_fds` only when known).
pub fn families(stats: &ProcessStats) -> Vec<MetricFamily> {
    let values = [
        Some(stats.cpu_seconds),
        Some(stats.virtual_bytes),
        Some(stats.resident_bytes),
        Some(stats.open_fds),
        stats.max_fds,
        Some(stats.start_time_seconds),
    ];
    FAMILIES
        .iter()
        .zip(values)
        .filter_map(|((name, help, counter), value)| {
            let value = value?;
            let mut metric = Metric::default();
            let mut family = MetricFamily::default();
            if *counter {
                let mut sample = Counter::default();
                sample.set_value(value);
                metric.set_counter(sample);
                family.set_field_type(MetricType::COUNTER);
            } else {
                let mut sample = Gauge::default();
                sample.set_value(value);
                metric.set_gauge(sample);
                family.set_field_type(MetricType::GAUGE);
            }
            family.set_name(name.to_string());
            family.set_help(help.to_string());
            family.set_metric(vec![metric]);
            Some(family)
        })
        .collect()
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        read().map(|stats| families(&stats)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (ring (limit) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                        250 50 0 0 20 0 9 0 123456 104857600 2560 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let fields = parse_stat(STAT).unwrap();
        assert_eq!(fields.cpu_ticks, 300);
        assert_eq!(fields.start_ticks, 123_456);
        assert_eq!(fields.virtual_bytes, 104_857_600);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        assert_eq!(
            parse_resident_bytes("Name:\tx\nVmRSS:\t   2048 kB\nThreads: 3\n"),
            Some(2048 * 1024)
        );
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn this_process_is_read_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let stats = read().expect("/proc is readable");
        assert!(stats.resident_bytes > 0.0);
        assert!(stats.open_fds >= 3.0);
        assert!(stats.start_time_seconds > 1_600_000_000.0);
        let names: Vec<String> = families(&stats)
            .iter()
            .map(|family| family.name().to_string())
            .collect();
        assert!(names.contains(&"process_cpu_seconds_total".to_string()));
    }
}
