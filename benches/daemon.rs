//! Benchmark of the daemon on the 10,000-item corpus: the time from writing a file to the
//! updated feeds on disk, the work per change (as the daemon logs it), the CPU cost of one
//! idle poll, and resident memory. `cargo bench --bench daemon`.

mod corpus;

use std::io::BufRead;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU time of every thread of a process, in nanoseconds (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The next log line containing `needle` (lines before it are skipped).
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let l = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if l.contains(needle) {
            return l;
        }
    }
}

/// The number of the field `name=` of a log line.
fn log_field(line: &str, name: &str) -> Option<f64> {
    line.split(&format!(" {name}="))
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let dir = corpus::herold_corpus();
    let rss = dir.join("feeds/rss.xml");
    // `HEROLD_BIN` measures another build (an older commit, say) on the same corpus.
    let bin = std::env::var("HEROLD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herold").into());
    let mut child = Command::new(bin)
        .args(["--config", dir.join("config.toml").to_str().unwrap(), "run"])
        .env("HEROLD_SERVER_LISTEN", "127.0.0.1:0")
        .env("HEROLD_CONTENT_POLL_INTERVAL", "200ms")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon starts");
        if line.contains("listening on") {
            break;
        }
    }
    println!(
        "start (scan {} files, first build, listen): {:?}",
        corpus::items(),
        started.elapsed()
    );

    // Idle: polls that find nothing changed.
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_ticks(pid);
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let ticks = cpu_ticks(pid) - before;
    let polls = idle.as_millis() as f64 / 200.0;
    println!(
        "idle: {ticks} CPU ticks (10 ms each) in {} s with a poll every 200 ms: {:.2} ms CPU per poll",
        idle.as_secs(),
        ticks as f64 * 10.0 / polls
    );

    // Changes: a new item, the newest, so the site feed changes.
    let mut latencies = Vec::new();
    let mut work = Vec::new();
    let mut cpu = Vec::new();
    let mut decide = Vec::new();
    let (mut pages_latency, mut pages_cpu, mut pages_work, mut pages_rendered, mut pages_plan) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while rx.try_recv().is_ok() {}
    for k in 0..30 {
        let title = format!("Benchmark-Meldung {k}");
        let file = dir.join(format!("content/zz-bench-{k}.md"));
        let text = format!(
            "+++\ntitle = \"{title}\"\ndate = 2026-11-21T10:{k:02}:00+01:00\ntags = [\"OZG\"]\n+++\nText {k}.\n"
        );
        let c0 = cpu_ns(pid);
        let t0 = Instant::now();
        std::fs::write(&file, text).unwrap();
        loop {
            if std::fs::read_to_string(&rss).is_ok_and(|s| s.contains(&title)) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the feed did not change"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        let line = wait_line(&rx, "feeds updated");
        work.push(log_field(&line, "ms").expect("ms= in the log line"));
        let field = |name| log_field(&line, name).unwrap_or(f64::NAN);
        decide.push(field("refresh_ms") + field("plan_ms"));
        // The CPU the daemon spent on this change (it is idle otherwise: polls are 200 ms
        // apart and cost well under a millisecond).
        cpu.push((cpu_ns(pid) - c0) as f64 / 1e6);
        // Then the pages: the item's page, the index, the tag page, the sitemap.
        let line = wait_line(&rx, "pages updated");
        pages_latency.push(t0.elapsed().as_secs_f64() * 1000.0);
        pages_cpu.push((cpu_ns(pid) - c0) as f64 / 1e6);
        let field = |name| log_field(&line, name).unwrap_or(f64::NAN);
        pages_work.push(field("ms"));
        pages_rendered.push(field("rendered"));
        pages_plan.push(field("plan_ms"));
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "file write -> feeds on disk: median {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} changes)",
        percentile(latencies.clone(), 0.5),
        percentile(latencies.clone(), 0.95),
        percentile(latencies, 1.0),
        work.len()
    );
    println!(
        "work per change (refresh + plan + render + write, as logged): median {:.0} ms, p95 {:.0} ms",
        percentile(work.clone(), 0.5),
        percentile(work, 0.95)
    );
    println!(
        "deciding a change (refresh the file, corpus, plan, fingerprints; as logged): median {:.1} ms, p95 {:.1} ms",
        percentile(decide.clone(), 0.5),
        percentile(decide, 0.95)
    );
    println!(
        "CPU per change (all threads, from the write to the log line): median {:.1} ms, p95 {:.1} ms",
        percentile(cpu.clone(), 0.5),
        percentile(cpu, 0.95)
    );
    println!(
        "pages: rendered per change median {:.0}; planning median {:.1} ms; work as logged median {:.1} ms, p95 {:.1} ms",
        percentile(pages_rendered, 0.5),
        percentile(pages_plan, 0.5),
        percentile(pages_work.clone(), 0.5),
        percentile(pages_work, 0.95)
    );
    println!(
        "file write -> pages on disk: median {:.1} ms, p95 {:.1} ms",
        percentile(pages_latency.clone(), 0.5),
        percentile(pages_latency, 0.95)
    );
    println!(
        "CPU per change including the pages: median {:.1} ms, p95 {:.1} ms",
        percentile(pages_cpu.clone(), 0.5),
        percentile(pages_cpu, 0.95)
    );
    println!(
        "resident memory: {} MB now, {} MB peak",
        status_kb(pid, "VmRSS:") / 1024,
        status_kb(pid, "VmHWM:") / 1024
    );

    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    println!("SIGTERM: exit {:?}", status.code());
    for k in 0..30 {
        let _ = std::fs::remove_file(dir.join(format!("content/zz-bench-{k}.md")));
    }
}
