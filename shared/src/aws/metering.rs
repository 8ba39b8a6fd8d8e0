//! One debug line per AWS request a function sends (`aws call`, target
//! `orchestrator::metering`, see [`TARGET`]): service, operation, when it was sent, how long it took, the
//! answer's status and, for DynamoDB, how many items it read or wrote. Off unless the log
//! filter enables that target (`RUST_LOG=info,orchestrator::metering=debug`, the template's
//! `LogLevel`), and then it costs one log line per request.
//!
//! Each line also carries `scope`: the request's parameters that IAM authorises by (table,
//! bucket and key, instance, document, secret, alarm, target group, tags sent...), as a
//! compact JSON object, never a payload (no item, secret value, script or user data). The
//! local cloud's IAM coverage check (`local_cloud::iam`) derives each call's IAM actions and
//! resources from it and proves the function's role allows them.
//!
//! It is what `make bench` counts calls, DynamoDB units and reaction times from, and what an
//! operator can turn on in production to see what the orchestration costs (CloudWatch Logs
//! Insights: `filter message = "aws call" | stats count() by service, operation`). Each SDK
//! retry is its own line: that is what AWS bills and throttles.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::aws::faults::{http_client_of, operation_name, signing_name};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// The tracing target of the `aws call` lines. A name operators put in `LogLevel`
/// (template.yaml) and the bench and IAM audit filter on, so it stays as it was when this
/// module sat at the crate root: it is a log contract, not the module's path.
pub const TARGET: &str = "orchestrator::metering";

/// Whether the log filter asks for the `aws call` lines.
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::DEBUG)
}

/// The configuration with its HTTP client metered when [`enabled`]; unchanged otherwise,
/// so production runs the SDK's own client unless someone asks for the lines.
pub fn with_metering(config: aws_config::SdkConfig) -> aws_config::SdkConfig {
    if !enabled() {
        return config;
    }
    let inner = http_client_of(&config);
    config
        .into_builder()
        .http_client(MeteredHttpClient::new(inner))
        .build()
}

/// The HTTP client of an SDK configuration, logging every request.
#[derive(Debug, Clone)]
struct MeteredHttpClient {
    inner: SharedHttpClient,
}

impl MeteredHttpClient {
    fn new(inner: SharedHttpClient) -> Self {
        Self { inner }
    }
}

impl HttpClient for MeteredHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(MeteredConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct MeteredConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for MeteredConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = signing_name(&request);
        let operation = operation_name(&request);
        let scope = request_scope(
            &service,
            request.method(),
            request.uri(),
            request.headers().get("host"),
            request.body().bytes().unwrap_or_default(),
        )
        .to_string();
        let items = if service == "dynamodb" {
            dynamodb_items(&operation, request.body().bytes().unwrap_or_default())
        } else {
            0
        };
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let started = Instant::now();
        let sent = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let answer = sent.await;
            let status = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            tracing::debug!(
                target: TARGET,
                service = %service,
                operation = %operation,
                at_ms,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                status = %status,
                items,
                scope = %scope,
                "aws call"
            );
            answer
        })
    }
}

/// How many items a DynamoDB request reads or writes: the entries of a transaction or a
/// batch, one for the single-item operations and for a Query or Scan (which read one page;
/// its size in 4 KB units is not known before the answer).
pub fn dynamodb_items(operation: &str, body: &[u8]) -> usize {
    let entries = |field: &str| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| match v.get(field)? {
                serde_json::Value::Array(list) => Some(list.len()),
                // BatchWriteItem / BatchGetItem: a map of table -> requests (or -> Keys).
                serde_json::Value::Object(tables) => Some(
                    tables
                        .values()
                        .map(|t| match t {
                            serde_json::Value::Array(list) => list.len(),
                            other => other
                                .get("Keys")
                                .and_then(|k| k.as_array())
                                .map_or(0, Vec::len),
                        })
                        .sum(),
                ),
                _ => None,
            })
            .unwrap_or(1)
    };
    match operation {
        "TransactWriteItems" | "TransactGetItems" => entries("TransactItems"),
        "BatchWriteItem" | "BatchGetItem" => entries("RequestItems"),
        _ => 1,
    }
}

