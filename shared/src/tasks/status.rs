//! What the `alb-target` Lambda target answers behind the stack's ALB:
//! - `/_health`: the ALB's health check of the target itself (no lookup, always fast);
//! - `/_status`: the cluster named by the request's host (`<name>.<domain>`) as JSON, or as a
//!   small HTML page when the client accepts HTML: nodes, health, the primary, recent actions;
//! - anything else: the maintenance page (503, `Retry-After`), which the listener serves when
//!   no cluster rule matches or no web target of a cluster is healthy.
//!
//! Rendering is pure (a request and the cluster in, a response out) so it is unit-tested
//! against the ALB events in `events/`; the function only looks the cluster up.

use crate::domain::cluster::{Cluster, Tier};
use aws_lambda_events::alb::{AlbTargetGroupRequest, AlbTargetGroupResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue};

/// What a request asks for, decided before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// `/_health`: the load balancer's own check of this function.
    Health,
    /// `/_status` of the cluster named by the host; `html` when the client accepts HTML.
    Status {
        /// The cluster the host names, if any.
        cluster_name: Option<String>,
        /// The client accepts HTML.
        html: bool,
    },
    /// The maintenance page a cluster's listener rule routes to while no web node is
    /// healthy.
    Maintenance {
        /// The cluster the host names, if any.
        cluster_name: Option<String>,
    },
}

/// The cluster a host name stands for: its first label (`shop.example.com` -> `shop`), when
/// that is a valid cluster name. The ALB's own DNS name (`…elb.amazonaws.com`) names none.
pub fn cluster_name_of_host(host: &str) -> Option<String> {
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.ends_with(".elb.amazonaws.com") || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let label = host.split('.').next().unwrap_or_default();
    crate::domain::spec::is_valid_name(label).then(|| label.to_string())
}

/// Decide what a request asks for from its path and headers, before any lookup.
pub fn wanted(request: &AlbTargetGroupRequest) -> Wanted {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let cluster_name = cluster_name_of_host(&header("host"));
    match request.path.as_deref().unwrap_or("/") {
        "/_health" => Wanted::Health,
        "/_status" | "/_status/" => Wanted::Status {
            cluster_name,
            html: header("accept").contains("text/html")
                && request.query_string_parameters.first("format") != Some("json"),
        },
        _ => Wanted::Maintenance { cluster_name },
    }
}

fn response(status: u16, content_type: &'static str, body: String) -> AlbTargetGroupResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    if status == 503 {
        headers.insert("retry-after", HeaderValue::from_static("30"));
    }
    let mut answer = AlbTargetGroupResponse::default();
    answer.status_code = i64::from(status);
    answer.status_description = Some(format!(
        "{status} {}",
        match status {
            200 => "OK",
            404 => "Not Found",
            503 => "Service Unavailable",
            _ => "Error",
        }
    ));
    answer.headers = headers;
    answer.body = Some(Body::Text(body));
    answer.is_base64_encoded = false;
    answer
}

