//! Statistics and the markdown the benchmark prints (ready to paste into an issue note).
//! MB = 10^6 bytes throughout.

use std::path::Path;
use std::process::Command;

use super::images::BenchImage;
use super::pulls::ImageResult;
use super::runtime::Phases;

/// The median of `xs` (mean of the middle two for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// The `p`th percentile of `xs` by linear interpolation between closest ranks; NaN when empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Smallest and largest of `xs`.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Bytes as MB with one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The machine and the versions under test, as a markdown list.
pub fn machine(workdir: &Path, imaged: &Path, containerd: &Path) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let sha = if flags.split_whitespace().any(|f| f == "sha_ni") {
        "SHA-NI"
    } else {
        "no SHA-NI"
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = mem
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let fs = run(&["stat", "-f", "-c", "%T", &workdir.display().to_string()]);
    format!(
        "- machine: nproc {cores}, {model} ({sha}), {:.1} GiB RAM, kernel {}\n\
         - load average at start: {}\n\
         - work dir: {} ({fs})\n\
         - imaged: {} ({})\n\
         - containerd: {}\n\
         - registry: {}\n",
        mem as f64 / (1 << 20) as f64,
        kernel.trim(),
        loadavg(),
        workdir.display(),
        run(&[&imaged.display().to_string(), "--version"]),
        imaged.display(),
        run(&[&containerd.display().to_string(), "--version"]),
        run(&["docker-registry", "--version"]),
    )
}

/// `/proc/loadavg`: other work on the machine biases every figure (compare the ratios, not the times).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn run(argv: &[&str]) -> String {
    match Command::new(argv[0]).args(&argv[1..]).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Err(e) => format!("({} failed: {e})", argv[0]),
    }
}

/// The table of benchmark images.
pub fn images(images: &[BenchImage]) -> String {
    let mut s = String::from(
        "| image | timed pull | layers | compressed MB | uncompressed MB | ratio | files |\n|---|---|---|---|---|---|---|\n",
    );
    for img in images {
        let pull = match &img.prereq {
            Some(p) => format!("`{}` with `{}` present", img.target.repo, p.repo),
            None => format!("`{}`", img.target.repo),
        };
        s += &format!(
            "| {} | {pull} | {} of {} | {} | {} | {:.2} | {} |\n",
            img.name,
            img.work.len(),
            img.target.image.layers.len(),
            mb(img.compressed()),
            mb(img.uncompressed()),
            img.uncompressed() as f64 / img.compressed() as f64,
            img.files()
        );
    }
    s
}

/// Per image: a table with a row per daemon, then the raw times.
pub fn pulls(results: &[ImageResult], daemons: &[String]) -> String {
    let mut s = String::new();
    for r in results {
        let img = &r.image;
        s += &format!(
            "\n### {} — {} MB compressed, {} MB uncompressed, {} files in {} layer(s), {} pairs\n\n",
            img.name,
            mb(img.compressed()),
            mb(img.uncompressed()),
            img.files(),
            img.work.len(),
            r.secs[0].len()
        );
        s += "| daemon | median s | min–max s | imaged/this, pair by pair: median (min–max) | MB/s compressed | MB/s uncompressed | daemon CPU s (median) | peak RSS MB |\n";
        s += "|---|---|---|---|---|---|---|---|\n";
        for (d, name) in daemons.iter().enumerate() {
            let t = &r.secs[d];
            if t.is_empty() {
                s += &format!("| {name} | (skipped) | | | | | | |\n");
                continue;
            }
            let med = median(t);
            let (lo, hi) = min_max(t);
            let ratio = match d {
                0 => "—".to_owned(),
                _ => ratio_cell(&r.secs[0], t),
            };
            s += &format!(
                "| {name} | {med:.3} | {lo:.3}–{hi:.3} | {ratio} | {:.1} | {:.1} | {:.2} | {} |\n",
                img.compressed() as f64 / 1e6 / med,
                img.uncompressed() as f64 / 1e6 / med,
                median(&r.cpu[d]),
                mb(r.peak_rss[d])
            );
        }
        s += "\nTimes in pull order (s):\n";
        for (d, name) in daemons.iter().enumerate() {
            let list: Vec<String> = r.secs[d].iter().map(|t| format!("{t:.3}")).collect();
            s += &format!("- {name}: {}\n", list.join(" "));
        }
    }
    s
}

/// `median (min–max)` of the pair-by-pair ratios `a[i] / b[i]`.
pub fn ratio_cell(a: &[f64], b: &[f64]) -> String {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    if ratios.is_empty() {
        return "n/a".into();
    }
    let (lo, hi) = min_max(&ratios);
    format!("**{:.2}** ({lo:.2}–{hi:.2})", median(&ratios))
}

