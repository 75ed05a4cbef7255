//! The history in Elle's list-append form, for people who run Elle (`elle-cli --model
//! list-append`).

use std::collections::HashMap;

use super::{Event, Outcome};

/// The history in Elle's list-append form, one JSON object per line (invocations and
/// completions, as elle-cli reads with `--model list-append`): each chat is a key, each
/// message an append of a number unique to it. Sends are exported whole. Polls read only a
/// window of each chat, which Elle would take for a whole list, so the reads exported are the
/// final whole-chat reads (one process per replica, after every send).
pub fn to_elle(history: &[Event]) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut number: HashMap<&str, u64> = HashMap::new();
    let mut process: HashMap<String, u64> = HashMap::new();
    let mut ops: Vec<(u64, serde_json::Value)> = Vec::new();
    let mut last = 0;
    for e in history {
        if let Event::Send {
            client,
            invoke_us,
            complete_us,
            outcome,
            chat,
            key,
            ..
        } = e
        {
            let n = number.len() as u64 + 1;
            let v = *number.entry(key).or_insert(n);
            let next = process.len() as u64;
            let p = *process.entry(format!("client {client}")).or_insert(next);
            let value = json!([["append", chat, v]]);
            ops.push((*invoke_us, json!({"type": "invoke", "f": "txn", "value": value, "process": p, "time": invoke_us * 1000})));
            let kind = match outcome {
                Outcome::Ok => "ok",
                Outcome::Fail => "fail",
                Outcome::Unknown => "info",
            };
            ops.push((*complete_us, json!({"type": kind, "f": "txn", "value": value, "process": p, "time": complete_us * 1000})));
            last = last.max(*complete_us);
        }
    }
    let mut t = last + 1;
    for e in history {
        if let Event::Final {
            replica,
            chat,
            messages,
            ..
        } = e
        {
            let next = process.len() as u64;
            let p = *process.entry(format!("final {replica}")).or_insert(next);
            let values: Vec<Option<u64>> = messages
                .iter()
                .map(|m| number.get(m.key.as_str()).copied())
                .collect();
            let read = json!([["r", chat, values]]);
            ops.push((t, json!({"type": "invoke", "f": "txn", "value": [["r", chat, null]], "process": p, "time": t * 1000})));
            ops.push((t + 1, json!({"type": "ok", "f": "txn", "value": read, "process": p, "time": (t + 1) * 1000})));
            t += 2;
        }
    }
    ops.sort_by_key(|(at, _)| *at);
    ops.into_iter()
        .enumerate()
        .map(|(i, (_, mut op))| {
            op["index"] = json!(i);
            op
        })
        .collect()
}
