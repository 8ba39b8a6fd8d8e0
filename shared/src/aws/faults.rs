//! Fault injection below the AWS SDK, for the chaos tests: off unless `HA_FAULTS` is set.
//!
//! `HA_FAULTS="rate=0.2;seed=7;kinds=throttle,5xx,timeout,drop,crash;services=ec2,elasticloadbalancing"`
//!
//! - `rate`: the share of requests that fail (0 to 1); `seed`: the random sequence (mixed
//!   with the process id, so a restarted function does not replay the faults that crashed
//!   it: runs repeat in their mix of faults, not call for call); `kinds` and `services` (SigV4 signing names: `ec2`,
//!   `elasticloadbalancing`, `dynamodb`, `states`, `ssm`, `s3`, `secretsmanager`,
//!   `monitoring`) narrow it; both default to all.
//! - `throttle`: the service's own throttling error (RequestLimitExceeded for EC2,
//!   Throttling for ELBv2, ThrottlingException for the JSON services, SlowDown for S3),
//!   answered without sending the request. `5xx`: a 503, not sent. `timeout`: the
//!   connection times out before sending. `drop`: the request IS sent and executed, and its
//!   answer is lost (the case that turns a naive retry of RunInstances into two instances).
//!   `crash` (only when asked for): the request is sent and answered, then the process
//!   aborts, as a function killed between two AWS calls would; the Lambda runtime reports
//!   `Runtime.ExitError` and the workflow retries the task.
//!
//! It wraps the HTTP client of the SDK configuration (an interceptor cannot answer a request
//! in the service's place), so every client built from that configuration gets it and the
//! SDK's standard retry (exponential backoff with jitter) sits above it and sees exactly
//! what it would see from AWS. Every injected fault is logged (`fault injected`, with the
//! service, operation and kind), which is how the chaos report counts them.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// The variable that turns fault injection on.
pub const FAULTS_ENV: &str = "HA_FAULTS";

/// One way a request fails; what `kinds` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FaultKind {
    /// The service's throttling error, without sending the request.
    Throttle,
    /// A 503, without sending the request (`5xx`).
    ServerError,
    /// The connection times out before the request is sent.
    Timeout,
    /// The request is sent and executed; its answer is lost.
    Drop,
    /// The request is answered, then the process aborts.
    Crash,
}

impl FaultKind {
    const ALL: [FaultKind; 5] = [
        FaultKind::Throttle,
        FaultKind::ServerError,
        FaultKind::Timeout,
        FaultKind::Drop,
        FaultKind::Crash,
    ];
    /// What `kinds` defaults to: everything but `crash`, which kills the process.
    const DEFAULT: [FaultKind; 4] = [
        FaultKind::Throttle,
        FaultKind::ServerError,
        FaultKind::Timeout,
        FaultKind::Drop,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FaultKind::Throttle => "throttle",
            FaultKind::ServerError => "5xx",
            FaultKind::Timeout => "timeout",
            FaultKind::Drop => "drop",
            FaultKind::Crash => "crash",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What to inject, parsed from `HA_FAULTS`.
#[derive(Debug, Clone, PartialEq)]
struct FaultPlan {
    /// The share of requests that fail, 0 to 1.
    pub rate: f64,
    /// Fixes the mix of faults (mixed with the process id, see [`with_plan`]).
    pub seed: u64,
    /// The faults to draw from.
    pub kinds: Vec<FaultKind>,
    /// Signing names; empty means every service.
    pub services: Vec<String>,
}

impl FaultPlan {
    fn parse(text: &str) -> crate::Result<Self> {
        let invalid = |reason: String| crate::Error::InvalidConfig {
            name: FAULTS_ENV,
            value: text.to_string(),
            reason,
        };
        let mut plan = FaultPlan {
            rate: 0.0,
            seed: 0,
            kinds: FaultKind::DEFAULT.to_vec(),
            services: Vec::new(),
        };
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("`{part}` is not key=value")))?;
            match key.trim() {
                "rate" => {
                    plan.rate = value
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| invalid(format!("rate `{value}` is not from 0 to 1")))?;
                }
                "seed" => {
                    plan.seed = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid(format!("seed `{value}` is not a whole number")))?;
                }
                "kinds" => {
                    plan.kinds = value
                        .split(',')
                        .map(|k| {
                            FaultKind::parse(k.trim()).ok_or_else(|| {
                                invalid(format!(
                                    "kind `{k}` is not one of throttle, 5xx, timeout, drop, crash"
                                ))
                            })
                        })
                        .collect::<crate::Result<_>>()?;
                }
                "services" => {
                    plan.services = value.split(',').map(|s| s.trim().to_string()).collect();
                }
                other => {
                    return Err(invalid(format!(
                        "unknown key `{other}` (use rate, seed, kinds, services)"
                    )));
                }
            }
        }
        if plan.kinds.is_empty() {
            return Err(invalid("no fault kinds".into()));
        }
        Ok(plan)
    }

    /// `HA_FAULTS`, or `None` when unset or empty (the production default).
    fn from_env() -> crate::Result<Option<Self>> {
        match std::env::var(FAULTS_ENV) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text).map(Some),
            _ => Ok(None),
        }
    }
}

