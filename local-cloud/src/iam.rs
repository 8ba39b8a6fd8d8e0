//! IAM coverage: every AWS request a function made, proven allowed by its execution role.
//!
//! fakecloud enforces IAM itself for DynamoDB, DynamoDB Streams, S3, Lambda, IAM, STS, KMS,
//! SNS, SQS and EventBridge Scheduler (`iam_enforceable()` in fakecloud 0.51.0's service
//! crates); the harness runs it with `--iam soft` and fails a test on every denial it
//! audits, but for the few that are fakecloud's own mistakes ([`ACCEPTED_FAKECLOUD_DENIALS`],
//! each with its reason). It does not enforce at all for EC2, ELBv2, SSM,
//! Step Functions, Secrets Manager or CloudWatch: those requests would pass whatever the
//! role says. This module closes that gap for every service alike. Each function logs one
//! `aws call` line per request with the parameters IAM authorises by
//! (target `orchestrator::metering`, field `scope`); [`authorizations`] turns each into the IAM
//! actions and resources AWS authorises it as (the Service Authorization Reference, cited
//! per rule below), and [`evaluate`] checks them against the role's policies as the
//! deployed stack holds them (the SAM-transformed template's role, read back from IAM).
//!
//! What it cannot decide it lists instead of passing silently: a Condition on a key whose
//! value the request does not show (`ec2:ResourceTag/...`, `ec2:Owner`), and a resource the
//! request does not name (a task token's state machine). Those come out as
//! [`Verdict::AllowedIf`] with the reason; a request no statement can allow is
//! [`Verdict::Denied`] and fails the check.
//!
//! The evaluation follows the IAM policy evaluation logic for identity policies within one
//! account: an explicit Deny wins, else an Allow whose Action, Resource and Condition all
//! match allows, else the request is implicitly denied. Action names match without regard
//! to case, resources with regard to it, `*` and `?` as wildcards in both.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("policy {policy}: {message}")]
    Policy { policy: String, message: String },
}

/// One statement of an identity policy.
#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: String,
    pub allow: bool,
    /// `Action` (false) or `NotAction` (true), with its patterns.
    pub not_action: bool,
    pub actions: Vec<String>,
    pub not_resource: bool,
    pub resources: Vec<String>,
    pub conditions: Vec<Condition>,
}

/// One `operator: {key: values}` entry of a Condition block.
#[derive(Debug, Clone)]
pub struct Condition {
    pub operator: String,
    pub key: String,
    pub values: Vec<String>,
}

/// A policy document's statements, named `<policy>/<Sid or index>` in reports.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub name: String,
    pub statements: Vec<Statement>,
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

impl Policy {
    /// Parse a policy document (JSON, as IAM stores it).
    pub fn parse(name: &str, document: &Value) -> Result<Self, IamError> {
        let error = |message: String| IamError::Policy {
            policy: name.to_string(),
            message,
        };
        let statements = match &document["Statement"] {
            Value::Array(list) => list.clone(),
            object @ Value::Object(_) => vec![object.clone()],
            other => return Err(error(format!("no Statement list: {other}"))),
        };
        let mut parsed = Vec::new();
        for (index, s) in statements.iter().enumerate() {
            let allow = match s["Effect"].as_str() {
                Some("Allow") => true,
                Some("Deny") => false,
                other => return Err(error(format!("statement {index}: Effect {other:?}"))),
            };
            let (not_action, actions) = match (s.get("Action"), s.get("NotAction")) {
                (Some(a), None) => (false, strings(a)),
                (None, Some(a)) => (true, strings(a)),
                _ => {
                    return Err(error(format!(
                        "statement {index}: exactly one of Action and NotAction"
                    )));
                }
            };
            let (not_resource, resources) = match (s.get("Resource"), s.get("NotResource")) {
                (Some(r), None) => (false, strings(r)),
                (None, Some(r)) => (true, strings(r)),
                _ => {
                    return Err(error(format!(
                        "statement {index}: exactly one of Resource and NotResource"
                    )));
                }
            };
            let mut conditions = Vec::new();
            if let Some(Value::Object(block)) = s.get("Condition") {
                for (operator, entries) in block {
                    let Value::Object(entries) = entries else {
                        return Err(error(format!("statement {index}: Condition {operator}")));
                    };
                    for (key, values) in entries {
                        conditions.push(Condition {
                            operator: operator.clone(),
                            key: key.clone(),
                            values: strings(values),
                        });
                    }
                }
            }
            parsed.push(Statement {
                sid: s["Sid"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("#{index}")),
                allow,
                not_action,
                actions,
                not_resource,
                resources,
                conditions,
            });
        }
        Ok(Self {
            name: name.to_string(),
            statements: parsed,
        })
    }
}

/// What the request tells about each condition key. Keys are compared without regard to
/// case, as IAM does. A key not named here is *unknown*: AWS may set it, we cannot tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Context {
    /// Keys present in the request, with their values.
    pub known: BTreeMap<String, Vec<String>>,
    /// Keys known to be absent from the request (a ListObjectsV2 without `prefix` has no
    /// `s3:prefix`; a request without tags has no `aws:RequestTag/*`).
    pub absent: BTreeSet<String>,
    /// Key prefixes known to be complete in `known` (`aws:requesttag/` when the request
    /// shows every tag it sends): any other key under them is absent.
    pub complete_prefixes: BTreeSet<String>,
}

impl Context {
    pub fn set(&mut self, key: &str, values: Vec<String>) -> &mut Self {
        self.known.insert(key.to_ascii_lowercase(), values);
        self
    }

    pub fn absent(&mut self, key: &str) -> &mut Self {
        self.absent.insert(key.to_ascii_lowercase());
        self
    }

    pub fn complete(&mut self, prefix: &str) -> &mut Self {
        self.complete_prefixes.insert(prefix.to_ascii_lowercase());
        self
    }

    fn lookup(&self, key: &str) -> Lookup<'_> {
        let key = key.to_ascii_lowercase();
        if let Some(values) = self.known.get(&key) {
            return Lookup::Present(values);
        }
        if self.absent.contains(&key) || self.complete_prefixes.iter().any(|p| key.starts_with(p)) {
            return Lookup::Absent;
        }
        Lookup::Unknown
    }
}

enum Lookup<'a> {
    Present(&'a [String]),
    Absent,
    Unknown,
}

/// Three-valued truth: what the request shows may not decide a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown,
}

/// One authorisation AWS makes for a request: an IAM action on a resource, in a context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authorization {
    pub action: String,
    /// The resource's ARN, or `None` when the request does not name it (then only a
    /// statement for `*` decides, and anything narrower is listed as unresolved).
    pub resource: Option<String>,
    pub context: Context,
    /// Why this authorisation is made, when it is not the operation's own action (an
    /// implicit CreateTags, the ListBucket behind a 404...).
    pub note: Option<String>,
}

