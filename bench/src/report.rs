//! Targets, the Key Vault throttling arithmetic, and the tables on stdout (Markdown, so
//! docs/PERFORMANCE.md can quote them as printed).

use serde_json::{json, Value};

use crate::load::round;
use crate::Sizes;

/// Key Vault's documented limit for secret GETs: about 4,000 per 10 s per vault.
const KV_GETS_PER_WINDOW: f64 = 4000.0;
const KV_WINDOW_S: f64 = 10.0;
const KV_USERS: f64 = 100_000.0;

/// Adds the Key Vault arithmetic and the target verdicts.
pub(crate) fn finish(report: &mut Value, sizes: &Sizes) {
    // A run with N GETs at 400/s after the first window's 4,000 is held up
    // max(0, N - 4000) / 400 seconds.
    let rate = KV_GETS_PER_WINDOW / KV_WINDOW_S;
    let held = |gets: f64| ((gets - KV_GETS_PER_WINDOW).max(0.0)) / rate;
    let ours_gets = report["refresh"]
        .as_array()
        .and_then(|runs| {
            runs.iter()
                .filter_map(|r| r["key_vault_gets"].as_f64())
                .reduce(f64::max)
        })
        .unwrap_or(2.0);
    report["key_vault_throttling"] = json!({
        "users": KV_USERS,
        "limit": "4000 GETs per 10 s per vault",
        "original_gets_per_run": 2.0 * KV_USERS,
        "original_held_up_s": round(held(2.0 * KV_USERS), 1),
        "ours_gets_per_run": ours_gets,
        "ours_held_up_s": round(held(ours_gets), 1),
    });
    report["targets"] = Value::Array(targets(report, sizes));
}

fn target(name: &str, value: Option<f64>, limit: f64, at_most: bool, unit: &str) -> Value {
    let met = value.map(|v| if at_most { v <= limit } else { v >= limit });
    json!({
        "target": name,
        "value": value.map(|v| round(v, 3)),
        "limit": format!("{} {limit} {unit}", if at_most { "≤" } else { "≥" }),
        "met": met,
    })
}

