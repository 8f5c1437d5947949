//! The agent channel: task lifecycle, abort, replay to later sockets, the active-task count, and
//! a custom agent command.

mod common;

use common::{Client, Service};
use serde_json::{Value, json};

async fn prompt(c: &mut Client, task: &str, script: &str) {
    c.send(json!({"channel": "agent", "type": "prompt", "prompt": script, "taskId": task}))
        .await;
}

/// Agent frames for `task` until its final status; returns (text, final status frame).
async fn run_to_end(c: &mut Client, task: &str) -> (String, Value, Vec<String>) {
    let mut text = String::new();
    let mut statuses = Vec::new();
    loop {
        let v = c.recv_on("agent").await;
        if v["taskId"] != task {
            continue;
        }
        match v["type"].as_str() {
            Some("text") => text.push_str(v["content"].as_str().unwrap()),
            Some("status") => {
                let s = v["status"].as_str().unwrap().to_owned();
                statuses.push(s.clone());
                if matches!(s.as_str(), "completed" | "failed" | "aborted") {
                    return (text, v, statuses);
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_task_runs_streams_text_and_completes() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    prompt(&mut c, "t1", "echo agent-$((5*5)); echo to-stderr >&2; pwd").await;
    let (text, end, statuses) = run_to_end(&mut c, "t1").await;
    assert_eq!(statuses, ["running", "completed"]);
    assert!(text.contains("agent-25\n"), "{text:?}");
    assert!(text.contains("to-stderr"), "{text:?}");
    let volume = svc.volume.path().canonicalize().unwrap();
    assert!(
        text.contains(volume.to_str().unwrap()),
        "runs in the volume"
    );
    assert_eq!(end["exitCode"], 0);
}

#[tokio::test]
async fn a_failing_task_reports_its_exit_status() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    prompt(&mut c, "bad", "echo before; exit 4").await;
    let (text, end, _) = run_to_end(&mut c, "bad").await;
    assert!(text.contains("before"));
    assert_eq!(end["status"], "failed");
    assert_eq!(end["exitCode"], 4);
    assert!(end["message"].as_str().unwrap().contains('4'));
}

#[tokio::test]
async fn a_task_id_is_generated_when_missing() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.send(json!({"channel": "agent", "type": "prompt", "prompt": "true"}))
        .await;
    let v = c.recv_on("agent").await;
    assert_eq!(v["status"], "running");
    assert!(!v["taskId"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn abort_ends_the_process_group_and_the_count_follows() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    // A child in the background too: the whole group must go.
    prompt(&mut c, "long", "sleep 60 & echo started; sleep 60").await;
    c.recv_until(|v| v["channel"] == "agent" && v["type"] == "text")
        .await;
    assert_eq!(svc.status().await["activeTasks"], 1);
    // A second prompt with the id of a running task is refused.
    prompt(&mut c, "long", "true").await;
    let e = c.recv_on("error").await;
    assert!(e["error"].as_str().unwrap().contains("already running"));

    c.send(json!({"channel": "agent", "type": "abort", "taskId": "long"}))
        .await;
    let (_, end, _) = run_to_end(&mut c, "long").await;
    assert_eq!(end["status"], "aborted");
    assert_eq!(svc.status().await["activeTasks"], 0);
}

#[tokio::test]
async fn history_is_replayed_to_later_sockets() {
    let svc = Service::start(&[]).await;
    let mut a = svc.connect().await;
    prompt(&mut a, "done", "echo one; echo two").await;
    run_to_end(&mut a, "done").await;
    prompt(&mut a, "live", "echo three; sleep 60").await;
    a.recv_until(|v| v["taskId"] == "live" && v["type"] == "text")
        .await;

    let mut b = svc.connect().await;
    let (text, end, statuses) = run_to_end(&mut b, "done").await;
    assert_eq!(text, "one\ntwo\n");
    assert_eq!(statuses, ["running", "completed"]);
    assert_eq!(end["exitCode"], 0);
    // The running task's history so far, then its live end.
    let v = b.recv_until(|v| v["taskId"] == "live").await;
    assert_eq!(v["status"], "running");
    let v = b.recv_until(|v| v["taskId"] == "live").await;
    assert_eq!(v["content"], "three\n");
    b.send(json!({"channel": "agent", "type": "abort", "taskId": "live"}))
        .await;
    let (_, end, _) = run_to_end(&mut b, "live").await;
    assert_eq!(end["status"], "aborted");
}

#[tokio::test]
async fn the_active_count_is_served_with_no_socket_connected() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    prompt(&mut c, "bg", "echo go; read _ < /dev/null; sleep 60").await;
    c.recv_until(|v| v["taskId"] == "bg" && v["type"] == "text")
        .await;
    drop(c);
    assert_eq!(svc.status().await["activeTasks"], 1);
    let mut c = svc.connect().await;
    c.send(json!({"channel": "agent", "type": "abort", "taskId": "bg"}))
        .await;
    run_to_end(&mut c, "bg").await;
    assert_eq!(svc.status().await["activeTasks"], 0);
}

#[tokio::test]
async fn a_custom_agent_command_reads_the_prompt_on_stdin() {
    let svc = Service::start(&[
        "--agent-command",
        "echo \"task=$AETHER_TASK_ID\"; tr a-z A-Z; test -f \"$AETHER_PROMPT_FILE\" && echo file-ok",
    ])
    .await;
    let mut c = svc.connect().await;
    prompt(&mut c, "cli", "hello agent").await;
    let (text, end, _) = run_to_end(&mut c, "cli").await;
    assert_eq!(end["status"], "completed");
    assert!(text.contains("task=cli"), "{text:?}");
    assert!(text.contains("HELLO AGENT"), "{text:?}");
    assert!(text.contains("file-ok"), "{text:?}");
}

#[tokio::test]
async fn settings_are_echoed() {
    let svc = Service::start(&[]).await;
    let mut c = svc.connect().await;
    c.send(json!({"channel": "agent", "type": "settings", "model": "m1"}))
        .await;
    let v = c.recv_on("agent").await;
    assert_eq!(
        v,
        json!({"channel": "agent", "type": "settings", "provider": null, "model": "m1"})
    );
}
