//! Round trips against JSON written from the documented examples (protocol.md).

use protocol::agent::{AgentClient, AgentServer, TaskStatus};
use protocol::control::{ControlClient, ControlServer, ErrorCode};
use protocol::files::{Encoding, FilesClient, FilesServer};
use protocol::ports::{PortsClient, PortsServer};
use protocol::rest::{CreateWorkspace, UpdateWorkspace, WorkspaceList};
use protocol::terminal::{TerminalClient, TerminalServer};
use protocol::{ClientMessage, Peek, ServerMessage, Workspace, WorkspaceStatus};
use serde_json::{Value, json};

/// Parses `sample`, checks it is `expected`, and checks that encoding gives the same JSON back.
fn client_round_trip(sample: Value, expected: ClientMessage) {
    let parsed = ClientMessage::parse(&sample.to_string()).expect("sample parses");
    assert_eq!(parsed, expected);
    let encoded: Value = serde_json::from_str(&parsed.to_json()).unwrap();
    assert_eq!(encoded, sample);
}

fn server_round_trip(sample: Value, expected: ServerMessage) {
    let parsed = ServerMessage::parse(&sample.to_string()).expect("sample parses");
    assert_eq!(parsed, expected);
    let encoded: Value = serde_json::from_str(&parsed.to_json()).unwrap();
    assert_eq!(encoded, sample);
}

#[test]
fn terminal_messages() {
    client_round_trip(
        json!({"channel":"terminal","type":"create","sessionId":"s1","cols":120,"rows":40}),
        ClientMessage::Terminal(TerminalClient::Create {
            session_id: "s1".into(),
            cols: Some(120),
            rows: Some(40),
            last_seq: None,
        }),
    );
    client_round_trip(
        json!({"channel":"terminal","type":"input","sessionId":"s1","data":"ls\r"}),
        ClientMessage::Terminal(TerminalClient::Input {
            session_id: "s1".into(),
            data: "ls\r".into(),
        }),
    );
    client_round_trip(
        json!({"channel":"terminal","type":"resize","sessionId":"s1","cols":100,"rows":30}),
        ClientMessage::Terminal(TerminalClient::Resize {
            session_id: "s1".into(),
            cols: 100,
            rows: 30,
        }),
    );
    server_round_trip(
        json!({"channel":"terminal","type":"output","sessionId":"s1","data":"hi\r\n","seq":4}),
        ServerMessage::Terminal(TerminalServer::Output {
            session_id: "s1".into(),
            data: "hi\r\n".into(),
            seq: Some(4),
        }),
    );
    server_round_trip(
        json!({"channel":"terminal","type":"close","sessionId":"s1","exitCode":null}),
        ServerMessage::Terminal(TerminalServer::Close {
            session_id: "s1".into(),
            exit_code: None,
        }),
    );
}

#[test]
fn files_messages() {
    client_round_trip(
        json!({"channel":"files","type":"list","requestId":"r1","path":"src"}),
        ClientMessage::Files(FilesClient::List {
            request_id: "r1".into(),
            path: "src".into(),
        }),
    );
    let write = ClientMessage::parse(
        r#"{"channel":"files","type":"write","requestId":"r2","path":"a/b.txt","content":"aGk=","encoding":"base64"}"#,
    )
    .unwrap();
    assert!(matches!(
        write,
        ClientMessage::Files(FilesClient::Write {
            encoding: Encoding::Base64,
            ..
        })
    ));
    server_round_trip(
        json!({"channel":"files","type":"list","requestId":"r1","data":[
            {"name":"main.rs","type":"file","size":12,"modified":1700000000000u64}]}),
        ServerMessage::Files(FilesServer::List {
            request_id: "r1".into(),
            data: Some(vec![protocol::files::DirEntry {
                name: "main.rs".into(),
                kind: protocol::files::EntryKind::File,
                size: 12,
                modified: 1_700_000_000_000,
            }]),
            error: None,
        }),
    );
    server_round_trip(
        json!({"channel":"files","type":"change","path":"src/x.rs","action":"modify"}),
        ServerMessage::Files(FilesServer::Change {
            path: "src/x.rs".into(),
            action: protocol::files::ChangeAction::Modify,
        }),
    );
}