/// Top-level request members (JSON and CBOR protocols) that name what IAM authorises: the
/// resource, or a condition key's value (tags sent). Everything else (items, secret values,
/// scripts, parameters of commands) stays out of the log.
const SCOPE_MEMBERS: &[&str] = &[
    // DynamoDB
    "TableName",
    "IndexName",
    // SSM
    "Name",
    "Names",
    "DocumentName",
    "InstanceIds",
    "InstanceId",
    "CommandId",
    // Step Functions
    "stateMachineArn",
    "executionArn",
    // Secrets Manager (`Name` above for CreateSecret)
    "SecretId",
    // CloudWatch
    "AlarmName",
    "AlarmNames",
    "AlarmNamePrefix",
    "ResourceARN",
    // Tags sent (aws:RequestTag/*), here and in Secrets Manager.
    "Tags",
];

/// Query-protocol parameters (EC2, ELBv2) that name what IAM authorises, by prefix of the
/// flattened member name (`InstanceId.1`, `TagSpecification.1.Tag.2.Key`, ...).
const SCOPE_PARAMETERS: &[&str] = &[
    "InstanceId",
    "SubnetId",
    "ImageId",
    "SecurityGroupId",
    "LaunchTemplate.",
    "TagSpecification.",
    "Name",
    "TargetGroupArn",
    "ListenerArn",
    "RuleArn",
    "LoadBalancerArn",
    "ResourceArns.",
    "Tags.",
];

/// The parameters of a request that IAM authorises by (see [`SCOPE_MEMBERS`]), as a JSON
/// object: for S3 the bucket, key and query from the URL (path style, or the bucket in the
/// host name); for the JSON and CBOR services the listed members, DynamoDB's batches and
/// transactions reduced to the table each entry names; for the query services the listed
/// form parameters. Empty when nothing applies.
pub fn request_scope(
    service: &str,
    method: &str,
    uri: &str,
    host: Option<&str>,
    body: &[u8],
) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut scope = Map::new();
    match service {
        "s3" => {
            let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
            let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
            let authority = after_scheme.split('/').next().unwrap_or_default();
            let host = host.unwrap_or(authority);
            let (path, query) = path_and_query
                .split_once('?')
                .unwrap_or((path_and_query, ""));
            let path = path.trim_start_matches('/');
            // Virtual-hosted style names the bucket in the host; path style in the path.
            let hosted = host
                .split_once(".s3.")
                .map(|(bucket, _)| bucket.to_string());
            let (bucket, key) = match hosted {
                Some(bucket) => (bucket, path.to_string()),
                None => match path.split_once('/') {
                    Some((b, k)) => (b.to_string(), k.to_string()),
                    None => (path.to_string(), String::new()),
                },
            };
            scope.insert("method".into(), Value::from(method));
            scope.insert("bucket".into(), Value::from(percent_decode(&bucket)));
            scope.insert("key".into(), Value::from(percent_decode(&key)));
            let query: Map<String, Value> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (form_decode(k), Value::from(form_decode(v)))
                })
                .collect();
            scope.insert("query".into(), Value::Object(query));
        }
        "ec2" | "elasticloadbalancing" => {
            for pair in String::from_utf8_lossy(body).split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = form_decode(k);
                let listed = |p: &&str| match p.strip_suffix('.') {
                    Some(_) => k.starts_with(*p),
                    None => k == *p || k.strip_prefix(*p).is_some_and(|r| r.starts_with('.')),
                };
                if SCOPE_PARAMETERS.iter().any(listed) {
                    scope.insert(k, Value::from(form_decode(v)));
                }
            }
        }
        _ => {
            let parsed = if service == "monitoring" {
                cbor_to_json(body)
            } else {
                serde_json::from_slice::<Value>(body).ok()
            };
            if let Some(Value::Object(members)) = parsed {
                for name in SCOPE_MEMBERS {
                    if let Some(value) = members.get(*name) {
                        scope.insert((*name).to_string(), value.clone());
                    }
                }
                if let Some(Value::Array(entries)) = members.get("TransactItems") {
                    // Each entry is authorised as its own item action on its table.
                    let reduced: Vec<Value> = entries
                        .iter()
                        .filter_map(|entry| {
                            let (kind, body) = entry.as_object()?.iter().next()?;
                            Some(serde_json::json!({kind: body.get("TableName")}))
                        })
                        .collect();
                    scope.insert("TransactItems".into(), Value::Array(reduced));
                }
                if let Some(Value::Object(tables)) = members.get("RequestItems") {
                    let names: Vec<Value> =
                        tables.keys().map(|t| Value::from(t.as_str())).collect();
                    scope.insert("RequestItems".into(), Value::Array(names));
                }
            }
        }
    }
    Value::Object(scope)
}

/// `%XX` decoding of a URL component (lossy on invalid UTF-8).
fn percent_decode(text: &str) -> String {
    decode(text, false)
}