/// Decides, request by request, whether and how to fail (one seeded sequence per process).
#[derive(Debug)]
struct Dice {
    plan: FaultPlan,
    rng: Mutex<fastrand::Rng>,
}

impl Dice {
    fn roll(&self, service: &str) -> Option<FaultKind> {
        if !self.plan.services.is_empty() && !self.plan.services.iter().any(|s| s == service) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if rng.f64() >= self.plan.rate {
            return None;
        }
        Some(self.plan.kinds[rng.usize(..self.plan.kinds.len())])
    }
}

/// The HTTP client of an SDK configuration, with faults.
#[derive(Debug, Clone)]
struct FaultyHttpClient {
    inner: SharedHttpClient,
    dice: Arc<Dice>,
}

impl FaultyHttpClient {
    fn new(inner: SharedHttpClient, plan: FaultPlan) -> Self {
        let rng = fastrand::Rng::with_seed(plan.seed);
        Self {
            inner,
            dice: Arc::new(Dice {
                plan,
                rng: Mutex::new(rng),
            }),
        }
    }
}

impl HttpClient for FaultyHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            dice: self.dice.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    dice: Arc<Dice>,
}

/// The SigV4 signing name of a request (`…/us-east-1/ec2/aws4_request`).
pub(crate) fn signing_name(request: &HttpRequest) -> String {
    request
        .headers()
        .get("authorization")
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|credential| credential.split('/').nth(3))
        .unwrap_or("unknown")
        .to_string()
}

/// The operation: the JSON protocols' `X-Amz-Target`, the query protocols' `Action=`, the
/// CBOR protocol's `/service/<service>/operation/<operation>` path.
pub(crate) fn operation_name(request: &HttpRequest) -> String {
    if let Some(target) = request.headers().get("x-amz-target") {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    if let Some((_, operation)) = request.uri().split_once("/operation/") {
        return operation
            .split(['?', '/'])
            .next()
            .unwrap_or(operation)
            .to_string();
    }
    let body = request.body().bytes().unwrap_or_default();
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_string)
        .unwrap_or_else(|| request.method().to_string())
}

/// The service's own throttling answer, as its protocol spells it.
fn throttling_response(service: &str) -> HttpResponse {
    let (status, content_type, body, error_type) = match service {
        "ec2" => (
            503,
            "text/xml",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded (injected).</Message></Error></Errors><RequestID>injected-fault</RequestID></Response>".to_string(),
            None,
        ),
        "elasticloadbalancing" => (
            400,
            "text/xml",
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded (injected)</Message></Error><RequestId>injected-fault</RequestId></ErrorResponse>".to_string(),
            None,
        ),
        "s3" => (
            503,
            "application/xml",
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected).</Message></Error>".to_string(),
            None,
        ),
        // CloudWatch speaks CBOR: a bare 503 is what its clients retry.
        "monitoring" => (503, "text/plain", String::new(), None),
        _ => (
            400,
            "application/x-amz-json-1.0",
            "{\"__type\":\"ThrottlingException\",\"message\":\"Rate exceeded (injected)\"}"
                .to_string(),
            Some("ThrottlingException"),
        ),
    };
    let mut response = HttpResponse::new(
        status
            .try_into()
            .unwrap_or_else(|_| 503u16.try_into().expect("503")),
        SdkBody::from(body),
    );
    response.headers_mut().insert("content-type", content_type);
    if let Some(error_type) = error_type {
        response
            .headers_mut()
            .insert("x-amzn-errortype", error_type);
    }
    response
}