#[test]
fn agent_ports_and_workspace_messages() {
    client_round_trip(
        json!({"channel":"agent","type":"prompt","prompt":"echo hi","taskId":"t1"}),
        ClientMessage::Agent(AgentClient::Prompt {
            prompt: "echo hi".into(),
            task_id: Some("t1".into()),
        }),
    );
    client_round_trip(
        json!({"channel":"agent","type":"tool_response","toolCallId":"c1","result":{"ok":true}}),
        ClientMessage::Agent(AgentClient::ToolResponse {
            tool_call_id: "c1".into(),
            result: json!({"ok":true}),
        }),
    );
    server_round_trip(
        json!({"channel":"agent","type":"status","taskId":"t1","status":"completed","exitCode":0}),
        ServerMessage::Agent(AgentServer::Status {
            task_id: "t1".into(),
            status: TaskStatus::Completed,
            exit_code: Some(0),
            message: None,
        }),
    );
    client_round_trip(
        json!({"channel":"ports","type":"kill","port":8000}),
        ClientMessage::Ports(PortsClient::Kill { port: 8000 }),
    );
    server_round_trip(
        json!({"channel":"ports","type":"open","port":8000,"pid":42,"process":"python3"}),
        ServerMessage::Ports(PortsServer::Open {
            port: 8000,
            pid: Some(42),
            process: Some("python3".into()),
        }),
    );
    client_round_trip(
        json!({"channel":"workspace","type":"ping","seq":7,"data":"x"}),
        ClientMessage::Workspace(ControlClient::Ping {
            seq: 7,
            data: Some("x".into()),
        }),
    );
    client_round_trip(
        json!({"channel":"workspace","type":"release"}),
        ClientMessage::Workspace(ControlClient::Release),
    );
    client_round_trip(
        json!({"channel":"workspace","type":"attach"}),
        ClientMessage::Workspace(ControlClient::Attach),
    );
    server_round_trip(
        json!({"channel":"workspace","type":"released"}),
        ServerMessage::Workspace(ControlServer::Released),
    );
    assert!(ControlClient::is_backend_only("workspace", "release"));
    assert!(ControlClient::is_backend_only("workspace", "attach"));
    assert!(!ControlClient::is_backend_only("workspace", "ping"));
    assert!(!ControlClient::is_backend_only("terminal", "attach"));
    server_round_trip(
        json!({"channel":"workspace","type":"status","workspaceId":"w","status":"starting","elapsedMs":12}),
        ServerMessage::Workspace(ControlServer::Status {
            workspace_id: "w".into(),
            status: WorkspaceStatus::Starting,
            message: None,
            elapsed_ms: Some(12),
        }),
    );
    server_round_trip(
        json!({"channel":"workspace","type":"error","code":"start_timeout","message":"boot budget of 5m exceeded"}),
        ServerMessage::Workspace(ControlServer::Error {
            code: ErrorCode::StartTimeout,
            message: "boot budget of 5m exceeded".into(),
        }),
    );
    server_round_trip(
        json!({"channel":"error","type":"error","error":"bad","requestId":"r9"}),
        ServerMessage::error("bad", Some("r9".into())),
    );
}

#[test]
fn extra_fields_are_tolerated_and_missing_ones_are_errors() {
    let parsed = ClientMessage::parse(
        r#"{"channel":"terminal","type":"input","sessionId":"s","data":"x","future":1}"#,
    );
    assert!(parsed.is_ok());
    let err = ClientMessage::parse(r#"{"channel":"terminal","type":"input","sessionId":"s"}"#)
        .unwrap_err();
    assert!(err.message.contains("data"), "{}", err.message);
    let err =
        ClientMessage::parse(r#"{"channel":"files","type":"read","requestId":"r5"}"#).unwrap_err();
    assert_eq!(err.request_id.as_deref(), Some("r5"));
    let err = ClientMessage::parse("{not json").unwrap_err();
    assert!(err.message.starts_with("malformed JSON"), "{}", err.message);
    let err = ClientMessage::parse(r#"{"channel":"nope","type":"x"}"#).unwrap_err();
    assert!(err.message.contains("nope"), "{}", err.message);
}

#[test]
fn peek_reads_only_the_tags() {
    let peek =
        Peek::parse(r#"{"channel":"files","type":"read","requestId":"r","path":"a"}"#).unwrap();
    assert_eq!(
        (peek.channel.as_ref(), peek.kind.as_ref()),
        ("files", "read")
    );
    assert!(Peek::parse(r#"{"channel":"error","type":"error"}"#).is_err());
    assert!(Peek::parse(r#"[1,2]"#).is_err());
    assert!(Peek::parse(r#"{"channel":"files"}"#).is_err());
}

#[test]
fn workspace_object_and_rest_bodies() {
    let sample = json!({
        "workspaces": [{
            "id": "7f1c6a4e-2a4b-4d47-9a53-1f0b8d3c2e10",
            "project_id": "0b8f0f8e-8a51-4b8f-9f0e-5d6c1a2b3c4d",
            "status": "stop_failed",
            "hardware": {"cpu_kind":"shared","cpus":2,"memory_mb":2048,"volume_size_gb":10,"gpu_kind":null},
            "keep_active": false,
            "machine_id": null,
            "private_ip": "fdaa::3",
            "git_ref": "main",
            "preview_token": null,
            "error_message": null,
            "created_at": "2026-12-01T10:00:00Z",
            "updated_at": "2026-12-01T10:05:00Z"
        }]
    });
    let list: WorkspaceList = serde_json::from_value(sample).unwrap();
    let ws: &Workspace = &list.workspaces[0];
    assert_eq!(ws.status, WorkspaceStatus::StopFailed);
    assert_eq!(ws.hardware.short(), "2cpu/2048mb");
    assert_eq!(ws.active_connections, 0);
    let again: WorkspaceList =
        serde_json::from_str(&serde_json::to_string(&list).unwrap()).unwrap();
    assert_eq!(again, list);

    let create: CreateWorkspace = serde_json::from_str("{}").unwrap();
    assert_eq!(create, CreateWorkspace::default());
    let update: UpdateWorkspace =
        serde_json::from_str(r#"{"keep_active":true,"gpu_kind":null}"#).unwrap();
    assert_eq!(update.keep_active, Some(true));
    assert_eq!(update.gpu_kind, Some(None));
    assert_eq!(update.cpus, None);
    assert!("stop_failed".parse::<WorkspaceStatus>().is_ok());
    assert!("sleeping".parse::<WorkspaceStatus>().is_err());
}
