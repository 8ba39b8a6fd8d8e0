//! Fixtures for the end-to-end tests: a local cloud with the stack deployed, and an HTTP
//! client for its API. A missing tool or a failed step fails the test with the harness's
//! message (which step, what to run, the emulator's log tail): nothing is skipped.

use local_cloud::{LocalCloud, Stack, Tools};

/// Seconds since this test process started, for the progress lines (`[e2e +12.3s] ...`):
/// each test runs in its own process, so a failing test's log shows where its time went.
pub fn since_start() -> String {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    format!(
        "+{:.1}s",
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs_f64()
    )
}

/// Start the local cloud and deploy the built template as `stack`.
pub async fn deployed(stack: &str) -> (LocalCloud, Stack) {
    deployed_with(stack, &[]).await
}

/// [`deployed`] with template parameters set.
pub async fn deployed_with(stack: &str, parameters: &[(&str, &str)]) -> (LocalCloud, Stack) {
    since_start();
    let tools = Tools::locate().unwrap_or_else(|e| panic!("local cloud tools: {e}"));
    let started = std::time::Instant::now();
    let cloud = LocalCloud::start(&tools).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[e2e {}] fakecloud up at {} in {:?}",
        since_start(),
        cloud.endpoint(),
        started.elapsed()
    );
    let deployed = cloud
        .deploy_with(stack, parameters)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Every AWS request the functions make in this test is checked against their roles
    // when the test ends (fakecloud enforces IAM only for some services; see
    // `local_cloud::iam`).
    cloud.check_iam_on_drop();
    eprintln!(
        "[e2e {}] stack {} {} with {} resources after {:?}",
        since_start(),
        deployed.name,
        deployed.status,
        deployed.resources.len(),
        started.elapsed()
    );
    (cloud, deployed)
}

/// [`deployed`], plus the stand-in SSM agent that runs the database documents on the
/// instances (see `local_cloud::agent`): every test that creates a cluster needs it.
pub async fn deployed_with_agent(stack: &str) -> (LocalCloud, Stack, local_cloud::agent::SsmAgent) {
    deployed_with_agent_and(stack, &[]).await
}

/// [`deployed_with_agent`] with template parameters set.
pub async fn deployed_with_agent_and(
    stack: &str,
    parameters: &[(&str, &str)],
) -> (LocalCloud, Stack, local_cloud::agent::SsmAgent) {
    let (cloud, deployed) = deployed_with(stack, parameters).await;
    let agent = local_cloud::agent::SsmAgent::start(&cloud, &deployed.name)
        .await
        .unwrap_or_else(|e| panic!("start the SSM agent: {e}"));
    (cloud, deployed, agent)
}

/// [`deployed`], plus the SSM agent running the documents on real hosts: every instance a
/// command targets is a network namespace with a real MySQL 9.7 (see
/// `local_cloud::hosts`), on the stack's VPC CIDR.
pub async fn deployed_with_real_hosts(
    stack: &str,
) -> (LocalCloud, Stack, local_cloud::agent::SsmAgent) {
    deployed_with_real_hosts_and(stack, &[]).await
}

/// [`deployed_with_real_hosts`] with template parameters set. The stack's `VpcCidr` is a
/// block no other test running at the same time holds
/// ([`local_cloud::hosts::AddressSpace`]): the instances keep the addresses EC2 gives them,
/// and tests on real hosts can run side by side.
pub async fn deployed_with_real_hosts_and(
    stack: &str,
    parameters: &[(&str, &str)],
) -> (LocalCloud, Stack, local_cloud::agent::SsmAgent) {
    let vpc = local_cloud::hosts::AddressSpace::reserve()
        .unwrap_or_else(|e| panic!("an address block for the real hosts: {e}"));
    let mut parameters = parameters.to_vec();
    parameters.push(("VpcCidr", vpc.cidr()));
    let (cloud, deployed) = deployed_with(stack, &parameters).await;
    let agent = local_cloud::agent::SsmAgent::start_on_real_hosts(&cloud, &deployed.name, vpc)
        .await
        .unwrap_or_else(|e| panic!("start the SSM agent on real hosts: {e}"));
    (cloud, deployed, agent)
}

/// `GET url`, returning the status and the body parsed as JSON (panics with the raw body
/// when it is not JSON: every answer of the API must be).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("GET {url} -> {status}: body is not JSON ({e}): {text}"));
    eprintln!("[e2e {}] GET {url} -> {status} {body}", since_start());
    (status, body)
}

/// A sample event from `events/`, as a trigger would deliver it.
pub fn sample_event(name: &str) -> serde_json::Value {
    let path = local_cloud::project_root().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Any request with an optional JSON body and headers; returns status and JSON body.
pub async fn send_json(
    method: reqwest::Method,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let (status, json, _) = send_json_retrying(method, url, body, headers, 1).await;
    (status, json)
}

/// [`send_json`], sending again (up to `attempts` in all, with a growing pause) while the
/// answer is a 5xx, as any AWS client does; also returns how many 5xx were retried.
pub async fn send_json_retrying(
    method: reqwest::Method,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    attempts: u32,
) -> (u16, serde_json::Value, usize) {
    let client = reqwest::Client::new();
    let mut retried = 0;
    for attempt in 1..=attempts.max(1) {
        let mut request = client.request(method.clone(), url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status >= 500 && attempt < attempts {
            retried += 1;
            tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
            continue;
        }
        let json = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {url} -> {status}: body is not JSON ({e}): {text}")
        });
        return (status, json, retried);
    }
    unreachable!("the last attempt returns")
}