fn injected(kind: FaultKind) -> Box<dyn std::error::Error + Send + Sync> {
    format!("injected fault: {}", kind.as_str()).into()
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = signing_name(&request);
        let Some(kind) = self.dice.roll(&service) else {
            return self.inner.call(request);
        };
        let operation = operation_name(&request);
        tracing::warn!(service = %service, operation = %operation, kind = kind.as_str(), "fault injected");
        match kind {
            FaultKind::Throttle => HttpConnectorFuture::ready(Ok(throttling_response(&service))),
            FaultKind::ServerError => HttpConnectorFuture::ready(Ok(HttpResponse::new(
                503u16.try_into().expect("503 is a status"),
                SdkBody::empty(),
            ))),
            FaultKind::Timeout => {
                HttpConnectorFuture::ready(Err(ConnectorError::timeout(injected(kind))))
            }
            FaultKind::Drop => {
                let sent = self.inner.call(request);
                HttpConnectorFuture::new(async move {
                    // The service acts on the request; only its answer is lost.
                    let _ = sent.await;
                    Err(ConnectorError::io(injected(kind)))
                })
            }
            FaultKind::Crash => {
                let sent = self.inner.call(request);
                HttpConnectorFuture::new(async move {
                    // The call takes effect; the process dies before it can use the answer.
                    let _ = sent.await;
                    tracing::error!("injected crash: the process aborts now");
                    std::process::abort()
                })
            }
        }
    }
}

/// The configuration's HTTP client, to be wrapped. aws-config leaves it unset, and each
/// client then builds the SDK's default; build that same default here (hyper 1, rustls with
/// aws-lc).
pub(crate) fn http_client_of(config: &aws_config::SdkConfig) -> SharedHttpClient {
    config.http_client().unwrap_or_else(|| {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .build_https()
    })
}

/// The SDK configuration with faults when `HA_FAULTS` asks for them; unchanged otherwise.
pub fn with_faults(config: aws_config::SdkConfig) -> crate::Result<aws_config::SdkConfig> {
    Ok(match FaultPlan::from_env()? {
        Some(plan) => with_plan(config, plan),
        None => config,
    })
}

