//! What the orchestration itself costs on AWS at list prices (us-east-1, on-demand, x86_64,
//! as published in 2025): Lambda requests and GB-seconds, Step Functions Standard state
//! transitions, DynamoDB on-demand request units, HTTP API requests, S3 requests for command
//! output (DELETE is free), Secrets Manager and CloudWatch API requests. EC2, ELBv2 and SSM Run Command API
//! calls and EventBridge delivery of AWS service events are free. The instances, the ALB and
//! the volumes are the workload, not the orchestration, and are not counted.

use serde::Serialize;

use crate::logs::Activity;

pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
pub const LAMBDA_PER_GB_SECOND: f64 = 0.000_016_666_7;
pub const STEP_FUNCTIONS_PER_TRANSITION: f64 = 0.025 / 1e3;
pub const DYNAMODB_PER_WRITE_UNIT: f64 = 0.625 / 1e6;
pub const DYNAMODB_PER_READ_UNIT: f64 = 0.125 / 1e6;
pub const HTTP_API_PER_REQUEST: f64 = 1.00 / 1e6;
pub const S3_PER_PUT: f64 = 0.005 / 1e3;
pub const S3_PER_GET: f64 = 0.0004 / 1e3;
pub const SECRETS_MANAGER_PER_CALL: f64 = 0.05 / 1e4;
pub const CLOUDWATCH_PER_REQUEST: f64 = 0.01 / 1e3;
/// Every function's `MemorySize` in template.yaml (Globals).
pub const FUNCTION_MEMORY_GB: f64 = 256.0 / 1024.0;

/// DynamoDB request units, estimated from the calls: one unit per item read or written
/// (the orchestrator's items are well under 1 KB; a Query or Scan page is counted as one
/// read unit), two per item in a transaction.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct DynamoUnits {
    pub read_units: u64,
    pub write_units: u64,
}

pub fn dynamodb_units(activity: &Activity) -> DynamoUnits {
    let mut units = DynamoUnits::default();
    for call in activity.calls.iter().filter(|c| c.service == "dynamodb") {
        let items = call.items.max(1);
        let per_item = if call.operation.starts_with("Transact") {
            2
        } else {
            1
        };
        if call.is_read() {
            units.read_units += items * per_item;
        } else {
            units.write_units += items * per_item;
        }
    }
    units
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Bill {
    pub lambda_usd: f64,
    pub step_functions_usd: f64,
    pub dynamodb_usd: f64,
    pub api_gateway_usd: f64,
    pub s3_usd: f64,
    pub secrets_manager_usd: f64,
    pub cloudwatch_usd: f64,
    pub total_usd: f64,
}

/// The bill of one operation: its function activity, its state transitions and the HTTP
/// API requests that started it.
pub fn bill(activity: &Activity, transitions: u64, api_requests: u64) -> Bill {
    let gb_seconds: f64 = activity
        .invocations
        .iter()
        .map(|i| i.duration_ms.ceil() / 1000.0 * FUNCTION_MEMORY_GB)
        .sum();
    let units = dynamodb_units(activity);
    let count = |service: &str, read: Option<bool>| {
        activity
            .calls
            .iter()
            .filter(|c| {
                (c.service == service || c.key() == service)
                    && read.is_none_or(|r| c.is_read() == r)
            })
            .count() as f64
    };
    let mut bill = Bill {
        lambda_usd: activity.invocations.len() as f64 * LAMBDA_PER_REQUEST
            + gb_seconds * LAMBDA_PER_GB_SECOND,
        step_functions_usd: transitions as f64 * STEP_FUNCTIONS_PER_TRANSITION,
        dynamodb_usd: units.read_units as f64 * DYNAMODB_PER_READ_UNIT
            + units.write_units as f64 * DYNAMODB_PER_WRITE_UNIT,
        api_gateway_usd: api_requests as f64 * HTTP_API_PER_REQUEST,
        // S3 DELETE requests are free; PUT, POST and LIST are priced alike.
        s3_usd: count("s3", Some(true)) * S3_PER_GET
            + (count("s3", Some(false)) - count("s3:DELETE", None)) * S3_PER_PUT,
        secrets_manager_usd: count("secretsmanager", None) * SECRETS_MANAGER_PER_CALL,
        cloudwatch_usd: count("monitoring", None) * CLOUDWATCH_PER_REQUEST,
        total_usd: 0.0,
    };
    bill.total_usd = bill.lambda_usd
        + bill.step_functions_usd
        + bill.dynamodb_usd
        + bill.api_gateway_usd
        + bill.s3_usd
        + bill.secrets_manager_usd
        + bill.cloudwatch_usd;
    bill
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{AwsCall, Invocation};

    fn call(service: &str, operation: &str, items: u64) -> AwsCall {
        AwsCall {
            function: "F".into(),
            service: service.into(),
            operation: operation.into(),
            at_ms: 0,
            elapsed_ms: 1.0,
            status: "200".into(),
            items,
        }
    }

    #[test]
    fn units_and_prices_add_up() {
        let activity = Activity {
            calls: vec![
                call("dynamodb", "GetItem", 1),
                call("dynamodb", "Query", 1),
                call("dynamodb", "TransactWriteItems", 3),
                call("dynamodb", "UpdateItem", 1),
                call("ec2", "RunInstances", 0),
                call("s3", "GET", 0),
                call("s3", "DELETE", 0),
            ],
            invocations: vec![Invocation {
                function: "F".into(),
                duration_ms: 99.2,
            }],
        };
        let units = dynamodb_units(&activity);
        assert_eq!(
            units,
            DynamoUnits {
                read_units: 2,
                write_units: 7
            }
        );
        let bill = bill(&activity, 40, 1);
        let lambda = LAMBDA_PER_REQUEST + 0.1 * FUNCTION_MEMORY_GB * LAMBDA_PER_GB_SECOND;
        assert!((bill.lambda_usd - lambda).abs() < 1e-12);
        assert!((bill.step_functions_usd - 0.001).abs() < 1e-12);
        assert!((bill.s3_usd - S3_PER_GET).abs() < 1e-15, "a DELETE is free");
        let expected = lambda + 0.001 + 2.0 * 1.25e-7 + 7.0 * 6.25e-7 + 1e-6 + S3_PER_GET;
        assert!((bill.total_usd - expected).abs() < 1e-12);
    }
}