/// Poll `GET /clusters/{id}` until its phase is one of `phases`; returns the cluster.
pub async fn wait_for_phase(
    api: &str,
    id: &str,
    phases: &[&str],
    timeout: std::time::Duration,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut last_step = String::new();
    loop {
        let (status, body) = send_json(
            reqwest::Method::GET,
            &format!("{api}/clusters/{id}"),
            None,
            &[],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let phase = body["phase"].as_str().unwrap_or_default().to_string();
        let step = format!("{phase}/{}", body["step"].as_str().unwrap_or("-"));
        if step != last_step {
            eprintln!("[e2e {}] {id}: {step}", since_start());
            last_step = step;
        }
        if phases.contains(&phase.as_str()) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} did not reach {phases:?} within {timeout:?}; last seen:\n{body:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Poll `GET /clusters/{id}` until the cluster is READY at `generation` or later (a run
/// started by an event, an alarm or the API has finished), or FAILED; returns the cluster.
pub async fn wait_for_ready_at(api: &str, id: &str, generation: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let mut last = String::new();
    loop {
        let (status, cluster) = send_json(
            reqwest::Method::GET,
            &format!("{api}/clusters/{id}"),
            None,
            &[],
        )
        .await;
        assert_eq!(status, 200, "{cluster}");
        let now = format!(
            "{}/{} g{}",
            cluster["phase"].as_str().unwrap_or_default(),
            cluster["step"].as_str().unwrap_or("-"),
            cluster["generation"]
        );
        if now != last {
            eprintln!("[e2e {}] {id}: {now}", since_start());
            last = now;
        }
        let at = cluster["generation"].as_u64().unwrap_or_default();
        if cluster["phase"] == "FAILED" || (cluster["phase"] == "READY" && at >= generation) {
            return cluster;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not READY at g{generation}: {cluster:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The cluster's instances (by its tag) in any of `states`.
pub async fn cluster_instances(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    states: &[&str],
) -> Vec<aws_sdk_ec2::types::Instance> {
    use aws_sdk_ec2::types::Filter;
    let output = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:ha-orchestrator:cluster")
                .values(id)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    output
        .reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .collect()
}

/// Every EC2 state but `terminated`: an instance in one of these still exists.
pub const NOT_TERMINATED: [&str; 5] =
    ["pending", "running", "stopping", "stopped", "shutting-down"];

/// One instance's EC2 state name (empty when EC2 does not know it).
pub async fn instance_state(ec2: &aws_sdk_ec2::Client, instance_id: &str) -> String {
    ec2.describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("DescribeInstances")
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
        })
        .next()
        .unwrap_or_default()
}

/// DELETE the cluster (expecting 202) and wait until it is DELETED.
pub async fn delete_and_wait(api: &str, id: &str, timeout: std::time::Duration) {
    let (status, deleting) = send_json(
        reqwest::Method::DELETE,
        &format!("{api}/clusters/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, 202, "{deleting}");
    let gone = wait_for_phase(api, id, &["DELETED", "FAILED"], timeout).await;
    assert_eq!(gone["phase"], "DELETED", "{gone:#}");
}

/// The cluster's recent actions as `"<action> <detail>"` lines, oldest first.
pub fn action_lines(cluster: &serde_json::Value) -> Vec<String> {
    cluster["recentActions"]
        .as_array()
        .expect("recentActions")
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap_or_default(),
                a["detail"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Terminate an instance and publish the state-change event EC2 would (fakecloud's EC2
/// emits none); returns when the event was published (where a reaction time starts).
pub async fn lose_instance(cloud: &LocalCloud, instance_id: &str) -> std::time::SystemTime {
    let ec2 = aws_sdk_ec2::Client::new(&cloud.sdk_config().await);
    ec2.terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("TerminateInstances");
    let published = std::time::SystemTime::now();
    cloud
        .publish_event(
            "aws.ec2",
            "EC2 Instance State-change Notification",
            &serde_json::json!({"instance-id": instance_id, "state": "terminated"}),
            &[format!(
                "arn:aws:ec2:us-east-1:000000000000:instance/{instance_id}"
            )],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    published
}

/// Run the scheduled health sweep now: invoke `instance-events` with the schedule's event.
pub async fn invoke_sweep(cloud: &LocalCloud, stack: &Stack) -> local_cloud::Invocation {
    cloud
        .invoke(
            stack,
            "InstanceEventsFunction",
            &sample_event("schedule-sweep.json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `POST /clusters` with `body` and an Idempotency-Key; expects 202 and returns the id.
pub async fn create_cluster(api: &str, body: &str, idempotency_key: &str) -> String {
    let (status, created) = send_json(
        reqwest::Method::POST,
        &format!("{api}/clusters"),
        Some(body),
        &[("idempotency-key", idempotency_key)],
    )
    .await;
    assert_eq!(status, 202, "{created}");
    created["id"].as_str().expect("id").to_string()
}