/// One row per image: medians of every daemon and the ratios to imaged.
pub fn summary(results: &[ImageResult], daemons: &[String]) -> String {
    let mut head = String::from("| image | imaged s |");
    let mut rule = String::from("|---|---|");
    for name in &daemons[1..] {
        head += &format!(" {name} s | imaged/{name} |");
        rule += "---|---|";
    }
    let mut s = format!("{head} imaged peak RSS MB |\n{rule}---|\n");
    for r in results {
        s += &format!("| {} | {:.3} |", r.image.name, median(&r.secs[0]));
        for d in 1..daemons.len() {
            match r.secs[d].is_empty() {
                true => s += " (skipped) | |",
                false => s += &format!(" {:.3} | {} |", median(&r.secs[d]), ratio_cell(&r.secs[0], &r.secs[d])),
            }
        }
        s += &format!(" {} |\n", mb(r.peak_rss[0]));
    }
    s
}

/// `--runtime`: a row per setup (medians of the total and of each phase, the ratio of the first setup to
/// each, pair by pair), the target verdict, then every run's total and phases in run order.
pub fn runtime(names: &[&str], runs: &[Vec<Phases>], target: f64) -> String {
    let mut s = format!(
        "| setup | median s | min–max s | {}/this, pair by pair: median (min–max) | PullImage s | CreateContainer s | StartContainer s | start → first line s | daemons' CPU s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        names[0]
    );
    let totals: Vec<Vec<f64>> = runs.iter().map(|r| r.iter().map(Phases::total).collect()).collect();
    let med = |r: &[Phases], f: fn(&Phases) -> f64| median(&r.iter().map(f).collect::<Vec<_>>());
    for (d, name) in names.iter().enumerate() {
        let (lo, hi) = min_max(&totals[d]);
        let ratio = match d {
            0 => "—".to_owned(),
            _ => ratio_cell(&totals[0], &totals[d]),
        };
        s += &format!(
            "| {name} | {:.3} | {lo:.3}–{hi:.3} | {ratio} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} |\n",
            median(&totals[d]),
            med(&runs[d], |p| p.pull),
            med(&runs[d], |p| p.create),
            med(&runs[d], |p| p.start),
            med(&runs[d], |p| p.output),
            med(&runs[d], |p| p.cpu),
        );
    }
    let ratios: Vec<f64> = totals[0].iter().zip(&totals[1]).map(|(a, b)| a / b).collect();
    let r = median(&ratios);
    s += &format!(
        "\nTarget: {} ≤ {target:.2}× {}: median pair ratio **{r:.2}×** ({}; ratio of medians {:.2}×)\n",
        names[0],
        names[1],
        if r <= target { "met" } else { "**missed**" },
        median(&totals[0]) / median(&totals[1]),
    );
    let cpu: Vec<Vec<f64>> = runs.iter().map(|r| r.iter().map(|p| p.cpu).collect()).collect();
    // /proc counts CPU time in 10 ms ticks: smaller amounts do not compare.
    if median(&cpu[1]) >= 0.1 {
        s += &format!(
            "\nDaemons' CPU time, {} / {}, pair by pair: {} (on a machine with no idle core, the time ratio \
             tends to this)\n",
            names[0],
            names[1],
            ratio_cell(&cpu[0], &cpu[1])
        );
    }
    s += "\nRuns in order, total s (pull + create + start + first line):\n";
    for (d, name) in names.iter().enumerate() {
        let list: Vec<String> = runs[d]
            .iter()
            .map(|p| match p.pull > 0.0 {
                false => format!("{:.3} ({:.3}+{:.3}+{:.3})", p.total(), p.create, p.start, p.output),
                true => format!(
                    "{:.3} ({:.3}+{:.3}+{:.3}+{:.3})",
                    p.total(),
                    p.pull,
                    p.create,
                    p.start,
                    p.output
                ),
            })
            .collect();
        s += &format!("- {name}: {}\n", list.join(", "));
    }
    s
}

/// The error and warning lines of each daemon's log (the first few), without containerd's complaint that
/// no CNI network is configured (expected: the benchmark runs no pods).
pub fn log_errors(daemons: &[super::daemons::Daemon]) -> String {
    let mut s =
        String::from("\n## Errors and warnings in the daemons' logs (containerd's \"no CNI config\" left out)\n\n");
    for d in daemons {
        let errors: Vec<String> = d
            .log_errors()
            .into_iter()
            .filter(|l| !l.contains("failed to load cni"))
            .collect();
        s += &format!("- {}: {} line(s)\n", d.name, errors.len());
        for line in errors.iter().take(5) {
            s += &format!("  - `{}`\n", line.chars().take(300).collect::<String>());
        }
    }
    s
}