/// `%XX` and `+` decoding of a form (`application/x-www-form-urlencoded`) component.
fn form_decode(text: &str) -> String {
    decode(text, true)
}

fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CBOR document (RFC 8949; Smithy RPC v2 CBOR, which CloudWatch speaks) as JSON: maps,
/// arrays, text and byte strings, integers, floats, booleans and null, definite or
/// indefinite length. Tags are read through. `None` when the bytes are not one such item.
pub fn cbor_to_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let mut reader = Cbor { bytes, at: 0 };
    let value = reader.item()?;
    (reader.at == bytes.len()).then_some(value)
}

struct Cbor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cbor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    /// The argument of an initial byte: `None` for the indefinite-length marker (31).
    fn argument(&mut self, info: u8) -> Option<Option<u64>> {
        let be = |s: &[u8]| s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Some(Some(match info {
            0..=23 => u64::from(info),
            24 => be(self.take(1)?),
            25 => be(self.take(2)?),
            26 => be(self.take(4)?),
            27 => be(self.take(8)?),
            31 => return Some(None),
            _ => return None,
        }))
    }

    fn at_break(&self) -> bool {
        self.bytes.get(self.at) == Some(&0xff)
    }

    fn string(&mut self, major: u8, info: u8) -> Option<Vec<u8>> {
        match self.argument(info)? {
            Some(len) => Some(self.take(usize::try_from(len).ok()?)?.to_vec()),
            None => {
                let mut out = Vec::new();
                while !self.at_break() {
                    let initial = self.byte()?;
                    if initial >> 5 != major {
                        return None;
                    }
                    out.extend(self.string(major, initial & 0x1f)?);
                }
                self.at += 1;
                Some(out)
            }
        }
    }

    fn item(&mut self) -> Option<serde_json::Value> {
        use serde_json::Value;
        let initial = self.byte()?;
        let (major, info) = (initial >> 5, initial & 0x1f);
        Some(match major {
            0 => Value::from(self.argument(info)??),
            1 => Value::from(-1 - i128::from(self.argument(info)??) as i64),
            2 => Value::from(
                self.string(major, info)?
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>(),
            ),
            3 => Value::from(String::from_utf8(self.string(major, info)?).ok()?),
            4 => {
                let mut list = Vec::new();
                match self.argument(info)? {
                    Some(n) => {
                        for _ in 0..n {
                            list.push(self.item()?);
                        }
                    }
                    None => {
                        while !self.at_break() {
                            list.push(self.item()?);
                        }
                        self.at += 1;
                    }
                }
                Value::Array(list)
            }
            5 => {
                let mut map = serde_json::Map::new();
                let mut entry = |reader: &mut Self| -> Option<()> {
                    let key = match reader.item()? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let value = reader.item()?;
                    map.insert(key, value);
                    Some(())
                };
                match self.argument(info)? {
                    Some(n) => {
                        for _ in 0..n {
                            entry(self)?;
                        }
                    }
                    None => {
                        while !self.at_break() {
                            entry(self)?;
                        }
                        self.at += 1;
                    }
                }
                Value::Object(map)
            }
            6 => {
                self.argument(info)??;
                self.item()?
            }
            _ => match info {
                20 => Value::Bool(false),
                21 => Value::Bool(true),
                22 | 23 => Value::Null,
                25 => {
                    let half = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
                    Value::from(half_to_f64(half))
                }
                26 => Value::from(f64::from(f32::from_be_bytes(
                    self.take(4)?.try_into().ok()?,
                ))),
                27 => Value::from(f64::from_be_bytes(self.take(8)?.try_into().ok()?)),
                _ => return None,
            },
        })
    }
}