impl Authorization {
    fn new(action: &str, resource: impl Into<String>) -> Self {
        Self {
            action: action.to_string(),
            resource: Some(resource.into()),
            context: Context::default(),
            note: None,
        }
    }

    fn unnamed(action: &str, why: &str) -> Self {
        Self {
            action: action.to_string(),
            resource: None,
            context: Context::default(),
            note: Some(why.to_string()),
        }
    }

    fn with_note(mut self, note: &str) -> Self {
        self.note = Some(note.to_string());
        self
    }

    fn with_context(mut self, context: Context) -> Self {
        self.context = context;
        self
    }
}

/// The outcome of one authorisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// An Allow statement (named) matches and no Deny does.
    Allowed { by: String },
    /// Allowed only if what the request does not show is as the statements need: each
    /// entry names a statement and what it depends on. Listed, never silently passed.
    AllowedIf { unresolved: Vec<String> },
    /// No statement allows it (or an explicit Deny, named, matches).
    Denied { reason: String },
}

impl Verdict {
    pub fn is_denied(&self) -> bool {
        matches!(self, Verdict::Denied { .. })
    }
}

/// `*` (any run, also empty) and `?` (one character) glob matching.
pub fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if ignore_case {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (p, t) = (fold(pattern), fold(text));
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// ARN matching as IAM does it for ArnLike/ArnEquals: the six colon-separated parts match
/// one by one (so `*` in the region part does not swallow the account).
fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a, false))
}

fn condition_truth(condition: &Condition, context: &Context) -> Truth {
    let mut operator = condition.operator.as_str();
    let mut set_operator = None;
    for prefix in ["ForAnyValue:", "ForAllValues:"] {
        if let Some(rest) = operator.strip_prefix(prefix) {
            set_operator = Some(prefix);
            operator = rest;
        }
    }
    let (operator, if_exists) = match operator.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (operator, false),
    };
    let values = match context.lookup(&condition.key) {
        Lookup::Unknown => return Truth::Unknown,
        Lookup::Absent => {
            // An absent key: Null asks exactly that; IfExists and ForAllValues hold
            // vacuously; a negated operator holds (nothing equals); the rest fail.
            return match operator {
                "Null" => truth(condition.values.iter().any(|v| v == "true")),
                _ if if_exists || set_operator == Some("ForAllValues:") => Truth::True,
                o if o.contains("Not") => Truth::True,
                _ => Truth::False,
            };
        }
        Lookup::Present(values) => values,
    };
    let single = |value: &str| -> Option<bool> {
        let any = |f: &dyn Fn(&str) -> bool| condition.values.iter().any(|p| f(p));
        Some(match operator {
            "StringEquals" => any(&|p| p == value),
            "StringNotEquals" => !any(&|p| p == value),
            "StringEqualsIgnoreCase" => any(&|p| p.eq_ignore_ascii_case(value)),
            "StringNotEqualsIgnoreCase" => !any(&|p| p.eq_ignore_ascii_case(value)),
            "StringLike" => any(&|p| glob(p, value, false)),
            "StringNotLike" => !any(&|p| glob(p, value, false)),
            // IAM: ArnEquals and ArnLike behave the same, wildcards included.
            "ArnLike" | "ArnEquals" => any(&|p| arn_like(p, value)),
            "ArnNotLike" | "ArnNotEquals" => !any(&|p| arn_like(p, value)),
            "Bool" => any(&|p| p.eq_ignore_ascii_case(value)),
            "Null" => any(&|p| p == "false"),
            _ => return None,
        })
    };
    let mut results = Vec::new();
    for value in values {
        match single(value) {
            Some(r) => results.push(r),
            None => return Truth::Unknown,
        }
    }
    truth(match set_operator {
        Some("ForAllValues:") => results.iter().all(|r| *r),
        _ => results.iter().any(|r| *r),
    })
}

fn truth(b: bool) -> Truth {
    if b { Truth::True } else { Truth::False }
}

/// Whether a statement applies to an authorisation, and if undecided, on what.
fn statement_applies(statement: &Statement, auth: &Authorization) -> (Truth, Vec<String>) {
    let action_listed = statement
        .actions
        .iter()
        .any(|p| glob(p, &auth.action, true));
    if action_listed == statement.not_action {
        return (Truth::False, Vec::new());
    }
    let mut unresolved = Vec::new();
    let resource = match &auth.resource {
        Some(arn) => {
            let listed = statement.resources.iter().any(|p| glob(p, arn, false));
            truth(listed != statement.not_resource)
        }
        None => {
            if !statement.not_resource && statement.resources.iter().any(|p| p == "*") {
                Truth::True
            } else {
                unresolved.push(format!(
                    "the request does not name the resource ({}); the statement covers {:?}",
                    auth.note.as_deref().unwrap_or("not resolved"),
                    statement.resources
                ));
                Truth::Unknown
            }
        }
    };
    if resource == Truth::False {
        return (Truth::False, Vec::new());
    }
    let mut all = resource;
    for condition in &statement.conditions {
        match condition_truth(condition, &auth.context) {
            Truth::False => return (Truth::False, Vec::new()),
            Truth::Unknown => {
                all = Truth::Unknown;
                unresolved.push(format!(
                    "{} {} {:?}: not evaluable from the request",
                    condition.operator, condition.key, condition.values
                ));
            }
            Truth::True => {}
        }
    }
    (all, unresolved)
}

