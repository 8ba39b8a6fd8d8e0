//! Tables for people. Columns are padded to the widest cell; missing values show as `-`.

use serde_json::Value;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Render rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

pub fn list(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["clusters"]
        .as_array()
        .map(|clusters| {
            clusters
                .iter()
                .map(|c| {
                    ["id", "name", "phase", "webCount", "dbCount", "createdAt"]
                        .iter()
                        .map(|k| text(&c[*k]))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return "no clusters".into();
    }
    table(&["ID", "NAME", "PHASE", "WEB", "DB", "CREATED"], &rows)
}

pub fn conditions(cluster: &Value) -> String {
    let c = &cluster["conditions"];
    format!(
        "web running {} · web healthy {} · db running {}",
        text(&c["webInstancesRunning"]),
        text(&c["webTargetsHealthy"]),
        text(&c["dbInstancesRunning"])
    )
}

pub fn status(cluster: &Value) -> String {
    let mut out = vec![
        format!(
            "Cluster {} ({})  phase {}  step {}  generation {}",
            text(&cluster["id"]),
            text(&cluster["spec"]["name"]),
            text(&cluster["phase"]),
            text(&cluster["step"]),
            text(&cluster["generation"])
        ),
        conditions(cluster),
    ];
    if !cluster["latestBackup"].is_null() || !cluster["restorableUntil"].is_null() {
        out.push(format!(
            "latest backup {}  restorable until {}",
            if cluster["latestBackup"].is_null() {
                "-".to_string()
            } else {
                backup_line(&cluster["latestBackup"])
            },
            text(&cluster["restorableUntil"])
        ));
    }
    if let Some(error) = cluster["lastError"].as_object() {
        out.push(format!(
            "last error in {}: {}",
            error.get("phase").map(text).unwrap_or_default(),
            error.get("message").map(text).unwrap_or_default()
        ));
    }
    let nodes: Vec<Vec<String>> = cluster["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    [
                        "slot",
                        "tier",
                        "instanceId",
                        "state",
                        "availabilityZone",
                        "role",
                        "targetHealth",
                    ]
                    .iter()
                    .map(|k| text(&n[*k]))
                    .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    out.push(String::new());
    out.push(table(
        &[
            "SLOT", "TIER", "INSTANCE", "STATE", "ZONE", "ROLE", "TARGET",
        ],
        &nodes,
    ));
    let actions: Vec<Vec<String>> = cluster["recentActions"]
        .as_array()
        .map(|actions| {
            actions
                .iter()
                .rev()
                .take(8)
                .map(|a| {
                    ["at", "action", "detail"]
                        .iter()
                        .map(|k| text(&a[*k]))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    if !actions.is_empty() {
        out.push(String::new());
        out.push(table(&["AT", "ACTION", "DETAIL"], &actions));
    }
    out.join("\n")
}

/// One backup on one line: id, state, when, size, and the failure if any.
pub fn backup_line(backup: &Value) -> String {
    let mut line = format!(
        "{} {} {} {}",
        text(&backup["id"]),
        text(&backup["state"]),
        text(&backup["completedAt"]),
        size(&backup["bytes"])
    );
    if let Some(reason) = backup["failure"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

fn size(bytes: &Value) -> String {
    match bytes.as_u64() {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{b} B"),
    }
}

/// `GET /clusters/{id}/backups` as a table, newest first, then the point-in-time window.
pub fn backups(listing: &Value) -> String {
    let rows: Vec<Vec<String>> = listing["backups"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|b| {
                    vec![
                        text(&b["id"]),
                        text(&b["state"]),
                        text(&b["trigger"]),
                        text(&b["completedAt"]),
                        size(&b["bytes"]),
                        text(&b["gtidExecuted"]),
                        b["failure"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = if rows.is_empty() {
        "no backups".to_string()
    } else {
        table(
            &[
                "ID",
                "STATE",
                "TRIGGER",
                "COMPLETED",
                "SIZE",
                "GTID SET",
                "REASON",
            ],
            &rows,
        )
    };
    out.push_str(&format!(
        "\nrestorable until {}",
        text(&listing["restorableUntil"])
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_show_missing_values() {
        let rendered = table(
            &["SLOT", "ROLE"],
            &[
                vec!["web-0".into(), "-".into()],
                vec!["db-10".into(), "PRIMARY".into()],
            ],
        );
        assert_eq!(rendered, "SLOT   ROLE\nweb-0  -\ndb-10  PRIMARY");
    }

    #[test]
    fn status_shows_nodes_conditions_and_errors() {
        let cluster = json!({
            "id": "c-0123456789ab", "phase": "FAILED", "step": "wait-healthy", "generation": 1,
            "spec": {"name": "shop"},
            "conditions": {"webInstancesRunning": "2/2", "webTargetsHealthy": "0/2", "dbInstancesRunning": "3/3"},
            "lastError": {"phase": "wait-healthy", "message": "2 still waiting"},
            "nodes": [{"slot": "web-0", "tier": "web", "instanceId": "i-1", "state": "REGISTERED",
                       "availabilityZone": "us-east-1a", "role": null, "targetHealth": "unhealthy"}],
            "recentActions": [{"at": "t", "action": "RunInstances", "detail": "web-0 -> i-1"}]
        });
        let rendered = status(&cluster);
        assert!(rendered.contains("phase FAILED"), "{rendered}");
        assert!(rendered.contains("web healthy 0/2"), "{rendered}");
        assert!(
            rendered.contains("last error in wait-healthy: 2 still waiting"),
            "{rendered}"
        );
        assert!(rendered.contains("web-0  web   i-1"), "{rendered}");
        assert!(rendered.contains("RunInstances"), "{rendered}");
        assert_eq!(list(&json!({"clusters": []})), "no clusters");
    }

    #[test]
    fn backups_show_state_size_gtid_and_the_reason_of_a_failure() {
        let listing = json!({
            "restorableUntil": "2026-12-01T07:55:00Z",
            "backups": [
                {"id": "20261201T070000Z-00000002", "state": "FAILED", "trigger": "api",
                 "failure": "every database node refused the backup"},
                {"id": "20261201T063000Z-00000001", "state": "COMPLETED", "trigger": "schedule",
                 "completedAt": "2026-12-01T06:31:10Z", "bytes": 5_242_880, "gtidExecuted": "a:1-42"}
            ]
        });
        let rendered = backups(&listing);
        assert!(rendered.contains("5.0 MiB"), "{rendered}");
        assert!(rendered.contains("a:1-42"), "{rendered}");
        assert!(
            rendered.contains("every database node refused"),
            "{rendered}"
        );
        assert!(
            rendered.ends_with("restorable until 2026-12-01T07:55:00Z"),
            "{rendered}"
        );
        let first = rendered.lines().nth(1).unwrap();
        assert!(
            first.starts_with("20261201T070000Z-00000002"),
            "newest first: {rendered}"
        );
        assert!(backups(&json!({"backups": []})).starts_with("no backups"));
    }
}