/// IEEE 754 half precision to f64 (RFC 8949 appendix D).
fn half_to_f64(half: u16) -> f64 {
    let exponent = i32::from((half >> 10) & 0x1f);
    let mantissa = f64::from(half & 0x3ff);
    let magnitude = match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (mantissa + 1024.0) * 2f64.powi(e - 25),
    };
    if half & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The target is a contract with operators: the template's `LogLevel` and the README
    /// tell them to set `<target>=debug`, so moving this module must not rename it.
    #[test]
    fn the_target_is_the_one_the_template_and_readme_document() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["template.yaml", "README.md"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            assert!(
                text.contains(&format!("{TARGET}=debug")),
                "{file} documents no `{TARGET}=debug`"
            );
        }
    }

    #[test]
    fn transactions_and_batches_count_their_items() {
        let transaction = br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}}]}"#;
        assert_eq!(dynamodb_items("TransactWriteItems", transaction), 3);
        let batch = br#"{"RequestItems":{"t":[{"PutRequest":{}},{"PutRequest":{}}]}}"#;
        assert_eq!(dynamodb_items("BatchWriteItem", batch), 2);
        let get = br#"{"RequestItems":{"t":{"Keys":[{},{},{},{}]}}}"#;
        assert_eq!(dynamodb_items("BatchGetItem", get), 4);
        assert_eq!(dynamodb_items("GetItem", b"{}"), 1);
        assert_eq!(dynamodb_items("TransactWriteItems", b"not json"), 1);
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn s3_scope_is_bucket_key_and_query_in_either_url_style() {
        let path = request_scope(
            "s3",
            "GET",
            "http://127.0.0.1:4566/out-bucket/commands/c%201/i-1/stdout?x-id=GetObject",
            Some("127.0.0.1:4566"),
            b"",
        );
        assert_eq!(
            path,
            json!({"method": "GET", "bucket": "out-bucket", "key": "commands/c 1/i-1/stdout",
                   "query": {"x-id": "GetObject"}})
        );
        let hosted = request_scope(
            "s3",
            "GET",
            "https://out-bucket.s3.us-east-1.amazonaws.com/?list-type=2&prefix=commands%2Fc1%2F",
            None,
            b"",
        );
        assert_eq!(hosted["bucket"], "out-bucket");
        assert_eq!(hosted["key"], "");
        assert_eq!(hosted["query"]["prefix"], "commands/c1/");
    }

    #[test]
    fn json_scope_keeps_only_what_iam_scopes_by() {
        let body = br#"{"Name":"ha-orchestrator/c1","SecretString":"hunter2","Tags":[{"Key":"k","Value":"v"}]}"#;
        let scope = request_scope("secretsmanager", "POST", "/", None, body);
        assert_eq!(
            scope,
            json!({"Name": "ha-orchestrator/c1", "Tags": [{"Key": "k", "Value": "v"}]})
        );
        let transaction = br#"{"TransactItems":[{"Put":{"TableName":"t","Item":{}}},{"ConditionCheck":{"TableName":"u"}}]}"#;
        let scope = request_scope("dynamodb", "POST", "/", None, transaction);
        assert_eq!(
            scope,
            json!({"TransactItems": [{"Put": "t"}, {"ConditionCheck": "u"}]})
        );
        let batch = br#"{"RequestItems":{"t":[{"DeleteRequest":{}}]}}"#;
        let scope = request_scope("dynamodb", "POST", "/", None, batch);
        assert_eq!(scope, json!({"RequestItems": ["t"]}));
    }

    #[test]
    fn query_scope_keeps_named_parameters_and_drops_user_data() {
        let body = b"Action=RunInstances&Version=2016-11-15&SubnetId=subnet-1&ImageId=ami-1\
&UserData=c2VjcmV0&LaunchTemplate.LaunchTemplateId=lt-1&TagSpecification.1.ResourceType=instance\
&TagSpecification.1.Tag.1.Key=ha-orchestrator%3Acluster&TagSpecification.1.Tag.1.Value=c+1\
&Filter.1.Name=x&InstanceId.1=i-1";
        let scope = request_scope("ec2", "POST", "/", None, body);
        assert_eq!(
            scope,
            json!({"SubnetId": "subnet-1", "ImageId": "ami-1", "LaunchTemplate.LaunchTemplateId": "lt-1",
                   "TagSpecification.1.ResourceType": "instance",
                   "TagSpecification.1.Tag.1.Key": "ha-orchestrator:cluster",
                   "TagSpecification.1.Tag.1.Value": "c 1", "InstanceId.1": "i-1"})
        );
    }

    #[test]
    fn cbor_documents_read_as_json() {
        // {"AlarmNames": ["a", "b"], "n": -2, "ok": true} with an indefinite-length array.
        let mut bytes = vec![0xa3, 0x6a];
        bytes.extend(b"AlarmNames");
        bytes.extend([
            0x9f, 0x61, b'a', 0x61, b'b', 0xff, 0x61, b'n', 0x21, 0x62, b'o', b'k', 0xf5,
        ]);
        assert_eq!(
            cbor_to_json(&bytes),
            Some(json!({"AlarmNames": ["a", "b"], "n": -2, "ok": true}))
        );
        let scope = request_scope("monitoring", "POST", "/", None, &bytes);
        assert_eq!(scope, json!({"AlarmNames": ["a", "b"]}));
        assert_eq!(cbor_to_json(&[0xa1, 0x61]), None, "truncated");
        assert_eq!(half_to_f64(0x3c00), 1.0);
    }
}
