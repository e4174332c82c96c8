//! Benchmark of `herold subscribers import`: 100,000 CSV rows (German addresses with an
//! internationalised domain, topics, consent dates, a language), into a fresh SQLite
//! database. `cargo bench --bench import`; `HEROLD_BENCH_ROWS` changes the count.

use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let rows: usize = std::env::var("HEROLD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[site]\ntitle = \"FITKO – Aktuelles\"\nbase_url = \"https://www.fitko.de\"\nlanguages = [\"de\", \"en\"]\n\
         [[digest]]\nname = \"woechentlich\"\nschedule = \"0 8 * * 1\"\n",
    )
    .unwrap();
    let mut csv = String::from("email,topics,status,digests,consented_at,source,language\n");
    for i in 0..rows {
        let lang = if i % 5 == 0 { "en" } else { "de" };
        csv.push_str(&format!(
            "leserin.{i:06}@bürgeramt-{}.example,OZG;Registermodernisierung,active,woechentlich,2025-05-01,\"Altliste „Messe 2025“\",{lang}\n",
            i % 97
        ));
    }
    std::fs::write(dir.path().join("liste.csv"), csv).unwrap();
    let report = dir.path().join("time.txt");
    // `HEROLD_BIN` measures another build (an older commit, say) on the same rows.
    let bin = std::env::var("HEROLD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herold").into());
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M %U %S", "-o"])
        .arg(&report)
        .arg(&bin)
        .args(["-q", "subscribers", "import", "liste.csv"])
        .current_dir(dir.path())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success());
    let t = std::fs::read_to_string(&report).unwrap();
    let f: Vec<f64> = t
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    println!(
        "subscribers import: {rows} rows in {secs:.2} s ({:.0} rows/s), CPU {:.2} s, peak {} MB",
        rows as f64 / secs,
        f[1] + f[2],
        f[0] as u64 / 1024
    );
}
