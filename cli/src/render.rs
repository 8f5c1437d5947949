//! Human output: the workspace table (`ID  PROJECT  STATUS  HARDWARE  CREATED`) and the detail
//! view of one workspace. `--json` bypasses this module entirely.

use protocol::Workspace;
use time::OffsetDateTime;
use time::macros::format_description;

/// The documented list columns.
pub const COLUMNS: [&str; 5] = ["ID", "PROJECT", "STATUS", "HARDWARE", "CREATED"];

/// A timestamp as `2026-01-31 12:00:00 UTC`.
pub fn timestamp(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let utc = t.to_offset(time::UtcOffset::UTC);
    match utc.format(&fmt) {
        Ok(s) => format!("{s} UTC"),
        Err(_) => utc.to_string(),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 < N {
                text.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad + 2));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// One row of the list.
pub fn row(ws: &Workspace) -> [String; 5] {
    [
        ws.id.to_string(),
        ws.project_id.to_string(),
        ws.status.to_string(),
        ws.hardware.short(),
        timestamp(ws.created_at),
    ]
}

/// The list table.
pub fn workspace_table(list: &[Workspace]) -> String {
    let rows: Vec<[String; 5]> = list.iter().map(row).collect();
    table(COLUMNS, &rows)
}

/// The detail view of `aether workspace get`.
pub fn workspace_details(ws: &Workspace) -> String {
    let hw = &ws.hardware;
    let cpu_kind = match hw.cpu_kind {
        protocol::model::CpuKind::Shared => "shared",
        protocol::model::CpuKind::Performance => "performance",
    };
    let mut fields: Vec<(&str, String)> = vec![
        ("ID", ws.id.to_string()),
        ("PROJECT", ws.project_id.to_string()),
        ("STATUS", ws.status.to_string()),
        (
            "HARDWARE",
            format!(
                "{} ({cpu_kind}, {}gb volume{})",
                hw.short(),
                hw.volume_size_gb,
                hw.gpu_kind
                    .as_ref()
                    .map(|g| format!(", gpu {g}"))
                    .unwrap_or_default()
            ),
        ),
        (
            "KEEP ACTIVE",
            if ws.keep_active { "yes" } else { "no" }.to_owned(),
        ),
        ("CONNECTIONS", ws.active_connections.to_string()),
        ("TASKS", ws.active_tasks.to_string()),
    ];
    if let Some(secs) = ws.idle_timeout_secs {
        fields.push(("IDLE TIMEOUT", format!("{secs}s")));
    }
    if let Some(at) = ws.idle_stop_at {
        fields.push(("IDLE STOP AT", timestamp(at)));
    }
    if let Some(ip) = &ws.private_ip {
        fields.push(("PRIVATE IP", ip.clone()));
    }
    if let Some(err) = &ws.error_message {
        fields.push(("ERROR", err.clone()));
    }
    fields.push(("CREATED", timestamp(ws.created_at)));
    fields.push(("UPDATED", timestamp(ws.updated_at)));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:"), width = width + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Hardware, WorkspaceStatus};
    use time::macros::datetime;
    use uuid::Uuid;

    fn ws(id: &str, status: WorkspaceStatus) -> Workspace {
        Workspace {
            id: Uuid::parse_str(id).unwrap(),
            project_id: Uuid::parse_str("00000000-0000-4000-8000-00000000000a").unwrap(),
            status,
            hardware: Hardware::default(),
            keep_active: false,
            machine_id: None,
            private_ip: None,
            git_ref: None,
            preview_token: None,
            error_message: None,
            created_at: datetime!(2026-12-03 17:18:31 UTC),
            updated_at: datetime!(2026-12-03 17:20:00 UTC),
            active_connections: 0,
            active_tasks: 0,
            idle_timeout_secs: None,
            idle_stop_at: None,
        }
    }

    #[test]
    fn table_aligns_columns_with_two_spaces() {
        let out = table(
            ["A", "LONGER", "C"],
            &[
                ["xxxx".into(), "y".into(), "z".into()],
                ["".into(), "".into(), "".into()],
            ],
        );
        assert_eq!(out, "A     LONGER  C\nxxxx  y       z\n\n");
    }

    #[test]
    fn workspace_table_has_the_documented_columns_and_hardware() {
        let list = [
            ws(
                "11111111-0000-4000-8000-000000000001",
                WorkspaceStatus::Running,
            ),
            ws(
                "22222222-0000-4000-8000-000000000002",
                WorkspaceStatus::StopFailed,
            ),
        ];
        let out = workspace_table(&list);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let header: Vec<&str> = lines[0].split("  ").filter(|s| !s.is_empty()).collect();
        assert_eq!(header.iter().map(|s| s.trim()).collect::<Vec<_>>(), COLUMNS);
        assert!(lines[1].starts_with("11111111-0000-4000-8000-000000000001  "));
        assert!(lines[1].contains("  running  "));
        assert!(lines[1].contains("  2cpu/2048mb  "));
        assert!(lines[1].ends_with("2026-12-03 17:18:31 UTC"));
        assert!(lines[2].contains("  stop_failed  "));
        // Columns line up: STATUS starts at the same offset on every line.
        let at = lines[0].find("STATUS").unwrap();
        assert_eq!(&lines[1][at..at + 7], "running");
        assert_eq!(&lines[2][at..at + 11], "stop_failed");
    }

    #[test]
    fn details_list_every_field() {
        let mut w = ws(
            "11111111-0000-4000-8000-000000000001",
            WorkspaceStatus::Error,
        );
        w.error_message = Some("boom".into());
        let out = workspace_details(&w);
        assert!(out.contains("STATUS:       error\n"), "{out}");
        assert!(out.contains("HARDWARE:     2cpu/2048mb (shared, 10gb volume)\n"));
        assert!(out.contains("ERROR:        boom\n"));
    }
}