/// The health answer: the function runs (it reads nothing, so it cannot be slow).
pub fn health() -> AlbTargetGroupResponse {
    response(200, "application/json", r#"{"status":"ok"}"#.into())
}

/// The status of `cluster` (looked up by the host's name); 404 when there is none.
pub fn status(name: Option<&str>, cluster: Option<&Cluster>, html: bool) -> AlbTargetGroupResponse {
    let Some(cluster) = cluster else {
        let message = match name {
            Some(name) => format!("no cluster is named {name}"),
            None => "send the request to <cluster-name>.<your domain> (a CNAME to the load balancer) to see that cluster's status".into(),
        };
        return response(
            404,
            "application/json",
            serde_json::json!({ "error": { "code": "NotFound", "message": message } }).to_string(),
        );
    };
    if !html {
        return response(
            200,
            "application/json",
            crate::tasks::api::cluster_view(cluster).to_string(),
        );
    }
    response(200, "text/html; charset=utf-8", status_html(cluster))
}

/// The page the listener falls back to: which cluster, and how many web targets are healthy.
pub fn maintenance(name: Option<&str>, cluster: Option<&Cluster>) -> AlbTargetGroupResponse {
    let detail = match cluster {
        Some(cluster) => {
            let web = cluster.nodes.iter().filter(|n| n.tier == Tier::Web);
            let healthy = web
                .clone()
                .filter(|n| n.target_health.as_deref() == Some("healthy"))
                .count();
            format!(
                "{} is {} with {healthy} of {} web servers healthy. The orchestrator is on it.",
                escape(&cluster.spec.name),
                cluster.phase.as_str(),
                web.count()
            )
        }
        None => match name {
            Some(name) => format!("No cluster named {} is served here.", escape(name)),
            None => "No cluster is served at this address.".into(),
        },
    };
    response(
        503,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\
             <body><h1>Back soon</h1><p>{detail}</p><p>Please retry in a minute.</p></body></html>"
        ),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn status_html(cluster: &Cluster) -> String {
    let cell = |value: Option<&str>| escape(value.unwrap_or("-"));
    let mut nodes: Vec<&crate::domain::cluster::Node> = cluster.nodes.iter().collect();
    nodes.sort_by(|a, b| (a.tier == Tier::Web, &a.slot).cmp(&(b.tier == Tier::Web, &b.slot)));
    let rows: String = nodes
        .iter()
        .map(|n| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&n.slot),
                n.tier.as_str(),
                cell(n.instance_id.as_deref()),
                n.state,
                cell(n.availability_zone.as_deref()),
                cell(n.role.as_deref()),
                cell(n.target_health.as_deref().or(n.member_state.as_deref())),
            )
        })
        .collect();
    let actions: String = cluster
        .actions
        .iter()
        .rev()
        .take(20)
        .map(|a| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&a.at),
                escape(&a.action),
                escape(&a.detail)
            )
        })
        .collect();
    let primary = cluster
        .nodes
        .iter()
        .find(|n| n.role.as_deref() == Some("PRIMARY"))
        .map(|n| format!("{} ({})", n.slot, n.instance_id.as_deref().unwrap_or("-")))
        .unwrap_or_else(|| "none".into());
    let error = cluster
        .last_error
        .as_ref()
        .map(|e| {
            format!(
                "<p class=\"error\">Last error in {}: {}</p>",
                escape(&e.phase),
                escape(&e.message)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} status</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;text-align:left}}.error{{color:#b00}}</style></head>\
         <body><h1>{name}</h1><p>Phase <b>{phase}</b>, step {step}, generation {generation}. Primary: <b>{primary}</b>.</p>{error}\
         <h2>Nodes</h2><table><tr><th>Slot</th><th>Tier</th><th>Instance</th><th>State</th><th>Zone</th><th>Role</th><th>Health</th></tr>{rows}</table>\
         <h2>Recent actions</h2><table><tr><th>At</th><th>Action</th><th>Detail</th></tr>{actions}</table></body></html>",
        name = escape(&cluster.spec.name),
        phase = cluster.phase.as_str(),
        step = escape(cluster.step.as_deref().unwrap_or("-")),
        generation = cluster.generation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cluster::{Action, Node, NodeState, Phase};

    fn event(name: &str) -> AlbTargetGroupRequest {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn cluster() -> Cluster {
        let spec = crate::domain::spec::ClusterSpec::from_request_body(
            br#"{"name":"shop","web":{"count":1,"instanceType":"t3.small"},"db":{"count":1,"instanceType":"r6i.large"}}"#,
        )
        .unwrap();
        let node = |slot: &str, tier, role: Option<&str>, health: Option<&str>| Node {
            slot: slot.into(),
            tier,
            instance_id: Some(format!("i-{slot}")),
            state: NodeState::Running,
            availability_zone: Some("us-east-1a".into()),
            subnet_id: None,
            role: role.map(str::to_string),
            target_health: health.map(str::to_string),
            host: None,
            member_state: role.map(|_| "ONLINE".to_string()),
            group_name: None,
            launch_token: None,
            updated_at: "2026-11-24T00:00:00Z".into(),
        };
        Cluster {
            id: "c-0123456789ab".into(),
            phase: Phase::Ready,
            step: Some("finish".into()),
            spec,
            generation: 2,
            version: 9,
            created_at: "2026-11-24T00:00:00Z".into(),
            updated_at: "2026-11-24T00:00:00Z".into(),
            last_error: None,
            target_group_arn: None,
            replacing: Vec::new(),
            nodes: vec![
                node("web-0", Tier::Web, None, Some("unhealthy")),
                node("db-0", Tier::Db, Some("PRIMARY"), None),
            ],
            actions: vec![Action {
                at: "2026-11-24T00:00:01Z".into(),
                action: "Ready".into(),
                detail: "<script>alert(1)</script>".into(),
                generation: 2,
            }],
        }
    }

    fn body(response: &AlbTargetGroupResponse) -> String {
        match &response.body {
            Some(Body::Text(text)) => text.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_health_check_event_is_answered_without_a_lookup() {
        let request = event("alb-health-check.json");
        assert_eq!(wanted(&request), Wanted::Health);
        assert_eq!(health().status_code, 200);
    }

    #[test]
    fn the_status_page_names_the_primary_and_escapes_what_it_shows() {
        let request = event("alb-status-page.json");
        // The sample is addressed to the load balancer's own name: no cluster.
        assert_eq!(
            wanted(&request),
            Wanted::Status {
                cluster_name: None,
                html: true
            }
        );
        let missing = status(None, None, true);
        assert_eq!(missing.status_code, 404);
        assert!(body(&missing).contains("<cluster-name>"));

        let page = status(Some("shop"), Some(&cluster()), true);
        assert_eq!(page.status_code, 200);
        let html = body(&page);
        assert!(html.contains("Primary: <b>db-0 (i-db-0)</b>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && !html.contains("<script>"),
            "{html}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&body(&status(Some("shop"), Some(&cluster()), false))).unwrap();
        assert_eq!(json["primary"], "i-db-0");
    }

    #[test]
    fn hosts_name_clusters_by_their_first_label() {
        assert_eq!(
            cluster_name_of_host("shop.example.com"),
            Some("shop".into())
        );
        assert_eq!(
            cluster_name_of_host("Shop.example.com:80"),
            Some("shop".into())
        );
        assert_eq!(
            cluster_name_of_host("ha-alb-1.us-east-1.elb.amazonaws.com"),
            None
        );
        assert_eq!(cluster_name_of_host("10.0.0.1"), None);
        assert_eq!(cluster_name_of_host("-bad-.example.com"), None);
    }

    #[test]
    fn other_paths_get_the_maintenance_page() {
        let mut request = event("alb-status-page.json");
        request.path = Some("/wp-admin/".into());
        request
            .headers
            .insert("host", HeaderValue::from_static("shop.example.com"));
        assert_eq!(
            wanted(&request),
            Wanted::Maintenance {
                cluster_name: Some("shop".into())
            }
        );
        let page = maintenance(Some("shop"), Some(&cluster()));
        assert_eq!(page.status_code, 503);
        assert_eq!(page.headers.get("retry-after").unwrap(), "30");
        assert!(
            body(&page).contains("0 of 1 web servers healthy"),
            "{}",
            body(&page)
        );
    }
}