fn targets(report: &Value, sizes: &Sizes) -> Vec<Value> {
    let warm = report["do_work_warm"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pg32 = warm
        .iter()
        .find(|p| p["backend"] == "postgres" && p["concurrency"] == 32);
    let mut out = vec![
        target(
            "do-work warm overhead p50, Postgres, c=32",
            pg32.and_then(|p| p["overhead_p50_ms"].as_f64()),
            1.0,
            true,
            "ms",
        ),
        target(
            "do-work warm overhead p99, Postgres, c=32",
            pg32.and_then(|p| p["overhead_p99_ms"].as_f64()),
            5.0,
            true,
            "ms",
        ),
        target(
            "do-work warm throughput, Postgres, c=32",
            pg32.and_then(|p| p["ours"]["rps"].as_f64()),
            2000.0,
            false,
            "req/s",
        ),
        target(
            "Entra calls per 1,000 warm do-work calls, one user",
            report["do_work_cold"]
                .get(1)
                .and_then(|c| c["entra_calls_per_1000"].as_f64()),
            1.0,
            true,
            "",
        ),
    ];
    let runs = report["refresh"].as_array().cloned().unwrap_or_default();
    for run in &runs {
        out.push(target(
            &format!(
                "refresh-tokens {} rows, c={}: fraction of concurrency ÷ latency",
                run["rows"], run["concurrency"]
            ),
            run["fraction_of_bound"].as_f64(),
            0.9,
            false,
            "",
        ));
    }
    let kv_per_version = runs
        .iter()
        .chain(report.get("reseal"))
        .filter_map(|r| Some(r["key_vault_gets"].as_f64()? / r["distinct_key_versions"].as_f64()?))
        .reduce(f64::max);
    out.push(target(
        "Key Vault GETs per distinct key version (worst run)",
        kv_per_version,
        2.0,
        true,
        "",
    ));
    let rss = |rows: usize| {
        runs.iter()
            .filter(|r| r["rows"].as_u64() == Some(rows as u64))
            .filter_map(|r| r["peak_rss_mib"].as_f64())
            .reduce(f64::max)
    };
    if let (Some(small), Some(big)) = (
        sizes.refresh_rows.first().and_then(|&n| rss(n)),
        sizes.refresh_rows.last().and_then(|&n| rss(n)),
    ) {
        out.push(target(
            "peak RSS growth, largest vs smallest refresh run",
            Some(big - small),
            20.0,
            true,
            "MiB",
        ));
    }
    out.push(target(
        "re-seal only",
        report["reseal"]["rows_per_s"].as_f64(),
        5000.0,
        false,
        "rows/s",
    ));
    out.push(target(
        "ready after spawn, migrated database (median)",
        report["startup"]["migrated"]["median_ms"].as_f64(),
        150.0,
        true,
        "ms",
    ));
    out
}

fn f(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 || x.abs() >= 100.0 {
                format!("{x:.0}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        return;
    }
    println!("\n### {title}\n");
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// Prints every table of the report.
pub(crate) fn print(report: &Value) {
    let m = &report["machine"];
    println!(
        "\n## obo-bench ({} mode, {} build) on {} × {}, {} GiB",
        f(&report["mode"]),
        f(&m["profile"]),
        f(&m["nproc"]),
        f(&m["cpu"]),
        f(&m["memory_gib"])
    );
    let empty = Vec::new();
    table(
        "do-work, warm access-token cache (ms; floor = the same client calling the downstream emulator directly)",
        &[
            "db", "conc", "floor p50", "floor p99", "floor req/s", "ours p50", "ours p90",
            "ours p99", "ours req/s", "overhead p50", "overhead p99", "ratio p50",
            "service CPU µs/call", "Entra calls",
        ],
        report["do_work_warm"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|p| {
                vec![
                    f(&p["backend"]),
                    f(&p["concurrency"]),
                    f(&p["direct"]["p50_ms"]),
                    f(&p["direct"]["p99_ms"]),
                    f(&p["direct"]["rps"]),
                    f(&p["ours"]["p50_ms"]),
                    f(&p["ours"]["p90_ms"]),
                    f(&p["ours"]["p99_ms"]),
                    f(&p["ours"]["rps"]),
                    f(&p["overhead_p50_ms"]),
                    f(&p["overhead_p99_ms"]),
                    f(&p["ratio_p50"]),
                    f(&p["service_cpu_us_per_call"]),
                    f(&p["entra_calls"]),
                ]
            })
            .collect(),
    );
    telemetry_table(report);
    instructions_table(report);
    paired_table(report);
    let two = &report["do_work_warm_two_downstreams"];
    if two.is_object() {
        table(
            "do-work, warm, two downstreams (each user's calls alternate between them)",
            &[
                "db",
                "conc",
                "ours p50",
                "ours p90",
                "ours p99",
                "ours req/s",
                "service CPU µs/call",
                "Entra calls",
            ],
            vec![vec![
                f(&two["backend"]),
                f(&two["concurrency"]),
                f(&two["ours"]["p50_ms"]),
                f(&two["ours"]["p90_ms"]),
                f(&two["ours"]["p99_ms"]),
                f(&two["ours"]["rps"]),
                f(&two["service_cpu_us_per_call"]),
                f(&two["entra_calls"]),
            ]],
        );
    }
    table(
        "do-work, cold (refresh on every call) vs ours (Postgres, concurrency 8)",
        &[
            "case",
            "calls",
            "Entra calls / 1,000",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "req/s",
        ],
        report["do_work_cold"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|c| {
                vec![
                    f(&c["case"]),
                    f(&c["calls"]),
                    f(&c["entra_calls_per_1000"]),
                    f(&c["load"]["p50_ms"]),
                    f(&c["load"]["p90_ms"]),
                    f(&c["load"]["p99_ms"]),
                    f(&c["load"]["rps"]),
                ]
            })
            .collect(),
    );
    if report["setup"].is_object() {
        let s = &report["setup"];
        table(
            "setup (Postgres, concurrency 8, a new user per call)",
            &[
                "calls",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "req/s",
                "service CPU µs/call",
            ],
            vec![vec![
                f(&s["load"]["requests"]),
                f(&s["load"]["p50_ms"]),
                f(&s["load"]["p90_ms"]),
                f(&s["load"]["p99_ms"]),
                f(&s["load"]["rps"]),
                f(&s["service_cpu_us_per_call"]),
            ]],
        );
    }
    table(
        &format!(
            "refresh-tokens (Postgres, Entra latency {} ms)",
            report["refresh"][0]["entra_latency_ms"]
        ),
        &[
            "rows",
            "conc",
            "seconds",
            "users/s",
            "bound c÷latency",
            "fraction",
            "Entra served ms",
            "bound c÷served",
            "fraction of it",
            "capacity at Entra 0 ms",
            "fraction of min(bound, capacity)",
            "KV GETs",
            "peak RSS MiB",
            "CPU s",
        ],
        report["refresh"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|r| {
                vec![
                    f(&r["rows"]),
                    f(&r["concurrency"]),
                    f(&r["seconds"]),
                    f(&r["users_per_s"]),
                    f(&r["bound_per_s"]),
                    f(&r["fraction_of_bound"]),
                    f(&r["entra_served_ms"]),
                    f(&r["served_bound_per_s"]),
                    f(&r["fraction_of_served_bound"]),
                    f(&r["capacity_per_s"]),
                    f(&r["fraction_of_reachable_bound"]),
                    f(&r["key_vault_gets"]),
                    f(&r["peak_rss_mib"]),
                    f(&r["cpu_seconds"]),
                ]
            })
            .collect(),
    );
    let budgeted: Vec<Vec<String>> = report["refresh"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter(|r| r["time_budget_s"].is_number())
        .map(|r| {
            vec![
                f(&r["rows"]),
                f(&r["concurrency"]),
                f(&r["entra_latency_ms"]),
                f(&r["time_budget_s"]),
                f(&r["seconds"]),
                f(&r["refreshed"]),
                f(&r["model_users"]),
                f(&r["fraction_of_model"]),
            ]
        })
        .collect();
    table(
        "refresh-tokens within OBOVAULT_REFRESH_TIME_BUDGET: refreshed vs the capacity model, min(rows, min(c ÷ latency, capacity) × budget)",
        &[
            "rows",
            "conc",
            "Entra ms",
            "budget s",
            "seconds",
            "refreshed",
            "model",
            "fraction of model",
        ],
        budgeted,
    );
    if report["reseal"].is_object() {
        let r = &report["reseal"];
        table(
            "re-seal only (key rotation, no Entra)",
            &[
                "rows",
                "seconds",
                "rows/s",
                "KV GETs",
                "peak RSS MiB",
                "CPU s",
            ],
            vec![vec![
                f(&r["rows"]),
                f(&r["seconds"]),
                f(&r["rows_per_s"]),
                f(&r["key_vault_gets"]),
                f(&r["peak_rss_mib"]),
                f(&r["cpu_seconds"]),
            ]],
        );
    }
    if report["startup"].is_object() {
        let s = &report["startup"];
        table(
            &format!(
                "start-up: spawn to first answer of GET /, packaged binary ({} MiB zip, {} MiB unpacked; Postgres, ms)",
                f(&s["package"]["zip_mib"]),
                f(&s["package"]["binary_mib"])
            ),
            &["database", "median", "max", "runs"],
            ["migrated", "fresh"]
                .iter()
                .map(|k| {
                    vec![
                        (*k).to_owned(),
                        f(&s[k]["median_ms"]),
                        f(&s[k]["max_ms"]),
                        f(&s[k]["runs_ms"]),
                    ]
                })
                .collect(),
        );
    }
    let k = &report["key_vault_throttling"];
    table(
        "Key Vault throttling, one timer run over 100,000 users (4,000 GETs / 10 s)",
        &["design", "GETs per run", "held up by Key Vault (s)"],
        vec![
            vec![
                "original (latest + version per user)".into(),
                f(&k["original_gets_per_run"]),
                f(&k["original_held_up_s"]),
            ],
            vec![
                "ours (once per key version)".into(),
                f(&k["ours_gets_per_run"]),
                f(&k["ours_held_up_s"]),
            ],
        ],
    );
    table(
        "targets",
        &["target", "value", "limit", "met"],
        report["targets"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|t| {
                vec![
                    f(&t["target"]),
                    f(&t["value"]),
                    f(&t["limit"]),
                    match t["met"].as_bool() {
                        Some(true) => "yes".into(),
                        Some(false) => "**no**".into(),
                        None => "not run".into(),
                    },
                ]
            })
            .collect(),
    );
}

/// The telemetry-cost point, when it ran.
fn telemetry_table(report: &Value) {
    let point = &report["do_work_warm_telemetry"];
    let Some(variants) = point["variants"].as_array() else {
        return;
    };
    table(
        &format!(
            "do-work, warm, telemetry exporters ({}, concurrency {})",
            f(&point["backend"]),
            f(&point["concurrency"])
        ),
        &[
            "exporter",
            "service CPU µs/call",
            "samples",
            "vs none % (means)",
            "vs none % (median of rounds)",
            "p50 ms",
        ],
        variants
            .iter()
            .map(|v| {
                vec![
                    f(&v["exporter"]),
                    f(&v["service_cpu_us_per_call"]),
                    f(&v["samples_us_per_call"]),
                    f(&v["overhead_percent"]),
                    f(&v["median_round_overhead_percent"]),
                    f(&v["p50_ms"]),
                ]
            })
            .collect(),
    );
}

/// The telemetry point counted in instructions, when it ran.
fn instructions_table(report: &Value) {
    let point = &report["do_work_warm_telemetry_instructions"];
    let Some(variants) = point["variants"].as_array() else {
        return;
    };
    table(
        &format!(
            "do-work, warm, telemetry exporters in instructions ({}, {} calls one at a time, \
             median of {} rounds)",
            f(&point["backend"]),
            f(&point["calls"]),
            f(&point["rounds"])
        ),
        &["exporter", "instructions/call", "vs none %", "rounds"],
        variants
            .iter()
            .map(|v| {
                let rounds = v["rounds"].as_array().map_or_else(String::new, |rounds| {
                    rounds.iter().map(f).collect::<Vec<_>>().join(", ")
                });
                vec![
                    f(&v["exporter"]),
                    f(&v["instructions_per_call"]),
                    f(&v["overhead_percent"]),
                    rounds,
                ]
            })
            .collect(),
    );
}

/// The paired telemetry point, when it ran.
fn paired_table(report: &Value) {
    let point = &report["do_work_warm_telemetry_paired"];
    let Some(variants) = point["variants"].as_array() else {
        return;
    };
    table(
        &format!(
            "do-work, warm, telemetry exporters side by side ({}, concurrency {} each, {} \
             slices of {} ms over {} pairs of services)",
            f(&point["backend"]),
            f(&point["concurrency"]),
            f(&point["slices"]),
            f(&point["slice_ms"]),
            f(&point["pairs_of_services"])
        ),
        &[
            "exporter",
            "vs none % (median of slices)",
            "quartiles %",
            "by pair of services %",
            "CPU µs/call, none",
            "CPU µs/call, exporter",
            "slices counted",
        ],
        variants
            .iter()
            .map(|v| {
                vec![
                    f(&v["exporter"]),
                    f(&v["median_excess_percent"]),
                    f(&v["quartiles_percent"]),
                    f(&v["median_excess_percent_by_pair_of_services"]),
                    f(&v["none_cpu_us_per_call"]),
                    f(&v["exporter_cpu_us_per_call"]),
                    f(&v["slices_counted"]),
                ]
            })
            .collect(),
    );
}