/// The configuration with its HTTP client wrapped by `plan`'s faults.
fn with_plan(config: aws_config::SdkConfig, mut plan: FaultPlan) -> aws_config::SdkConfig {
    // Each process draws its own sequence: a function restarted after an injected crash
    // must not replay the very sequence that crashed it. The seed still fixes the mix.
    plan.seed ^= u64::from(std::process::id()).rotate_left(32);
    let inner = http_client_of(&config);
    tracing::warn!(
        ?plan,
        "fault injection is ON ({FAULTS_ENV}); never set it in production"
    );
    config
        .into_builder()
        .http_client(FaultyHttpClient::new(inner, plan))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_refuse_nonsense_with_the_fix() {
        let plan = FaultPlan::parse("rate=0.2; seed=7; kinds=throttle,drop; services=ec2").unwrap();
        assert_eq!(plan.rate, 0.2);
        assert_eq!(plan.seed, 7);
        assert_eq!(plan.kinds, vec![FaultKind::Throttle, FaultKind::Drop]);
        assert_eq!(plan.services, vec!["ec2".to_string()]);
        let defaults = FaultPlan::parse("rate=1").unwrap();
        assert_eq!(
            defaults.kinds,
            FaultKind::DEFAULT.to_vec(),
            "crash only when asked"
        );
        let crash = FaultPlan::parse("rate=1;kinds=crash").unwrap();
        assert_eq!(crash.kinds, vec![FaultKind::Crash]);
        for bad in ["rate=2", "seed=x", "kinds=flood", "colour=red", "rate"] {
            let err = FaultPlan::parse(bad).unwrap_err().to_string();
            assert!(err.contains(FAULTS_ENV), "{bad}: {err}");
        }
    }

    #[test]
    fn the_same_seed_fails_the_same_requests() {
        let sequence = |seed| {
            let dice = Dice {
                plan: FaultPlan::parse(&format!("rate=0.3;seed={seed}")).unwrap(),
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            };
            (0..200).map(|_| dice.roll("ec2")).collect::<Vec<_>>()
        };
        assert_eq!(sequence(7), sequence(7));
        assert_ne!(sequence(7), sequence(8));
        let failed = sequence(7).iter().filter(|f| f.is_some()).count();
        assert!((30..=90).contains(&failed), "{failed} of 200 at rate 0.3");
    }

    /// Stands in for EC2: answers every RunInstances with one instance, and keeps the
    /// ClientToken of every request that reached it.
    #[derive(Debug, Clone, Default)]
    struct RecordingEc2 {
        tokens: Arc<Mutex<Vec<String>>>,
    }

    impl HttpClient for RecordingEc2 {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    impl HttpConnector for RecordingEc2 {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body =
                String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned();
            let token = body
                .split('&')
                .find_map(|pair| pair.strip_prefix("ClientToken="))
                .unwrap_or_default()
                .to_string();
            self.tokens.lock().unwrap().push(token);
            let xml = "<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r</requestId><reservationId>r-1</reservationId><instancesSet><item><instanceId>i-0123456789abcdef0</instanceId></item></instancesSet></RunInstancesResponse>";
            HttpConnectorFuture::ready(Ok(HttpResponse::new(
                200u16.try_into().unwrap(),
                SdkBody::from(xml),
            )))
        }
    }

    /// A seed whose first roll fails and whose second does not, so exactly one attempt is
    /// faulted and the SDK's retry goes through.
    fn seed_failing_first_attempt_only(plan: &str) -> u64 {
        (0..10_000)
            .find(|seed| {
                let dice = Dice {
                    plan: FaultPlan::parse(plan).unwrap(),
                    rng: Mutex::new(fastrand::Rng::with_seed(*seed)),
                };
                dice.roll("ec2").is_some() && dice.roll("ec2").is_none()
            })
            .expect("a seed")
    }

    async fn launch_through_faults(
        kind: &str,
    ) -> (crate::Result<crate::aws::fleet::Launched>, Vec<String>) {
        let rule = format!("rate=0.5;kinds={kind}");
        let seed = seed_failing_first_attempt_only(&rule);
        let ec2 = RecordingEc2::default();
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            // The SDK's standard retry, as in production, without the waiting.
            .retry_config(
                aws_sdk_ec2::config::retry::RetryConfig::standard()
                    .with_initial_backoff(std::time::Duration::from_millis(1)),
            )
            .http_client(FaultyHttpClient::new(
                SharedHttpClient::new(ec2.clone()),
                FaultPlan::parse(&format!("{rule};seed={seed}")).unwrap(),
            ))
            .build();
        let fleet = crate::aws::fleet::Fleet::new(
            aws_sdk_ec2::Client::from_conf(config),
            crate::mocked_client!(aws_sdk_ssm, []),
            crate::aws::fleet::FleetSettings {
                web_launch_template: "lt-web".into(),
                db_launch_template: "lt-db".into(),
                ami_parameter: "/ami".into(),
                default_subnets: vec!["subnet-a".into()],
            },
        );
        let subnet = crate::domain::plan::Subnet {
            id: "subnet-a".into(),
            availability_zone: "us-east-1a".into(),
        };
        let launched = fleet
            .launch(
                &crate::aws::fleet::LaunchRequest {
                    user_data: None,
                    cluster_id: "c-0123456789ab",
                    cluster_name: "shop",
                    client_token: "c-0123456789ab-web-0-00000000000000aa",
                    slot: crate::domain::cluster::Slot {
                        tier: crate::domain::cluster::Tier::Web,
                        index: 0,
                    },
                    subnet: &subnet,
                    instance_type: "t3.small",
                },
                "ami-1",
            )
            .await;
        let tokens = ec2.tokens.lock().unwrap().clone();
        (launched, tokens)
    }

    #[tokio::test]
    async fn a_throttled_launch_is_retried_and_reaches_ec2_once() {
        let (launched, tokens) = launch_through_faults("throttle").await;
        assert_eq!(
            launched.expect("launched after a retry"),
            crate::aws::fleet::Launched::Instance("i-0123456789abcdef0".into())
        );
        assert_eq!(
            tokens.len(),
            1,
            "the throttled attempt never reached EC2: {tokens:?}"
        );
    }

    #[tokio::test]
    async fn a_launch_whose_answer_was_lost_is_retried_with_the_same_client_token() {
        // EC2 ran the first attempt; only its answer was lost. The retry reaches EC2 again,
        // and carries the same ClientToken, which is what makes AWS answer it with the
        // instance it already launched instead of a second one.
        let (launched, tokens) = launch_through_faults("drop").await;
        assert_eq!(
            launched.expect("launched after a retry"),
            crate::aws::fleet::Launched::Instance("i-0123456789abcdef0".into())
        );
        assert_eq!(tokens.len(), 2, "{tokens:?}");
        assert!(!tokens[0].is_empty(), "RunInstances without a ClientToken");
        assert_eq!(tokens[0], tokens[1], "the retry must reuse the ClientToken");
    }

    #[test]
    fn a_configuration_without_a_client_gets_the_faulty_default() {
        // What aws-config hands over: no HTTP client set.
        let plain = aws_config::SdkConfig::builder().build();
        assert!(plain.http_client().is_none());
        let faulty = with_plan(plain, FaultPlan::parse("rate=1").unwrap());
        let client = faulty.http_client().expect("an HTTP client");
        assert!(
            format!("{client:?}").contains("FaultyHttpClient"),
            "{client:?}"
        );
    }

    #[test]
    fn other_services_are_left_alone() {
        let dice = Dice {
            plan: FaultPlan::parse("rate=1;services=ec2").unwrap(),
            rng: Mutex::new(fastrand::Rng::with_seed(1)),
        };
        assert!(dice.roll("ec2").is_some());
        assert!(dice.roll("dynamodb").is_none());
    }
}
