//! A stand-in for the Functions host's timer trigger, for the local stack: reads the NCRONTAB
//! schedule of a `timerTrigger` binding from `function.json` and invokes the custom handler
//! with the host's JSON envelope on that schedule.

use std::path::Path;
use std::str::FromStr as _;

use anyhow::Context as _;
use serde_json::{json, Value};

/// The six-field schedule (`{second} {minute} {hour} {day} {month} {day-of-week}`) of the
/// `timerTrigger` binding in `function_json`.
pub fn schedule_of(function_json: &Path) -> anyhow::Result<cron::Schedule> {
    let text = std::fs::read_to_string(function_json)
        .with_context(|| format!("reading {}", function_json.display()))?;
    let definition: Value = serde_json::from_str(&text).context("function.json is not JSON")?;
    let schedule = definition["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|binding| binding["type"] == "timerTrigger")
        .and_then(|binding| binding["schedule"].as_str())
        .context("function.json has no timerTrigger schedule")?;
    cron::Schedule::from_str(schedule)
        .with_context(|| format!("cannot parse schedule {schedule:?}"))
}

/// Invokes `handler_url` (the handler's `/refresh-tokens`) at every time of `schedule`, as the
/// host does, and prints the `Logs` of each answer. Runs until the task is dropped.
pub async fn fire_on_schedule(schedule: cron::Schedule, handler_url: String) {
    let client = reqwest::Client::new();
    let mut last: Option<chrono::DateTime<chrono::Utc>> = None;
    for next in schedule.upcoming(chrono::Utc) {
        let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let envelope = json!({
            "Data": { "timer": {
                "Schedule": { "AdjustForDST": true },
                "ScheduleStatus": { "Last": last.map(|t| t.to_rfc3339()), "Next": next.to_rfc3339(), "LastUpdated": chrono::Utc::now().to_rfc3339() },
                "IsPastDue": false
            } },
            "Metadata": { "sys": { "MethodName": "refresh-tokens", "UtcNow": chrono::Utc::now().to_rfc3339(), "RandGuid": uuid::Uuid::new_v4().to_string() } }
        });
        last = Some(next);
        match client.post(&handler_url).json(&envelope).send().await {
            Ok(answer) => {
                let logs = answer
                    .json::<Value>()
                    .await
                    .map(|v| v["Logs"].clone())
                    .unwrap_or_default();
                println!("timer fired at {next}: {logs}");
            }
            Err(error) => println!("timer fired at {next}: the handler did not answer ({error})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schedule_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../refresh-tokens/function.json");
        let schedule = schedule_of(&path).expect("schedule");
        let mut upcoming = schedule.upcoming(chrono::Utc).take(2);
        let (first, second) = (upcoming.next().unwrap(), upcoming.next().unwrap());
        assert_eq!((second - first).num_minutes(), 30);
    }
}