/// Evaluate one authorisation against a role's policies.
pub fn evaluate(policies: &[Policy], auth: &Authorization) -> Verdict {
    let mut allowed_by = None;
    let mut maybe = Vec::new();
    for policy in policies {
        for statement in &policy.statements {
            let name = format!("{}/{}", policy.name, statement.sid);
            let (applies, unresolved) = statement_applies(statement, auth);
            match (statement.allow, applies) {
                (false, Truth::True) => {
                    return Verdict::Denied {
                        reason: format!("explicitly denied by {name}"),
                    };
                }
                (false, Truth::Unknown) => {
                    maybe.push(format!("Deny {name} may apply: {}", unresolved.join("; ")))
                }
                (true, Truth::True) => {
                    allowed_by.get_or_insert(name);
                }
                (true, Truth::Unknown) => {
                    maybe.push(format!("Allow {name} if: {}", unresolved.join("; ")))
                }
                (_, Truth::False) => {}
            }
        }
    }
    let deny_pending = maybe.iter().any(|m| m.starts_with("Deny"));
    match allowed_by {
        Some(by) if !deny_pending => Verdict::Allowed { by },
        Some(by) => Verdict::AllowedIf {
            unresolved: std::iter::once(format!("allowed by {by}"))
                .chain(maybe)
                .collect(),
        },
        None if maybe.iter().any(|m| m.starts_with("Allow")) => {
            Verdict::AllowedIf { unresolved: maybe }
        }
        None => Verdict::Denied {
            reason: "no statement of the role allows it".into(),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Requests -> authorisations.

/// One AWS request a function made, as its metering line tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub status: String,
    /// The request's `scope` (see `orchestrator::aws::metering::request_scope`).
    pub scope: Value,
}

/// Read an `aws call` line (JSON, as the functions log it); `None` for any other line.
pub fn parse_call(line: &str) -> Option<Call> {
    if !line.contains("\"aws call\"") {
        return None;
    }
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = &value["fields"];
    if fields["message"] != "aws call" {
        return None;
    }
    let text = |name: &str| fields[name].as_str().unwrap_or_default().to_string();
    Some(Call {
        service: text("service"),
        operation: text("operation"),
        status: text("status"),
        scope: fields["scope"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null),
    })
}

/// Where the resources live: the partition, region and account of the stack.
#[derive(Debug, Clone)]
pub struct Place {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl Place {
    fn arn(&self, service: &str, rest: &str) -> String {
        format!(
            "arn:{}:{service}:{}:{}:{rest}",
            self.partition, self.region, self.account
        )
    }
}

fn text_of<'a>(scope: &'a Value, key: &str) -> Option<&'a str> {
    scope.get(key).and_then(Value::as_str)
}

fn list_of(scope: &Value, key: &str) -> Vec<String> {
    scope.get(key).map(strings).unwrap_or_default()
}

/// Query-protocol members `Prefix.N[.Suffix]` in order of N.
fn numbered(scope: &Value, prefix: &str, suffix: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = scope
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
            let (n, tail) = rest.split_once('.').unwrap_or((rest, ""));
            (tail == suffix).then_some(())?;
            Some((n.parse().ok()?, v.as_str()?.to_string()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v)| v).collect()
}

/// Tags a request sends, as `aws:RequestTag/<key>` values and `aws:TagKeys`: every key is
/// then known, so any other `aws:RequestTag/*` is absent.
fn request_tags(tags: &[(String, String)]) -> Context {
    let mut context = Context::default();
    for (k, v) in tags {
        context.set(&format!("aws:RequestTag/{k}"), vec![v.clone()]);
    }
    context.set("aws:TagKeys", tags.iter().map(|(k, _)| k.clone()).collect());
    context.complete("aws:RequestTag/");
    context
}

/// `[{"Key": k, "Value": v}]` (JSON/CBOR services).
fn json_tags(scope: &Value) -> Vec<(String, String)> {
    scope["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["Key"].as_str()?.to_string(),
                t["Value"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// Query-protocol tags under `prefix` (`Tags.member` for ELBv2, `TagSpecification.1.Tag`).
fn query_tags(scope: &Value, prefix: &str) -> Vec<(String, String)> {
    numbered(scope, prefix, "Key")
        .into_iter()
        .zip(numbered(scope, prefix, "Value"))
        .collect()
}

/// The IAM authorisations AWS makes for one request; `Err` names a request this module
/// does not know how to authorise (which fails the check: unproven is not allowed).
pub fn authorizations(call: &Call, place: &Place) -> Result<Vec<Authorization>, String> {
    let s = &call.scope;
    let op = call.operation.as_str();
    let unmapped = || {
        Err(format!(
            "{}:{op} is not mapped to IAM actions (local_cloud::iam::authorizations)",
            call.service
        ))
    };
    Ok(match call.service.as_str() {
        "dynamodb" => {
            let table = |name: &str| place.arn("dynamodb", &format!("table/{name}"));
            match op {
                // Service Authorization Reference, DynamoDB: a transaction is authorised
                // as the item action of each entry; there is no TransactWriteItems action.
                "TransactWriteItems" | "TransactGetItems" => s["TransactItems"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.as_object()?.iter().next())
                    .map(|(kind, t)| {
                        let action = match kind.as_str() {
                            "Put" => "PutItem",
                            "Update" => "UpdateItem",
                            "Delete" => "DeleteItem",
                            "ConditionCheck" => "ConditionCheckItem",
                            _ => "GetItem",
                        };
                        Authorization::new(
                            &format!("dynamodb:{action}"),
                            table(t.as_str().unwrap_or_default()),
                        )
                        .with_note(&format!("{kind} entry of {op}"))
                    })
                    .collect(),
                // Batches are their own actions, on every table they name.
                "BatchWriteItem" | "BatchGetItem" => list_of(s, "RequestItems")
                    .iter()
                    .map(|t| Authorization::new(&format!("dynamodb:{op}"), table(t)))
                    .collect(),
                _ => {
                    let Some(name) = text_of(s, "TableName") else {
                        return unmapped();
                    };
                    let arn = match text_of(s, "IndexName") {
                        Some(index) => format!("{}/index/{index}", table(name)),
                        None => table(name),
                    };
                    vec![Authorization::new(&format!("dynamodb:{op}"), arn)]
                }
            }
        }
        "s3" => {
            let bucket = text_of(s, "bucket").unwrap_or_default();
            let key = text_of(s, "key").unwrap_or_default();
            let query = &s["query"];
            let method = text_of(s, "method").unwrap_or(op);
            let bucket_arn = format!("arn:{}:s3:::{bucket}", place.partition);
            let object_arn = format!("{bucket_arn}/{key}");
            match (method, key.is_empty()) {
                ("GET" | "HEAD", false) => {
                    let mut out = vec![Authorization::new("s3:GetObject", object_arn)];
                    if call.status == "404" {
                        // S3 GetObject API reference, Permissions: "If you have the
                        // s3:ListBucket permission on the bucket, Amazon S3 returns 404 Not
                        // Found; without it, 403 Access Denied". That check is made in the
                        // GetObject request's context, which has no s3:prefix: whether a
                        // ListBucket statement conditioned on s3:prefix counts is not
                        // documented, so it is left unknown (listed).
                        out.push(
                            Authorization::new("s3:ListBucket", bucket_arn).with_note(
                                "answered 404: AWS answers 403 instead unless the caller may s3:ListBucket",
                            ),
                        );
                    }
                    out
                }
                ("GET", true)
                    if query.as_object().is_none_or(|q| {
                        q.keys().all(|k| LIST_PARAMETERS.contains(&k.as_str()))
                    }) =>
                {
                    // ListObjects(V2) is authorised as s3:ListBucket, with s3:prefix,
                    // s3:delimiter and s3:max-keys from the query when given.
                    let mut context = Context::default();
                    for (param, key) in [
                        ("prefix", "s3:prefix"),
                        ("delimiter", "s3:delimiter"),
                        ("max-keys", "s3:max-keys"),
                    ] {
                        match query.get(param).and_then(Value::as_str) {
                            Some(v) => context.set(key, vec![v.to_string()]),
                            None => context.absent(key),
                        };
                    }
                    vec![Authorization::new("s3:ListBucket", bucket_arn).with_context(context)]
                }
                ("PUT", false) => vec![Authorization::new("s3:PutObject", object_arn)],
                ("DELETE", false) => vec![Authorization::new("s3:DeleteObject", object_arn)],
                ("POST", true) if query.get("delete").is_some() => vec![Authorization::unnamed(
                    "s3:DeleteObject",
                    "DeleteObjects names its keys in the XML body",
                )],
                _ => return unmapped(),
            }
        }
        "ec2" => match op {
            o if o.starts_with("Describe") => vec![Authorization::new(&format!("ec2:{o}"), "*")],
            "RunInstances" => run_instances(s, place),
            "TerminateInstances" | "StopInstances" | "StartInstances" | "RebootInstances" => {
                numbered(s, "InstanceId", "")
                    .iter()
                    .map(|id| {
                        Authorization::new(
                            &format!("ec2:{op}"),
                            place.arn("ec2", &format!("instance/{id}")),
                        )
                    })
                    .collect()
            }
            _ => return unmapped(),
        },
        "elasticloadbalancing" => {
            let action = format!("elasticloadbalancing:{op}");
            match op {
                o if o.starts_with("Describe") => vec![Authorization::new(&action, "*")],
                "CreateTargetGroup" => {
                    let name = text_of(s, "Name").unwrap_or_default();
                    // The ARN's id is minted by the call; this placeholder stands for it.
                    let arn = place.arn(
                        "elasticloadbalancing",
                        &format!("targetgroup/{name}/0000000000000000"),
                    );
                    let tags = query_tags(s, "Tags.member");
                    let mut out =
                        vec![Authorization::new(&action, &arn).with_context(request_tags(&tags))];
                    if !tags.is_empty() {
                        // ELBv2: tagging on create also needs elasticloadbalancing:AddTags.
                        out.push(
                            Authorization::new("elasticloadbalancing:AddTags", arn)
                                .with_context(request_tags(&tags))
                                .with_note("tags on create"),
                        );
                    }
                    out
                }
                "ModifyTargetGroupAttributes"
                | "RegisterTargets"
                | "DeregisterTargets"
                | "DeleteTargetGroup"
                | "ModifyTargetGroup" => {
                    let arn = text_of(s, "TargetGroupArn").unwrap_or_default();
                    vec![Authorization::new(&action, arn)]
                }
                "CreateRule" => {
                    let arn = text_of(s, "ListenerArn").unwrap_or_default();
                    let tags = query_tags(s, "Tags.member");
                    let mut out =
                        vec![Authorization::new(&action, arn).with_context(request_tags(&tags))];
                    if !tags.is_empty() {
                        out.push(Authorization::unnamed(
                            "elasticloadbalancing:AddTags",
                            "tags on create of a rule whose ARN is minted by the call",
                        ));
                    }
                    out
                }
                "DeleteRule" | "ModifyRule" => {
                    vec![Authorization::new(
                        &action,
                        text_of(s, "RuleArn").unwrap_or_default(),
                    )]
                }
                "SetRulePriorities" => numbered(s, "RulePriorities.member", "RuleArn")
                    .iter()
                    .map(|arn| Authorization::new(&action, arn))
                    .collect(),
                "AddTags" | "RemoveTags" => {
                    let tags = query_tags(s, "Tags.member");
                    numbered(s, "ResourceArns.member", "")
                        .iter()
                        .map(|arn| {
                            Authorization::new(&action, arn).with_context(request_tags(&tags))
                        })
                        .collect()
                }
                _ => return unmapped(),
            }
        }
        "ssm" => {
            let action = format!("ssm:{op}");
            match op {
                "GetParameter" | "GetParameters" | "PutParameter" | "DeleteParameter" => {
                    let names: Vec<String> = text_of(s, "Name")
                        .map(|n| vec![n.to_string()])
                        .unwrap_or_else(|| list_of(s, "Names"));
                    names
                        .iter()
                        .map(|n| {
                            let rest = if n.starts_with('/') {
                                format!("parameter{n}")
                            } else {
                                format!("parameter/{n}")
                            };
                            // AWS's public parameters (`/aws/service/...`) belong to no
                            // account: GetParameter answers their ARN with an empty
                            // account field. The caller's own parameters carry its account.
                            let arn = if n.starts_with("/aws/service/") {
                                format!("arn:{}:ssm:{}::{rest}", place.partition, place.region)
                            } else {
                                place.arn("ssm", &rest)
                            };
                            Authorization::new(&action, arn)
                        })
                        .collect()
                }
                "SendCommand" => {
                    let document = text_of(s, "DocumentName").unwrap_or_default();
                    let document_arn = if document.starts_with("arn:") {
                        document.to_string()
                    } else if document.starts_with("AWS-") {
                        format!(
                            "arn:{}:ssm:{}::document/{document}",
                            place.partition, place.region
                        )
                    } else {
                        place.arn("ssm", &format!("document/{document}"))
                    };
                    let mut out = vec![Authorization::new(&action, document_arn)];
                    for id in list_of(s, "InstanceIds") {
                        out.push(Authorization::new(
                            &action,
                            place.arn("ec2", &format!("instance/{id}")),
                        ));
                    }
                    if s.get("InstanceIds").is_none() {
                        out.push(Authorization::unnamed(
                            &action,
                            "SendCommand by Targets: the instances are chosen by the service",
                        ));
                    }
                    out
                }
                "GetCommandInvocation"
                | "ListCommandInvocations"
                | "ListCommands"
                | "DescribeInstanceInformation"
                | "CancelCommand" => {
                    vec![Authorization::new(&action, "*")]
                }
                _ => return unmapped(),
            }
        }
        "states" => {
            let action = format!("states:{op}");
            match op {
                "StartExecution"
                | "StartSyncExecution"
                | "DescribeStateMachine"
                | "ListExecutions" => vec![Authorization::new(
                    &action,
                    text_of(s, "stateMachineArn").unwrap_or_default(),
                )],
                "DescribeExecution" | "StopExecution" | "GetExecutionHistory" => {
                    vec![Authorization::new(
                        &action,
                        text_of(s, "executionArn").unwrap_or_default(),
                    )]
                }
                "SendTaskSuccess" | "SendTaskFailure" | "SendTaskHeartbeat" => {
                    vec![Authorization::unnamed(
                        &action,
                        "a task token does not show which state machine it belongs to",
                    )]
                }
                _ => return unmapped(),
            }
        }
        "secretsmanager" => {
            let action = format!("secretsmanager:{op}");
            // A secret's ARN ends in `-` and six random characters; this placeholder
            // stands for them when the request names the secret by name.
            let secret = |id: &str| {
                if id.starts_with("arn:") {
                    id.to_string()
                } else {
                    place.arn("secretsmanager", &format!("secret:{id}-XXXXXX"))
                }
            };
            match op {
                "GetRandomPassword" => vec![Authorization::new(&action, "*")],
                "CreateSecret" => {
                    let arn = secret(text_of(s, "Name").unwrap_or_default());
                    let tags = json_tags(s);
                    let mut out =
                        vec![Authorization::new(&action, &arn).with_context(request_tags(&tags))];
                    if !tags.is_empty() {
                        // Secrets Manager: CreateSecret with Tags also needs TagResource.
                        out.push(
                            Authorization::new("secretsmanager:TagResource", arn)
                                .with_context(request_tags(&tags))
                                .with_note("tags on create"),
                        );
                    }
                    out
                }
                _ => match text_of(s, "SecretId") {
                    Some(id) => {
                        let tags = json_tags(s);
                        vec![Authorization::new(&action, secret(id)).with_context(
                            if op == "TagResource" {
                                request_tags(&tags)
                            } else {
                                Context::default()
                            },
                        )]
                    }
                    None => return unmapped(),
                },
            }
        }
        "monitoring" => {
            let action = format!("cloudwatch:{op}");
            let alarm = |name: &str| place.arn("cloudwatch", &format!("alarm:{name}"));
            match op {
                "GetMetricData" | "GetMetricStatistics" | "ListMetrics" | "PutMetricData" => {
                    vec![Authorization::new(&action, "*")]
                }
                "PutMetricAlarm" => {
                    let arn = alarm(text_of(s, "AlarmName").unwrap_or_default());
                    let tags = json_tags(s);
                    let mut out =
                        vec![Authorization::new(&action, &arn).with_context(request_tags(&tags))];
                    if !tags.is_empty() {
                        // CloudWatch PutMetricAlarm: "If you are using tags, you must also
                        // have cloudwatch:TagResource".
                        out.push(
                            Authorization::new("cloudwatch:TagResource", arn)
                                .with_context(request_tags(&tags))
                                .with_note("tags on create"),
                        );
                    }
                    out
                }
                "DeleteAlarms"
                | "DescribeAlarms"
                | "EnableAlarmActions"
                | "DisableAlarmActions" => {
                    let names = list_of(s, "AlarmNames");
                    if names.is_empty() {
                        // A query by prefix or state names no alarm; AWS's denials of one
                        // name the account's `alarm:*` as the resource (e.g. "not authorized
                        // to perform: cloudwatch:DescribeAlarms on resource:
                        // arn:aws:cloudwatch:<region>:<account>:alarm:*",
                        // aws-samples/amazon-cloudwatch-auto-alarms#1). An assumption for
                        // the other actions, which CloudWatch refuses without names anyway.
                        vec![Authorization::new(&action, alarm("*"))]
                    } else {
                        names
                            .iter()
                            .map(|n| Authorization::new(&action, alarm(n)))
                            .collect()
                    }
                }
                "TagResource" => vec![
                    Authorization::new(&action, text_of(s, "ResourceARN").unwrap_or_default())
                        .with_context(request_tags(&json_tags(s))),
                ],
                _ => return unmapped(),
            }
        }
        _ => return unmapped(),
    })
}

/// Query parameters of a ListObjects(V2) request (anything else on a bucket GET is a
/// bucket sub-resource with its own action).
const LIST_PARAMETERS: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "marker",
    "x-id",
];

/// RunInstances: EC2 authorises it on every resource it creates or uses (Service
/// Authorization Reference, EC2, RunInstances): the instance and its volume and network
/// interface, the subnet, the launch template and the image; the security groups come from
/// the launch template here and are not in the request. Tags on create also need
/// ec2:CreateTags with `ec2:CreateAction` = RunInstances.
fn run_instances(s: &Value, place: &Place) -> Vec<Authorization> {
    let action = "ec2:RunInstances";
    let mut tags_by_type: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for n in 1..=10 {
        let Some(kind) = text_of(s, &format!("TagSpecification.{n}.ResourceType")) else {
            continue;
        };
        tags_by_type.insert(
            kind.to_string(),
            query_tags(s, &format!("TagSpecification.{n}.Tag")),
        );
    }
    let tags_for = |kind: &str| request_tags(tags_by_type.get(kind).map_or(&[][..], |t| t));
    let mut out = Vec::new();
    for kind in ["instance", "volume"] {
        out.push(
            Authorization::new(action, place.arn("ec2", &format!("{kind}/*")))
                .with_context(tags_for(kind)),
        );
    }
    let subnet = text_of(s, "SubnetId").map(|id| place.arn("ec2", &format!("subnet/{id}")));
    let mut interface = Context::default();
    match &subnet {
        Some(arn) => interface.set("ec2:Subnet", vec![arn.clone()]),
        None => &mut interface,
    };
    out.push(
        Authorization::new(action, place.arn("ec2", "network-interface/*")).with_context(interface),
    );
    if let Some(arn) = subnet {
        out.push(Authorization::new(action, arn));
    }
    if let Some(id) = text_of(s, "LaunchTemplate.LaunchTemplateId") {
        out.push(Authorization::new(
            action,
            place.arn("ec2", &format!("launch-template/{id}")),
        ));
    }
    if let Some(id) = text_of(s, "ImageId") {
        out.push(Authorization::new(
            action,
            format!("arn:{}:ec2:{}::image/{id}", place.partition, place.region),
        ));
    }
    out.push(Authorization::unnamed(
        action,
        "security groups come from the launch template, not the request",
    ));
    for (kind, tags) in &tags_by_type {
        let mut context = request_tags(tags);
        context.set("ec2:CreateAction", vec!["RunInstances".into()]);
        out.push(
            Authorization::new("ec2:CreateTags", place.arn("ec2", &format!("{kind}/*")))
                .with_context(context)
                .with_note("tags on launch"),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// The coverage report.

/// One distinct authorisation a function needed, how often, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub operation: String,
    pub action: String,
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub calls: usize,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Per function: what it called and whether its role allows each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FunctionReport {
    pub role: String,
    pub checked: Vec<Checked>,
    /// Requests that could not be mapped to IAM actions (these fail the check).
    pub unmapped: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub functions: BTreeMap<String, FunctionReport>,
    /// fakecloud's own audited denials (`fakecloud::iam::audit` lines in its log); these
    /// fail the check.
    pub fakecloud_denials: Vec<String>,
    /// Audited denials that are fakecloud's mistakes ([`ACCEPTED_FAKECLOUD_DENIALS`]), with
    /// the reason each is accepted.
    pub accepted_fakecloud_denials: Vec<String>,
}

impl Report {
    /// Add one function's calls, checked against its role.
    pub fn add(
        &mut self,
        function: &str,
        role: &str,
        policies: &[Policy],
        calls: &[Call],
        place: &Place,
    ) {
        let report = self.functions.entry(function.to_string()).or_default();
        report.role = role.to_string();
        for call in calls {
            match authorizations(call, place) {
                Err(why) => {
                    if !report.unmapped.contains(&why) {
                        report.unmapped.push(why);
                    }
                }
                Ok(auths) => {
                    for auth in auths {
                        let operation = format!("{}:{}", call.service, call.operation);
                        if let Some(seen) = report.checked.iter_mut().find(|c| {
                            c.operation == operation
                                && c.action == auth.action
                                && c.resource == auth.resource
                                && c.note == auth.note
                        }) {
                            seen.calls += 1;
                            continue;
                        }
                        let verdict = evaluate(policies, &auth);
                        report.checked.push(Checked {
                            operation,
                            action: auth.action,
                            resource: auth.resource,
                            note: auth.note,
                            calls: 1,
                            verdict,
                        });
                    }
                }
            }
        }
        report
            .checked
            .sort_by(|a, b| (&a.action, &a.resource).cmp(&(&b.action, &b.resource)));
    }

    /// Every failure, one line each: function, action, resource and why.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (function, report) in &self.functions {
            for c in &report.checked {
                if let Verdict::Denied { reason } = &c.verdict {
                    out.push(format!(
                        "{function}: {} on {} ({}{}): {reason}",
                        c.action,
                        c.resource.as_deref().unwrap_or("(unnamed)"),
                        c.operation,
                        c.note
                            .as_deref()
                            .map(|n| format!(", {n}"))
                            .unwrap_or_default()
                    ));
                }
            }
            for u in &report.unmapped {
                out.push(format!("{function}: {u}"));
            }
        }
        out.extend(
            self.fakecloud_denials
                .iter()
                .map(|d| format!("fakecloud denied: {d}")),
        );
        out
    }

    /// What was allowed only under conditions or resources the requests do not show, one
    /// line per function, action and reason (with how many resources and one of them).
    pub fn unresolved(&self) -> Vec<String> {
        let mut grouped: BTreeMap<(String, String, String), (usize, String)> = BTreeMap::new();
        for (function, report) in &self.functions {
            for c in &report.checked {
                if let Verdict::AllowedIf { unresolved } = &c.verdict {
                    let entry = grouped
                        .entry((function.clone(), c.action.clone(), unresolved.join("; ")))
                        .or_insert((0, c.resource.clone().unwrap_or_else(|| "(unnamed)".into())));
                    entry.0 += 1;
                }
            }
        }
        grouped
            .into_iter()
            .map(|((function, action, why), (count, example))| {
                let on = if count == 1 {
                    example
                } else {
                    format!("{count} resources like {example}")
                };
                format!("{function}: {action} on {on}: {why}")
            })
            .collect()
    }
}

/// fakecloud's audited denials that are its own mistakes, not the stack's, with why. Only
/// these are accepted; every other audited denial fails the check.
///
/// fakecloud 0.51.0's S3 names the IAM action after the REST operation for these
/// (`s3_detect_action`, fakecloud-s3 service/mod.rs), where AWS authorises a different
/// action; the coverage check evaluates the action AWS uses for the same request instead.
pub const ACCEPTED_FAKECLOUD_DENIALS: &[(&str, &str)] = &[
    (
        "s3:ListObjectsV2",
        "not an IAM action: AWS authorises ListObjectsV2 as s3:ListBucket (S3 API reference, ListObjectsV2, Permissions), which the coverage check evaluates with its s3:prefix",
    ),
    (
        "s3:ListObjects",
        "not an IAM action: AWS authorises ListObjects as s3:ListBucket, which the coverage check evaluates",
    ),
    (
        "s3:HeadObject",
        "not an IAM action: AWS authorises HeadObject as s3:GetObject (S3 API reference, HeadObject, Permissions), which the coverage check evaluates",
    ),
];

/// Why an audited denial of an unsigned ("anonymous") request does not fail the check.
pub const ANONYMOUS_IS_NO_FUNCTION: &str = "an unsigned request, which no function sends (each signs with its role's session); a test client's, such as the fuzz suite's requests fakecloud routes to S3";

/// The `action=` field of an audit line.
fn audited_action(line: &str) -> Option<&str> {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("action="))
}

/// Split audited denials into those that fail the check and the accepted ones (with why).
pub fn triage_denials(denials: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut failing = Vec::new();
    let mut accepted = Vec::new();
    for line in denials {
        // An unsigned request is no function's: every function signs with its role's
        // session (the runner refuses to start one without), so such a line comes from a
        // test client, e.g. the fuzz suite's unsigned requests that fakecloud routes to S3.
        if line.contains("anonymous request") {
            accepted.push(format!("{line} -- accepted: {ANONYMOUS_IS_NO_FUNCTION}"));
            continue;
        }
        match ACCEPTED_FAKECLOUD_DENIALS
            .iter()
            .find(|(action, _)| audited_action(&line) == Some(*action))
        {
            Some((_, why)) => accepted.push(format!("{line} -- accepted: {why}")),
            None => failing.push(line),
        }
    }
    (failing, accepted)
}

/// fakecloud's audited IAM denials in its log (tracing target `fakecloud::iam::audit`),
/// without terminal colour codes.
pub fn fakecloud_denials(log: &str) -> Vec<String> {
    let plain = |line: &str| {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    log.lines()
        .map(plain)
        .filter(|l| l.contains("fakecloud::iam::audit"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn place() -> Place {
        Place {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
        }
    }

    fn policy(statements: Value) -> Vec<Policy> {
        vec![
            Policy::parse(
                "p",
                &json!({"Version": "2012-10-17", "Statement": statements}),
            )
            .unwrap(),
        ]
    }

    fn call(service: &str, operation: &str, status: &str, scope: Value) -> Call {
        Call {
            service: service.into(),
            operation: operation.into(),
            status: status.into(),
            scope,
        }
    }

    fn verdicts(policies: &[Policy], call: &Call) -> Vec<(String, Verdict)> {
        authorizations(call, &place())
            .unwrap()
            .into_iter()
            .map(|a| (a.action.clone(), evaluate(policies, &a)))
            .collect()
    }

    const TABLE: &str = "arn:aws:dynamodb:us-east-1:123456789012:table/Clusters";

    #[test]
    fn wildcards_in_actions_and_resources() {
        let p = policy(json!([{"Effect": "Allow", "Action": "dynamodb:Get*",
                                "Resource": "arn:aws:dynamodb:*:*:table/Clu?ters"}]));
        let get = Authorization::new("dynamodb:GetItem", TABLE);
        assert!(matches!(evaluate(&p, &get), Verdict::Allowed { .. }));
        let case = Authorization::new("DynamoDB:getitem", TABLE);
        assert!(
            matches!(evaluate(&p, &case), Verdict::Allowed { .. }),
            "actions ignore case"
        );
        let put = Authorization::new("dynamodb:PutItem", TABLE);
        assert!(evaluate(&p, &put).is_denied());
        let other = Authorization::new("dynamodb:GetItem", format!("{TABLE}x"));
        assert!(evaluate(&p, &other).is_denied());
        let upper = Authorization::new("dynamodb:GetItem", TABLE.replace("Clusters", "CLUSTERS"));
        assert!(evaluate(&p, &upper).is_denied(), "resources keep case");
    }

    #[test]
    fn not_action_and_deny_precedence() {
        let p = policy(json!([
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
            {"Sid": "NoDeletes", "Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": TABLE}
        ]));
        assert!(matches!(
            evaluate(&p, &Authorization::new("dynamodb:PutItem", TABLE)),
            Verdict::Allowed { .. }
        ));
        assert!(evaluate(&p, &Authorization::new("iam:PassRole", "*")).is_denied());
        assert_eq!(
            evaluate(&p, &Authorization::new("dynamodb:DeleteItem", TABLE)),
            Verdict::Denied {
                reason: "explicitly denied by p/NoDeletes".into()
            }
        );
    }

    #[test]
    fn conditions_are_evaluated_when_the_request_shows_the_key_and_listed_when_not() {
        let p = policy(
            json!([{"Sid": "Tagged", "Effect": "Allow", "Action": "ec2:TerminateInstances",
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {"Null": {"ec2:ResourceTag/ha-orchestrator:cluster": "false"}}}]),
        );
        let terminate = call(
            "ec2",
            "TerminateInstances",
            "200",
            json!({"InstanceId.1": "i-1"}),
        );
        let got = verdicts(&p, &terminate);
        assert_eq!(got.len(), 1);
        let Verdict::AllowedIf { unresolved } = &got[0].1 else {
            panic!("{got:?}")
        };
        assert!(
            unresolved[0].contains("ec2:ResourceTag/ha-orchestrator:cluster"),
            "{unresolved:?}"
        );

        let tags = json!([{"Effect": "Allow", "Action": "secretsmanager:*",
            "Resource": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ha-orchestrator/*",
            "Condition": {"Null": {"aws:RequestTag/ha-orchestrator:cluster": "false"}}}]);
        let tagged = call(
            "secretsmanager",
            "CreateSecret",
            "200",
            json!({"Name": "ha-orchestrator/c1", "Tags": [{"Key": "ha-orchestrator:cluster", "Value": "c1"}]}),
        );
        for (action, v) in verdicts(&policy(tags.clone()), &tagged) {
            assert!(matches!(v, Verdict::Allowed { .. }), "{action}: {v:?}");
        }
        let untagged = call(
            "secretsmanager",
            "CreateSecret",
            "200",
            json!({"Name": "ha-orchestrator/c1"}),
        );
        let got = verdicts(&policy(tags), &untagged);
        assert_eq!(got.len(), 1, "no TagResource without tags");
        assert!(
            got[0].1.is_denied(),
            "a missing request tag is known absent: {got:?}"
        );
    }

    #[test]
    fn string_like_on_s3_prefix_and_if_exists() {
        let p = policy(
            json!([{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
            "Condition": {"StringLike": {"s3:prefix": "commands/*"}}}]),
        );
        let list = |prefix: Option<&str>| {
            let mut query = json!({"list-type": "2"});
            if let Some(p) = prefix {
                query["prefix"] = json!(p);
            }
            call(
                "s3",
                "GET",
                "200",
                json!({"method": "GET", "bucket": "b", "key": "", "query": query}),
            )
        };
        assert!(matches!(
            verdicts(&p, &list(Some("commands/c1/")))[0].1,
            Verdict::Allowed { .. }
        ));
        assert!(verdicts(&p, &list(Some("other/")))[0].1.is_denied());
        assert!(
            verdicts(&p, &list(None))[0].1.is_denied(),
            "no prefix: the key is absent"
        );
        let if_exists = policy(
            json!([{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*",
            "Condition": {"StringLikeIfExists": {"s3:prefix": "commands/*"}}}]),
        );
        assert!(matches!(
            verdicts(&if_exists, &list(None))[0].1,
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn arn_conditions_match_part_by_part() {
        assert!(arn_like(
            "arn:aws:ec2:*:*:subnet/subnet-1",
            "arn:aws:ec2:us-east-1:1:subnet/subnet-1"
        ));
        assert!(!arn_like(
            "arn:aws:ec2:*:*:subnet/subnet-1",
            "arn:aws:ec2:us-east-1:1:subnet/subnet-2"
        ));
        assert!(glob("a*b?d", "aXXbcd", false));
        assert!(!glob("a*b?d", "aXXbd", false));
        assert!(glob("*", "", false));
    }

    /// The provision role before issue 13: store::purge's BatchWriteItem was not granted
    /// (IAM authorises it as its own action, not as DeleteItem).
    #[test]
    fn catches_batch_write_missing_from_the_provision_role() {
        let records = |actions: Value| {
            policy(
                json!([{"Sid": "ClusterRecords", "Effect": "Allow", "Action": actions,
                "Resource": [TABLE, format!("{TABLE}/index/*")]}]),
            )
        };
        let before = records(json!([
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
            "dynamodb:ConditionCheckItem"
        ]));
        let purge = call(
            "dynamodb",
            "BatchWriteItem",
            "200",
            json!({"RequestItems": ["Clusters"]}),
        );
        let got = verdicts(&before, &purge);
        assert_eq!(got[0].0, "dynamodb:BatchWriteItem");
        assert!(got[0].1.is_denied(), "{got:?}");
        let after = records(json!(["dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]));
        assert!(matches!(
            verdicts(&after, &purge)[0].1,
            Verdict::Allowed { .. }
        ));
    }

    /// Transactions need the per-item actions; `dynamodb:TransactWriteItems` grants nothing.
    #[test]
    fn transactions_are_authorised_per_item() {
        let p = policy(json!([{"Effect": "Allow",
            "Action": ["dynamodb:TransactWriteItems", "dynamodb:PutItem"], "Resource": TABLE}]));
        let transaction = call(
            "dynamodb",
            "TransactWriteItems",
            "200",
            json!({"TransactItems": [{"Put": "Clusters"}, {"ConditionCheck": "Clusters"}]}),
        );
        let got = verdicts(&p, &transaction);
        assert_eq!(got[0].0, "dynamodb:PutItem");
        assert!(matches!(got[0].1, Verdict::Allowed { .. }));
        assert_eq!(got[1].0, "dynamodb:ConditionCheckItem");
        assert!(got[1].1.is_denied());
    }

    /// The replication role before issue 13: GetObject only, so reading an absent stream
    /// (the agent uploads none for empty output) answers 403 on AWS, not 404.
    #[test]
    fn catches_get_object_of_an_absent_key_without_list_bucket() {
        let read = json!({"Sid": "ReadCommandOutput", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::out/commands/*"});
        let absent = call(
            "s3",
            "GET",
            "404",
            json!({"method": "GET", "bucket": "out", "key": "commands/c/i/stderr", "query": {"x-id": "GetObject"}}),
        );
        let got = verdicts(&policy(json!([read.clone()])), &absent);
        assert!(matches!(got[0].1, Verdict::Allowed { .. }));
        assert_eq!(got[1].0, "s3:ListBucket");
        assert!(got[1].1.is_denied(), "{got:?}");
        // With ListBucket on the bucket it is allowed; scoped by s3:prefix it is listed,
        // since the GetObject request carries no prefix.
        let list =
            json!({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::out"});
        let got = verdicts(&policy(json!([read.clone(), list])), &absent);
        assert!(matches!(got[1].1, Verdict::Allowed { .. }));
        let scoped = json!({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::out",
            "Condition": {"StringLike": {"s3:prefix": "commands/*"}}});
        let got = verdicts(&policy(json!([read.clone(), scoped])), &absent);
        assert!(matches!(got[1].1, Verdict::AllowedIf { .. }), "{got:?}");
        // A found object needs no ListBucket.
        let found = call(
            "s3",
            "GET",
            "200",
            json!({"method": "GET", "bucket": "out", "key": "commands/c/i/stdout", "query": {}}),
        );
        assert_eq!(verdicts(&policy(json!([read])), &found).len(), 1);
    }

    #[test]
    fn run_instances_checks_every_resource_and_tagging_on_launch() {
        let scope = json!({"SubnetId": "subnet-1", "ImageId": "ami-1", "LaunchTemplate.LaunchTemplateId": "lt-1",
            "TagSpecification.1.ResourceType": "instance", "TagSpecification.1.Tag.1.Key": "ha-orchestrator:cluster",
            "TagSpecification.1.Tag.1.Value": "c1"});
        let auths = authorizations(&call("ec2", "RunInstances", "200", scope), &place()).unwrap();
        let named: Vec<String> = auths
            .iter()
            .map(|a| format!("{} {}", a.action, a.resource.as_deref().unwrap_or("-")))
            .collect();
        assert_eq!(
            named,
            [
                "ec2:RunInstances arn:aws:ec2:us-east-1:123456789012:instance/*",
                "ec2:RunInstances arn:aws:ec2:us-east-1:123456789012:volume/*",
                "ec2:RunInstances arn:aws:ec2:us-east-1:123456789012:network-interface/*",
                "ec2:RunInstances arn:aws:ec2:us-east-1:123456789012:subnet/subnet-1",
                "ec2:RunInstances arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1",
                "ec2:RunInstances arn:aws:ec2:us-east-1::image/ami-1",
                "ec2:RunInstances -",
                "ec2:CreateTags arn:aws:ec2:us-east-1:123456789012:instance/*",
            ]
        );
        let p = policy(
            json!([{"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}}]),
        );
        assert!(matches!(evaluate(&p, &auths[7]), Verdict::Allowed { .. }));
        // The network interface's subnet is known from the request.
        let p = policy(
            json!([{"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "*",
            "Condition": {"ArnEquals": {"ec2:Subnet": "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-2"}}}]),
        );
        assert!(evaluate(&p, &auths[2]).is_denied());
    }

    #[test]
    fn unnamed_resources_need_a_star_statement_or_are_listed() {
        let send = call("states", "SendTaskSuccess", "200", json!({}));
        let star =
            policy(json!([{"Effect": "Allow", "Action": "states:SendTask*", "Resource": "*"}]));
        assert!(matches!(
            verdicts(&star, &send)[0].1,
            Verdict::Allowed { .. }
        ));
        let scoped = policy(
            json!([{"Effect": "Allow", "Action": "states:SendTaskSuccess",
            "Resource": "arn:aws:states:us-east-1:123456789012:stateMachine:x"}]),
        );
        assert!(matches!(
            verdicts(&scoped, &send)[0].1,
            Verdict::AllowedIf { .. }
        ));
        let none = policy(
            json!([{"Effect": "Allow", "Action": "states:StartExecution", "Resource": "*"}]),
        );
        assert!(verdicts(&none, &send)[0].1.is_denied());
    }

    #[test]
    fn unknown_requests_fail_the_report() {
        let mut report = Report::default();
        let calls = [
            call("lambda", "Invoke", "200", json!({})),
            call("ssm", "GetParameter", "200", json!({"Name": "/x"})),
        ];
        report.add("F", "role", &policy(json!([{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "arn:aws:ssm:us-east-1::parameter/x"}])), &calls, &place());
        let failures = report.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0]
                .contains("ssm:GetParameter on arn:aws:ssm:us-east-1:123456789012:parameter/x")
        );
        assert!(failures[1].contains("lambda:Invoke is not mapped"));
    }

    #[test]
    fn reads_metering_lines_and_fakecloud_audit_lines() {
        let line = r#"{"level":"DEBUG","fields":{"message":"aws call","service":"ssm","operation":"GetParameter","status":"200","scope":"{\"Name\":\"/ami\"}"},"target":"orchestrator::metering"}"#;
        let got = parse_call(line).unwrap();
        assert_eq!(got.scope, json!({"Name": "/ami"}));
        assert_eq!(parse_call(r#"{"fields":{"message":"launched"}}"#), None);
        let log = "\u{1b}[33m WARN\u{1b}[0m \u{1b}[2mfakecloud::iam::audit\u{1b}[0m: IAM policy evaluation denied request action=s3:GetObject\nINFO other";
        assert_eq!(
            fakecloud_denials(log),
            [
                " WARN fakecloud::iam::audit: IAM policy evaluation denied request action=s3:GetObject"
            ]
        );
        let (failing, accepted) = triage_denials(vec![
            "WARN fakecloud::iam::audit: IAM policy evaluation denied request service=s3 action=s3:ListObjectsV2 resource=arn:aws:s3:::b".into(),
            "WARN fakecloud::iam::audit: IAM policy evaluation denied request service=s3 action=s3:ListObjectsV2x resource=arn:aws:s3:::b".into(),
            "WARN fakecloud::iam::audit: IAM policy evaluation denied request service=dynamodb action=dynamodb:BatchWriteItem".into(),
            "WARN fakecloud::iam::audit: anonymous request to iam_enforceable service has no IamAction mapping; denying under strict, allowing under soft service=s3 action= mode=soft".into(),
        ]);
        assert_eq!(accepted.len(), 2, "{accepted:?}");
        assert!(accepted[1].contains("unsigned request"), "{accepted:?}");
        assert!(accepted[0].contains("s3:ListBucket"));
        assert_eq!(failing.len(), 2, "{failing:?}");
    }
}
